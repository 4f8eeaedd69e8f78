"""The whole data path on real services: replay feed -> producer -> broker -> consumer ->
PostgreSQL -> aggregator on a Spark standalone cluster, judged against Binance's own klines."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psycopg2.extensions
import pytest
from pyspark.sql import SparkSession

from candlestack.aggregator.jobs import Aggregator
from candlestack.core import db
from tests.harness.pipeline import OffsetWatch, candle_table, candles, scalar, stored_ids, stored_quote_volumes
from tests.harness.reference import agg_trades, binance_klines, candles_from_trades, quote_volumes
from tests.harness.services import (
    AGG_TRADES_CSV,
    Component,
    Postgres,
    Replay,
    free_port,
    start_component,
    start_replay,
    tansu_broker,
    wait_for,
)
from tests.harness.settings import aggregator_settings

pytestmark = pytest.mark.slow

CSV_IDS = [t.agg_id for t in agg_trades()]


def producer_env(pipeline_env: dict[str, str], replay: Replay) -> dict[str, str]:
    return {**pipeline_env, "CANDLESTACK_SYMBOLS": "xrpeth", "CANDLESTACK_STREAM": "aggTrade",
            "CANDLESTACK_BINANCE_WS_URL": replay.ws_url, "CANDLESTACK_BINANCE_REST_URL": replay.rest_url}


def run_feed(replay_args: list[str], pipeline_env: dict[str, str], conn: psycopg2.extensions.connection,
             logdir: Path, *, during: object = None, consumer: Component | None = None) -> tuple[Component, Component]:
    """Replay the file through a fresh producer into the (given or new) consumer until all is stored."""
    replay = start_replay(["--csv", str(AGG_TRADES_CSV), *replay_args], logdir)
    consumer = consumer or start_component("consumer", ["consumer"], pipeline_env, logdir)
    producer = start_component("producer", ["producer"], producer_env(pipeline_env, replay), logdir)
    try:
        if callable(during):
            during(replay, consumer)
        wait_for(lambda: replay.status()["done"], timeout=120, what="replay to finish")
        assert replay.published_ids("XRPETH") == CSV_IDS
        watch = OffsetWatch.of(pipeline_env)
        try:
            # Offsets are committed once rows are durable: every message of the topic is handled.
            wait_for(lambda: watch.caught_up(len(CSV_IDS)), timeout=120,
                     what=f"offsets committed up to the end of the topic (replay log: {replay.component.log_path})")
        finally:
            watch.close()
        assert scalar(conn, "SELECT count(*) FROM trades") == len(CSV_IDS)
    finally:
        assert producer.stop() == 0, producer.log()
        replay.component.stop()
    return producer, consumer


def test_reference_replay_through_the_pipeline_equals_binance_klines(
    pg: Postgres, database: str, pipeline_env: dict[str, str], conn: psycopg2.extensions.connection,
    spark: SparkSession, logdir: Path,
) -> None:
    _producer, consumer = run_feed(["--rate", "4000"], pipeline_env, conn, logdir)
    # The same file again, through a new producer: every trade arrives twice, nothing changes.
    run_feed(["--rate", "4000", "--duplicate-every", "5"], pipeline_env, conn, logdir, consumer=consumer)
    time.sleep(1)
    assert consumer.stop() == 0, consumer.log()
    assert stored_ids(conn) == CSV_IDS
    assert scalar(conn, "SELECT count(*) FROM dead_letters") == 0

    settings = aggregator_settings(pg, database, spark.sparkContext.master)
    work = db.connect(settings.postgres)
    try:
        aggregator = Aggregator(settings, spark, work)
        trades = agg_trades()
        start, end = trades[0].time_ms, trades[-1].time_ms + 1
        aggregator.backfill(start, end)
        assert candles(conn, "1m") == binance_klines()
        assert len(candles(conn, "1m")) == 3560
        assert scalar(conn, "SELECT count(*) FROM candles WHERE NOT complete") == 0
        assert candles(conn, "5m") == candles_from_trades(trades, 300_000)
        for timeframe, step in (("1m", 60_000), ("5m", 300_000)):
            assert stored_quote_volumes(conn, timeframe) == quote_volumes(trades, step)
        before = candle_table(conn)
        assert aggregator.backfill(start, end).candles_changed == 0
        with conn.cursor() as cur:
            cur.execute("TRUNCATE candles")
        aggregator.backfill(start, end)
        assert candle_table(conn) == before
    finally:
        work.close()


def test_feed_disconnects_malformed_and_duplicate_frames_lose_and_double_nothing(
    pipeline_env: dict[str, str], conn: psycopg2.extensions.connection, logdir: Path,
) -> None:
    producer, consumer = run_feed(["--rate", "2500", "--disconnect-every", "1", "--malformed-every", "97",
                                   "--duplicate-every", "13"], pipeline_env, conn, logdir)
    consumer.stop()
    assert stored_ids(conn) == CSV_IDS
    log = producer.log()
    assert "connection lost; reconnecting" in log
    assert "filled gap" in log or "caught up after reconnect" in log
    assert "malformed frame skipped" in log


def test_server_shutdown_event_leads_to_a_clean_reconnect(
    pipeline_env: dict[str, str], conn: psycopg2.extensions.connection, logdir: Path,
) -> None:
    producer, consumer = run_feed(["--rate", "2500", "--shutdown-after", "1.5"], pipeline_env, conn, logdir)
    consumer.stop()
    assert stored_ids(conn) == CSV_IDS
    assert "server announced shutdown" in producer.log()


def test_consumer_killed_mid_batch_then_restarted_stores_everything_once(
    pipeline_env: dict[str, str], conn: psycopg2.extensions.connection, logdir: Path,
) -> None:
    restarted: list[Component] = []
    watch = OffsetWatch.of(pipeline_env)

    def kill_and_restart(_replay: Replay, consumer: Component) -> None:
        wait_for(lambda: watch.committed() > 2000, timeout=60, what="ingest start")
        end_before = watch.end()
        consumer.stop(signal.SIGKILL)
        assert consumer.proc.returncode == -signal.SIGKILL
        # The kill landed while messages already in the topic were not committed yet: the
        # restarted consumer must read them again.
        committed_at_kill = watch.committed()
        assert committed_at_kill < end_before, (committed_at_kill, end_before)
        restarted.append(start_component("consumer", ["consumer"], pipeline_env, logdir))

    try:
        run_feed(["--rate", "2000"], pipeline_env, conn, logdir, during=kill_and_restart)
    finally:
        watch.close()
        for component in restarted:
            assert component.stop() == 0, component.log()
    assert stored_ids(conn) == CSV_IDS


def test_postgres_restart_during_ingest_loses_nothing(
    pg: Postgres, pipeline_env: dict[str, str], conn: psycopg2.extensions.connection, logdir: Path,
) -> None:
    def restart_database(replay: Replay, _consumer: Component) -> None:
        # A quarter of the file in, the feed waits; once the consumer has stored what came so far
        # (its connection open and idle), PostgreSQL restarts. The rest of the file must then be
        # written over a connection the restart broke, however fast or slow the consumer was.
        wait_for(lambda: int(replay.status()["published"]) > len(CSV_IDS) // 4, timeout=60, what="ingest start")
        replay.control("pause")
        published = int(replay.status()["published"])
        wait_for(lambda: (scalar(conn, "SELECT count(*) FROM trades") or 0) >= published, timeout=120,
                 what="the consumer to store what was published")
        pg.restart()
        replay.control("resume")

    consumer: Component | None = None
    try:
        _producer, consumer = run_feed(["--rate", "2000"], pipeline_env, _Reconnecting(pg, conn), logdir,  # type: ignore[arg-type]
                                       during=restart_database)
    finally:
        if consumer is not None:
            assert consumer.stop() == 0, consumer.log()
    assert "database write failed; retrying" in consumer.log()
    check = pg.connect(conn.info.dbname)
    try:
        assert stored_ids(check) == CSV_IDS
    finally:
        check.close()


class _Reconnecting:
    """A connection stand-in for polling across a server restart: reconnects on failure."""

    def __init__(self, pg: Postgres, conn: psycopg2.extensions.connection) -> None:
        self._pg = pg
        self._database = conn.info.dbname
        self._conn = conn

    def cursor(self) -> psycopg2.extensions.cursor:
        if self._conn.closed:
            self._conn = self._pg.connect(self._database)
            self._conn.autocommit = True
        try:
            cur = self._conn.cursor()
            cur.execute("SELECT 1")
            return cur
        except psycopg2.Error:
            self._conn = self._pg.connect(self._database)
            self._conn.autocommit = True
            return self._conn.cursor()


def test_producer_holds_trades_while_the_broker_is_down(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection, logdir: Path,
) -> None:
    port = free_port()
    env = {**pg.env(database), "CANDLESTACK_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
           "CANDLESTACK_KAFKA_TOPIC": "trades.broker_down", "CANDLESTACK_KAFKA_GROUP_ID": "broker-down",
           "CANDLESTACK_PRODUCER_BUFFER_MAX_MESSAGES": "2000", "CANDLESTACK_SYMBOLS": "xrpeth"}
    replay = start_replay(["--csv", str(AGG_TRADES_CSV), "--rate", "4000"], logdir)
    producer = start_component("producer", ["producer"], producer_env(env, replay), logdir)
    try:
        # The whole file goes out while no broker exists: the producer must hold, not drop.
        wait_for(lambda: replay.status()["done"], timeout=60, what="replay to finish")
        wait_for(lambda: "local Kafka queue full" in producer.log(), timeout=30, what="backpressure")
        assert producer.proc.poll() is None
        with tansu_broker(port) as broker:
            broker.create_topic("trades.broker_down")
            consumer = start_component("consumer", ["consumer"], env, logdir)
            try:
                wait_for(lambda: scalar(conn, "SELECT count(*) FROM trades") == len(CSV_IDS), timeout=120,
                         what="everything held back to arrive")
            finally:
                assert consumer.stop() == 0, consumer.log()
            assert producer.stop() == 0, producer.log()
    finally:
        producer.stop()
        replay.component.stop()
    assert stored_ids(conn) == CSV_IDS
