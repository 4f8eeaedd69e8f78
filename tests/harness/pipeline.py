"""Helpers shared by the end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Iterable
from decimal import Decimal

import psycopg2.extensions
from confluent_kafka import Consumer, Producer, TopicPartition
from psycopg2.extras import execute_values

from candlestack.core.contract import Trade
from tests.harness.reference import AggTrade


def trade_message(t: AggTrade, symbol: str = "XRPETH") -> Trade:
    return Trade(symbol=symbol, stream="aggTrade", trade_id=t.agg_id, price=t.price, qty=t.qty,
                 trade_time=t.time_ms, event_time=t.time_ms, buyer_is_maker=t.buyer_is_maker,
                 ingest_time=int(time.time() * 1000), first_trade_id=t.first_id, last_trade_id=t.last_id)


def publish(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5})
    count = 0
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
    assert producer.flush(60) == 0
    return count


def scalar(conn: psycopg2.extensions.connection, query: str, params: tuple[object, ...] = ()) -> object:
    with conn.cursor() as cur:
        cur.execute(query, params)
        row = cur.fetchone()
    return row[0] if row else None


def stored_ids(conn: psycopg2.extensions.connection, symbol: str = "XRPETH") -> list[int]:
    with conn.cursor() as cur:
        cur.execute("SELECT trade_id FROM trades WHERE symbol = %s ORDER BY trade_id", (symbol,))
        return [row[0] for row in cur.fetchall()]


def candles(conn: psycopg2.extensions.connection, timeframe: str,
            symbol: str = "XRPETH") -> dict[int, tuple[Decimal, Decimal, Decimal, Decimal, Decimal]]:
    with conn.cursor() as cur:
        cur.execute("SELECT (extract(epoch FROM open_time) * 1000)::bigint, open, high, low, close, volume "
                    "FROM candles WHERE symbol = %s AND timeframe = %s ORDER BY open_time", (symbol, timeframe))
        return {row[0]: tuple(row[1:]) for row in cur.fetchall()}  # type: ignore[misc]


def candle_table(conn: psycopg2.extensions.connection) -> list[tuple[object, ...]]:
    """Every candle column except updated_at, for before/after comparisons."""
    with conn.cursor() as cur:
        cur.execute("SELECT symbol, timeframe, open_time, close_time, open, high, low, close, volume, quote_volume, "
                    "trade_count, first_trade_id, last_trade_id, taker_buy_volume, taker_buy_quote_volume, "
                    "first_raw_trade_id, last_raw_trade_id, price_sum FROM candles ORDER BY 1, 2, 3")
        return list(cur.fetchall())


def insert_trades(conn: psycopg2.extensions.connection, trades: Iterable[AggTrade], symbol: str = "XRPETH") -> None:
    """Store trades the way the consumer would, without Kafka (aggregator tests)."""
    with conn.cursor() as cur:
        cur.execute("SELECT ensure_trade_partitions('2019-10-10', '2019-10-14')")
        execute_values(
            cur,
            "INSERT INTO trades (symbol, trade_id, stream, price, qty, first_trade_id, last_trade_id, trade_time, "
            "event_time, buyer_is_maker, ingest_time) VALUES %s",
            [(symbol, t.agg_id, t.price, t.qty, t.first_id, t.last_id, t.time_ms, t.time_ms, t.buyer_is_maker)
             for t in trades],
            template="(%s, %s, 'aggTrade', %s::numeric, %s::numeric, %s, %s, "
                     "timestamptz 'epoch' + %s * interval '1 millisecond', "
                     "timestamptz 'epoch' + %s * interval '1 millisecond', %s, now())",
            page_size=5000)
        cur.execute("INSERT INTO symbol_state VALUES (%s, 0, 1, now(), now(), 0) ON CONFLICT DO NOTHING", (symbol,))


def stored_quote_volumes(conn: psycopg2.extensions.connection, timeframe: str,
                         symbol: str = "XRPETH") -> dict[int, Decimal]:
    with conn.cursor() as cur:
        cur.execute("SELECT (extract(epoch FROM open_time) * 1000)::bigint, quote_volume FROM candles "
                    "WHERE symbol = %s AND timeframe = %s AND trade_count > 0", (symbol, timeframe))
        return dict(cur.fetchall())


class OffsetWatch:
    """Reads a consumer group's committed offsets and the topic's end, summed over partitions.

    Waiting on these rather than on row counts waits for exactly what the consumer promises:
    offsets move only once the rows are durable. The end comes from the high watermarks of
    fetch responses (this client reads the topic, outside the group): Tansu answers every
    ListOffsets "latest" with 1, so get_watermark_offsets(cached=False) cannot be trusted.
    """

    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        self._client = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                                 "fetch.wait.max.ms": 10})
        metadata = self._client.list_topics(topic, timeout=10)
        self._partitions = [TopicPartition(topic, p) for p in sorted(metadata.topics[topic].partitions)]
        self._client.assign([TopicPartition(topic, p.partition, 0) for p in self._partitions])

    def committed(self) -> int:
        return sum(max(tp.offset, 0) for tp in self._client.committed(self._partitions, timeout=10))

    def end(self) -> int:
        self._client.consume(100_000, timeout=0.3)  # read (and drop) what is new, for fresh watermarks
        return sum(max(self._client.get_watermark_offsets(tp, cached=True)[1], 0) for tp in self._partitions)

    def caught_up(self, at_least: int) -> bool:
        """Does the topic hold ``at_least`` messages, and is all of it committed?"""
        end = self.end()
        return end >= at_least and self.committed() == end

    @classmethod
    def of(cls, pipeline_env: dict[str, str]) -> OffsetWatch:
        """The watch of the consumer group, topic and broker of a test's pipeline environment."""
        return cls(pipeline_env["CANDLESTACK_KAFKA_BOOTSTRAP_SERVERS"], pipeline_env["CANDLESTACK_KAFKA_TOPIC"],
                   pipeline_env["CANDLESTACK_KAFKA_GROUP_ID"])

    def close(self) -> None:
        self._client.close()


def stored_kline_fields(conn: psycopg2.extensions.connection, timeframe: str,
                        symbol: str = "XRPETH") -> dict[int, tuple[object, ...]]:
    """Per window: the fields of tests.harness.reference.kline_fields, as stored."""
    with conn.cursor() as cur:
        cur.execute("SELECT (extract(epoch FROM open_time) * 1000)::bigint, quote_volume, trade_count, "
                    "taker_buy_volume, taker_buy_quote_volume, first_raw_trade_id, last_raw_trade_id "
                    "FROM candles WHERE symbol = %s AND timeframe = %s", (symbol, timeframe))
        return {row[0]: tuple(row[1:]) for row in cur.fetchall()}
