"""Consumer and aggregator on real services, fed straight from Kafka with the real trades."""

from __future__ import annotations

from pathlib import Path

import psycopg2.extensions
import pytest
from conftest import aggregator_settings
from pipeline import candle_table, candles, publish, scalar, stored_ids, trade_message
from reference import agg_trades, binance_klines, candles_from_trades
from services import Broker, Postgres, SparkCluster, start_component, wait_for

from aggregator.jobs import Aggregator
from aggregator.session import build_session
from candlestack import db

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


def test_aggregator_on_standalone_cluster_matches_binance_klines(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection, spark_cluster: SparkCluster,
) -> None:
    trades = agg_trades()
    _store_directly(conn, trades)
    settings = aggregator_settings(pg, database, spark_cluster.master_url, CANDLESTACK_AGGREGATOR_BACKFILL_CHUNK_HOURS="12")
    spark = build_session(settings)
    work = db.connect(settings.postgres)
    try:
        aggregator = Aggregator(settings, spark, work)
        start, end = trades[0].time_ms, trades[-1].time_ms + 1
        first = aggregator.backfill(start, end)
        assert first.trades == len(trades)
        one_minute = candles(conn, "1m")
        assert len(one_minute) == 3560
        assert one_minute == binance_klines()
        assert candles(conn, "5m") == candles_from_trades(trades, 300_000)
        assert scalar(conn, "SELECT count(*) FROM candles WHERE timeframe = '1m' AND trade_count = 0") == 1091
        # The kline trade count is the raw trades an aggregate trade stands for.
        assert scalar(conn, "SELECT sum(trade_count) FROM candles WHERE timeframe = '1m'") == 14_672

        before = candle_table(conn)
        assert aggregator.backfill(start, end).candles_changed == 0
        conn.cursor().execute("TRUNCATE candles")
        aggregator.backfill(start, end)
        assert candle_table(conn) == before
    finally:
        work.close()
        spark.stop()


def _store_directly(conn: psycopg2.extensions.connection, trades: list) -> None:  # type: ignore[type-arg]
    with conn.cursor() as cur:
        cur.execute("SELECT ensure_trade_partitions('2019-10-11', '2019-10-13')")
        cur.executemany(
            "INSERT INTO trades (symbol, trade_id, stream, price, qty, first_trade_id, last_trade_id, trade_time, "
            "event_time, buyer_is_maker, ingest_time) VALUES ('XRPETH', %s, 'aggTrade', %s, %s, %s, %s, "
            "to_timestamp(%s / 1000.0), to_timestamp(%s / 1000.0), %s, now())",
            [(t.agg_id, t.price, t.qty, t.first_id, t.last_id, t.time_ms, t.time_ms, t.buyer_is_maker) for t in trades])
        cur.execute("INSERT INTO symbol_state VALUES ('XRPETH', 0, 1, now(), now(), 0)")
