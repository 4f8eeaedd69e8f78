"""The consumer on real services, fed straight from Kafka with the real trades."""

from __future__ import annotations

from pathlib import Path

import psycopg2.extensions
import pytest

from pipeline import publish, scalar, stored_ids, trade_message
from reference import agg_trades
from services import Broker, start_component, wait_for

pytestmark = pytest.mark.slow

MALFORMED = [
    (b"XRPETH", b"not json at all"),
    (b"XRPETH", b'{"v": 1, "kind": "trade", "symbol": "XRPETH"}'),
    (b"XRPETH", b'{"v": 2, "kind": "trade"}'),
    (None, None),
]


def test_consumer_stores_each_trade_once_and_sets_aside_bad_messages(
    pipeline_env: dict[str, str], conn: psycopg2.extensions.connection, broker: Broker, topic: str, logdir: Path,
) -> None:
    trades = agg_trades()
    messages = [(m.key, m.to_json()) for m in map(trade_message, trades)]
    # Every trade twice (a producer retry or a replay), with bad messages mixed in.
    published = publish(broker.bootstrap, topic, [*messages[:5000], *MALFORMED, *messages, *messages[3000:]])
    assert published == 5000 + len(MALFORMED) + 2 * len(trades) - 3000
    consumer = start_component("consumer", ["consumer"], pipeline_env, logdir)
    try:
        wait_for(lambda: scalar(conn, "SELECT count(*) FROM dead_letters") == len(MALFORMED)
                 and scalar(conn, "SELECT count(*) FROM trades") == len(trades), timeout=120, what="ingest")
    finally:
        assert consumer.stop() == 0, consumer.log()
    assert stored_ids(conn) == sorted(t.agg_id for t in trades)
    assert scalar(conn, "SELECT trades_stored FROM symbol_state WHERE symbol = 'XRPETH'") == len(trades)
    assert scalar(conn, "SELECT last_trade_id FROM symbol_state WHERE symbol = 'XRPETH'") == trades[-1].agg_id
    reasons = scalar(conn, "SELECT string_agg(field, ',' ORDER BY field) FROM dead_letters")
    assert reasons == "trade_id,v,value,value"
    assert "consumer stopped" in consumer.log()
