"""The consumer on real services, fed straight from Kafka with the real trades."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import psycopg2.extensions
import pytest
from confluent_kafka import Consumer, TopicPartition

from candlestack.consumer.batch import Batch, Record
from candlestack.consumer.store import TradeStore
from tests.harness.pipeline import OffsetWatch, publish, scalar, stored_ids, trade_message
from tests.harness.reference import agg_trades
from tests.harness.services import Broker, Component, Postgres, start_component, wait_for
from tests.harness.settings import postgres_settings

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


def partitions(conn: psycopg2.extensions.connection) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'trades'::regclass ORDER BY 1")
        return [row[0] for row in cur.fetchall()]


def poison_messages() -> dict[str, bytes]:
    """Messages that once stopped all ingestion (the consumer exited and restarted on them forever)."""
    good = json.loads(trade_message(agg_trades()[0]).to_json())

    def variant(**changes: object) -> bytes:
        return json.dumps({**good, **changes}).encode()

    gap = {"v": 1, "kind": "gap", "symbol": "XRPETH", "stream": "aggTrade", "from_id": 1, "to_id": 2,
           "reason": "REST\u0000down", "detected_at": good["ingest_time"]}
    return {
        "bigint overflow": variant(trade_id=2**63),
        "deep nesting": b"[" * 5000 + b"]" * 5000,
        "deep nesting, larger than any message": b"[" * 100_000 + b"]" * 100_000,
        "5000-digit number": b'{"v": 1, "kind": "trade", "trade_id": ' + b"9" * 5000 + b"}",
        "NUL in a symbol": variant(symbol="XRP\u0000ETH"),
        "NUL in a gap reason": json.dumps(gap).encode(),
        "trade in 2099": variant(trade_id=1, trade_time=4_070_908_800_000, event_time=4_070_908_800_000),
        "not UTF-8": b'{"v": 1, "kind": "\xff"}',
        "unconfigured symbol": variant(symbol="BTCUSDT"),
    }


def run_consumer_until_caught_up(pipeline_env: dict[str, str], broker: Broker, topic: str, logdir: Path,
                                 published: int) -> Component:
    """Start a consumer and wait until its committed offsets reach the end of the topic."""
    consumer = start_component("consumer", ["consumer"], pipeline_env, logdir)
    watch = OffsetWatch.of(pipeline_env)
    try:
        wait_for(lambda: watch.caught_up(published) or consumer.proc.poll() is not None,
                 timeout=60, what="offsets committed up to the end of the topic")
    except TimeoutError as exc:
        offsets = f"committed {watch.committed()}, end {watch.end()}, published {published}"
        raise AssertionError(f"{exc}: {offsets}") from None
    finally:
        watch.close()
    assert consumer.proc.poll() is None, consumer.log()
    return consumer


def test_poison_messages_are_set_aside_and_ingestion_goes_on(
    pipeline_env: dict[str, str], conn: psycopg2.extensions.connection, broker: Broker, topic: str, logdir: Path,
) -> None:
    trades = agg_trades()[:3000]
    good = [(m.key, m.to_json()) for m in map(trade_message, trades)]
    poison = poison_messages()
    mixed = list(good)
    for n, payload in enumerate(poison.values()):
        mixed.insert(1 + n * 300, (b"XRPETH", payload))
    published = publish(broker.bootstrap, topic, mixed)
    consumer = run_consumer_until_caught_up(pipeline_env, broker, topic, logdir, published)
    assert consumer.stop() == 0, consumer.log()
    with conn.cursor() as cur:
        cur.execute("SELECT payload, field, reason FROM dead_letters")
        letters = {bytes(payload): (field, reason) for payload, field, reason in cur.fetchall()}
    assert set(letters) == set(poison.values())
    assert all(field and reason for field, reason in letters.values())
    assert letters[poison["bigint overflow"]][0] == "trade_id"
    assert letters[poison["trade in 2099"]][0] == "trade_time"
    assert stored_ids(conn) == sorted(t.agg_id for t in trades)
    assert scalar(conn, "SELECT count(*) FROM trades") == len(trades)
    days = {datetime.fromtimestamp(t.time_ms / 1000, UTC).strftime("trades_%Y%m%d") for t in trades}
    assert partitions(conn) == sorted(days)


def test_a_batch_postgresql_refuses_is_split_and_only_the_bad_message_set_aside(
    pipeline_env: dict[str, str], conn: psycopg2.extensions.connection, broker: Broker, topic: str, logdir: Path,
) -> None:
    trades = agg_trades()[:3000]
    bad = trades[1234].agg_id
    # Passes the contract; only the database knows better.
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE trades ADD CONSTRAINT test_refuses_one CHECK (trade_id <> %s)", (bad,))
    published = publish(broker.bootstrap, topic, [(m.key, m.to_json()) for m in map(trade_message, trades)])
    consumer = run_consumer_until_caught_up(pipeline_env, broker, topic, logdir, published)
    assert consumer.stop() == 0, consumer.log()
    assert stored_ids(conn) == sorted(t.agg_id for t in trades if t.agg_id != bad)
    with conn.cursor() as cur:
        cur.execute("SELECT payload, field, reason FROM dead_letters")
        rows = cur.fetchall()
    assert len(rows) == 1, rows
    payload, field, reason = rows[0]
    assert json.loads(bytes(payload))["trade_id"] == bad and field == "value"
    assert reason.startswith("refused by the database: CheckViolation:") and "test_refuses_one" in reason
    assert consumer.log().count("message refused by the database") == 1
    # The bisected batch's position is stored once its halves are: at the end of the topic.
    assert scalar(conn, "SELECT sum(next_offset) FROM kafka_offsets WHERE topic = %s", (topic,)) == published


def test_a_far_future_trade_creates_its_own_partition_not_every_day_up_to_it(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection,
) -> None:
    now = int(time.time() * 1000)
    today = replace(trade_message(agg_trades()[0]), trade_time=now, event_time=now)
    future = replace(today, trade_id=today.trade_id + 1, trade_time=4_070_908_800_000)
    records = [Record("t", 0, n, None, b"") for n in range(2)]
    store = TradeStore(postgres_settings(pg, database))
    started = time.perf_counter()
    try:
        result = store.write_isolating(Batch(trades=[today, future], trade_records=records))
    finally:
        store.close()
    assert result.inserted == 2 and time.perf_counter() - started < 10
    assert partitions(conn) == [datetime.fromtimestamp(now / 1000, UTC).strftime("trades_%Y%m%d"), "trades_20990101"]


def test_a_consumer_stopped_while_joining_its_group_does_not_strand_the_next_one(
    pipeline_env: dict[str, str], conn: psycopg2.extensions.connection, broker: Broker, topic: str, logdir: Path,
) -> None:
    """A restart in the first seconds (systemd's restart loop, an operator's double restart).

    Tansu 0.6 never finishes the rebalance of a group that a member leaves while it is still
    joining; with a LeaveGroup on close the next consumer waited forever with no partition.
    """
    trades = agg_trades()[:500]
    publish(broker.bootstrap, topic, [(m.key, m.to_json()) for m in map(trade_message, trades)])
    first = start_component("consumer", ["consumer"], pipeline_env, logdir)
    wait_for(lambda: "consumer started" in first.log() or first.proc.poll() is not None, timeout=30,
             what="the first consumer to subscribe")
    time.sleep(0.5)
    assert first.stop() == 0, first.log()
    assert "partitions assigned" not in first.log(), "the first consumer finished joining: nothing was tested"
    second = start_component("consumer", ["consumer"], pipeline_env, logdir)
    try:
        wait_for(lambda: scalar(conn, "SELECT count(*) FROM trades") == len(trades), timeout=60,
                 what="the next consumer to get the partitions and store every trade")
    finally:
        assert second.stop() == 0, second.log()


def test_after_a_restore_the_consumer_re_reads_what_the_database_lost(
    pipeline_env: dict[str, str], conn: psycopg2.extensions.connection, broker: Broker, topic: str, logdir: Path,
) -> None:
    trades = agg_trades()[:4000]
    messages = [(m.key, m.to_json()) for m in map(trade_message, trades)]
    publish(broker.bootstrap, topic, messages[:2500])
    consumer = start_component("consumer", ["consumer"], pipeline_env, logdir)
    try:
        wait_for(lambda: scalar(conn, "SELECT count(*) FROM trades") == 2500, timeout=120, what="the first ingest")
        with conn.cursor() as cur:
            cur.execute("SELECT kafka_partition, next_offset FROM kafka_offsets WHERE topic = %s", (topic,))
            position_at_backup = cur.fetchall()
        assert sum(offset for _partition, offset in position_at_backup) == 2500
        publish(broker.bootstrap, topic, messages[2500:])
        wait_for(lambda: scalar(conn, "SELECT count(*) FROM trades") == len(trades), timeout=120,
                 what="the second ingest")
    finally:
        assert consumer.stop() == 0, consumer.log()
    # What a restore to the first point leaves: its trades and its position; the group's offsets
    # in Kafka stay at the end of the topic.
    with conn.cursor() as cur:
        cur.execute("DELETE FROM trades WHERE trade_id > %s", (trades[2499].agg_id,))
        cur.executemany("UPDATE kafka_offsets SET next_offset = %s WHERE topic = %s AND kafka_partition = %s",
                        [(offset, topic, partition) for partition, offset in position_at_backup])
    consumer = start_component("consumer", ["consumer"], pipeline_env, logdir)
    try:
        wait_for(lambda: scalar(conn, "SELECT count(*) FROM trades") == len(trades), timeout=120,
                 what="the lost trades read again")
    finally:
        assert consumer.stop() == 0, consumer.log()
    assert stored_ids(conn) == sorted(t.agg_id for t in trades)
    assert "a restored database" in consumer.log()
    assert scalar(conn, "SELECT sum(next_offset) FROM kafka_offsets WHERE topic = %s", (topic,)) == len(trades)


def test_a_database_ahead_of_the_group_moves_the_group_to_its_position_at_once(
    pipeline_env: dict[str, str], conn: psycopg2.extensions.connection, broker: Broker, topic: str, logdir: Path,
) -> None:
    """The consumer died between its database commit and its Kafka commit: the group is behind.

    With nothing new to read, only the consumer's commit at assignment moves the group on; else
    it would show lag until the partition's next message.
    """
    trades = agg_trades()[:2000]
    published = publish(broker.bootstrap, topic, [(m.key, m.to_json()) for m in map(trade_message, trades)])
    group = pipeline_env["CANDLESTACK_KAFKA_GROUP_ID"]
    consumer = run_consumer_until_caught_up(pipeline_env, broker, topic, logdir, published)
    assert consumer.stop() == 0, consumer.log()
    # Put the group back, as the consumer's own static member (Tansu refuses commits from outside
    # the group while that member is registered).
    rewinder = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                         "group.instance.id": f"{group}-{socket.gethostname()}", "enable.auto.commit": False,
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    try:
        rewinder.subscribe([topic])

        def assigned() -> list[TopicPartition]:
            rewinder.poll(0.2)
            return list(rewinder.assignment())

        assignment: list[TopicPartition] = wait_for(assigned, timeout=60, what="the rewinder's partitions")
        rewinder.commit(offsets=[TopicPartition(topic, tp.partition, 0) for tp in assignment], asynchronous=False)
    finally:
        rewinder.close()
    watch = OffsetWatch.of(pipeline_env)
    try:
        assert watch.committed() == 0
        consumer = start_component("consumer", ["consumer"], pipeline_env, logdir)
        try:
            wait_for(lambda: watch.committed() == published, timeout=60, what="the group at the database's position")
        finally:
            assert consumer.stop() == 0, consumer.log()
    finally:
        watch.close()
    assert "partition starts apart from the group's offset" in consumer.log()
    assert scalar(conn, "SELECT count(*) FROM trades") == len(trades)
