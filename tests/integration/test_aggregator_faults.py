"""``aggregator run`` against failures and missing input: a failing Spark job, an interrupted
first start, a stale reconcile, retention, and trades missing because we were down."""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import psycopg2.extensions
import pytest
from prometheus_client import REGISTRY
from pyspark.sql import DataFrame, SparkSession

from candlestack import admin
from candlestack.aggregator import compute, sink
from candlestack.aggregator.faults import JobTimeoutError, Recovery, TickError, recovery_for
from candlestack.aggregator.jobs import BACKFILL_CHUNK_RETRIES, Aggregator
from candlestack.core import db
from tests.harness.pipeline import candle_table, candles, insert_trades, scalar
from tests.harness.reference import AggTrade, agg_trades, candles_from_trades
from tests.harness.services import Postgres, wait_for
from tests.harness.settings import aggregator_settings

pytestmark = pytest.mark.slow

T0 = 1570752000000  # 2019-10-11T00:00:00Z, a window start for every interval
MINUTE = 60_000


def make_aggregator(pg: Postgres, database: str, spark: SparkSession, **kwargs: object) -> Aggregator:
    # One trade per backfill job at most: every day that holds trades is a chunk of its own, as
    # the chunk tests below need (the reference data would otherwise be one job).
    settings = aggregator_settings(pg, database, spark.sparkContext.master, CANDLESTACK_AGGREGATOR_TICK_S="0.2",
                                   CANDLESTACK_AGGREGATOR_BACKFILL_CHUNK_TRADES="1")
    return Aggregator(settings, spark, db.connect(settings.postgres), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Undo what ``logs.setup`` (called by the commands) does to the root logger."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def aggregator(pg: Postgres, database: str, spark: SparkSession) -> Iterator[Aggregator]:
    agg = make_aggregator(pg, database, spark)
    yield agg
    agg._conn.close()


def trade(trade_id: int, time_ms: int, price: str = "1.5", qty: str = "2") -> AggTrade:
    return AggTrade(agg_id=trade_id, price=price, qty=qty, first_id=trade_id, last_id=trade_id, time_ms=time_ms,
                    buyer_is_maker=False)


def completeness(conn: psycopg2.extensions.connection, timeframe: str) -> dict[int, tuple[int, bool]]:
    """open ms -> (trade_count, complete)."""
    with conn.cursor() as cur:
        cur.execute("SELECT (extract(epoch FROM open_time) * 1000)::bigint, trade_count, complete FROM candles "
                    "WHERE timeframe = %s ORDER BY open_time", (timeframe,))
        return {row[0]: (row[1], row[2]) for row in cur.fetchall()}


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def watermark(conn: psycopg2.extensions.connection) -> object:
    return scalar(conn, "SELECT watermark_xid::text FROM aggregator_state WHERE name = 'run'")


class RunThread:
    """``Aggregator.run`` in a thread, stopped and joined with a deadline."""

    def __init__(self, aggregator: Aggregator) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=aggregator.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> RunThread:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "run() did not stop within 120 s"


def test_a_failing_spark_read_is_logged_counted_retried_and_the_run_survives(
    pg: Postgres, database: str, spark: SparkSession, conn: psycopg2.extensions.connection,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    rebuilds: list[SparkSession] = []

    def rebuild(old: SparkSession) -> SparkSession:
        rebuilds.append(old)
        return old  # the shared test session stays: what counts here is that run asked for a new one

    aggregator = make_aggregator(pg, database, spark, session_factory=rebuild, retry_initial_s=0.05,
                                 retry_max_s=0.3)
    caplog.set_level(logging.INFO, logger="candlestack.aggregator.jobs")
    trades = agg_trades()[:1500]
    errors_before = sample("candlestack_aggregator_ticks_total", {"outcome": "error"})
    try:
        with RunThread(aggregator) as run:
            wait_for(lambda: watermark(conn) is not None, timeout=60, what="the first watermark")
            # Every JDBC read now fails inside Spark (the table does not exist).
            monkeypatch.setattr(compute, "SOURCE", "(SELECT * FROM no_such_table) AS src")
            insert_trades(conn, trades)
            wait_for(lambda: sample("candlestack_aggregator_consecutive_tick_failures") >= 6, timeout=90,
                     what="six failed ticks in a row")
            assert run.thread.is_alive()
            # Idle ticks before the insert may have moved it, but never past the failed trades.
            first_trade_xid = scalar(conn, "SELECT min(ingest_xid)::text FROM trades")
            assert int(str(watermark(conn))) <= int(str(first_trade_xid))
            assert scalar(conn, "SELECT count(*) FROM candles") == 0
            monkeypatch.undo()
            expected = candles_from_trades(trades, MINUTE)
            wait_for(lambda: candles(conn, "1m") == expected, timeout=90, what="candles after the fault cleared")
            assert sample("candlestack_aggregator_consecutive_tick_failures") == 0
    finally:
        aggregator._conn.close()
    assert sample("candlestack_aggregator_ticks_total", {"outcome": "error"}) - errors_before >= 6
    assert rebuilds, "five failures in a row should have asked for a new Spark session"
    failures = [r for r in caplog.records if r.getMessage() == "tick failed; retrying"]
    assert failures and "XRPETH 2019-10-11T" in failures[0].windows  # type: ignore[attr-defined]
    assert failures[0].exc_info is not None and failures[1].exc_info is None  # one trace per streak
    assert any(r.getMessage() == "recovered" for r in caplog.records)
    assert int(str(watermark(conn))) > int(str(first_trade_xid))


def test_a_spark_job_past_its_timeout_or_at_a_stop_is_cancelled_and_the_session_still_works(
    spark: SparkSession,
) -> None:
    def endless() -> DataFrame:
        """Hours of work; a new frame each time, as each tick builds one (a frame's plan keeps its failure)."""
        return spark.range(0, 10**13, numPartitions=2).selectExpr("sum(id % 7) AS s")

    started = time.monotonic()
    with pytest.raises(JobTimeoutError) as caught:
        compute.collect_within(spark, endless(), 2.0)
    assert recovery_for(caught.value) is Recovery.NEW_SESSION
    assert 1.5 < time.monotonic() - started < 60

    stop = threading.Event()
    threading.Timer(2.0, stop.set).start()  # as SIGTERM would
    started = time.monotonic()
    with pytest.raises(Exception, match=r"(?i)cancel") as cancelled:
        compute.collect_within(spark, endless(), None, stop=stop)
    assert not isinstance(cancelled.value, JobTimeoutError)
    assert 1.5 < time.monotonic() - started < 60
    assert compute.collect_within(spark, spark.range(10).selectExpr("sum(id) AS s"), 60.0)[0]["s"] == 45


def test_an_interrupted_first_backfill_saves_no_watermark(
    aggregator: Aggregator, conn: psycopg2.extensions.connection, monkeypatch: pytest.MonkeyPatch,
) -> None:
    trades = agg_trades()
    stored = trades[:200] + trades[-200:]  # two days apart: two chunks
    insert_trades(conn, stored)
    stop = threading.Event()
    aggregate = aggregator.aggregate
    calls: list[int] = []

    def aggregate_then_stop(*args: object, **kwargs: object) -> object:
        calls.append(1)
        stop.set()  # as a SIGTERM during the first chunk would
        return aggregate(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(aggregator, "aggregate", aggregate_then_stop)
    aggregator.run(stop)
    assert len(calls) == 1
    assert aggregator.load_watermark() is None
    monkeypatch.undo()
    # The next start rebuilds everything and only then saves the watermark.
    assert aggregator.initial_build(threading.Event()) is not None
    assert aggregator.load_watermark() is not None
    assert candles(conn, "1m") == candles_from_trades(stored, MINUTE)


def test_a_stale_reconcile_never_overwrites_a_fresher_candle(
    aggregator: Aggregator, spark: SparkSession, conn: psycopg2.extensions.connection,
) -> None:
    mark = aggregator.current_xmin()
    insert_trades(conn, [trade(1, T0 + 1_000, "1.0"), trade(2, T0 + 2_000, "1.1")])
    # A reconcile reads its snapshot now ...
    spans = list(aggregator.touched(mark).spans)
    where = compute.predicates(spans, 2, aggregator._conn)
    _, stale = compute.compute(spark, aggregator._settings.postgres, where, ["1m", "5m"])
    # ... then more trades of the same windows arrive and `run` builds them first ...
    insert_trades(conn, [trade(3, T0 + 3_000, "0.9")])
    mark, outcome = aggregator.tick(mark)
    assert outcome is not None
    fresh = candle_table(conn)
    # ... and the reconcile writes late: the stored candles, built from more trades, stay.
    sink.write(aggregator._conn, stale)
    assert candle_table(conn) == fresh
    assert candles(conn, "1m")[T0] == (Decimal("1.0"), Decimal("1.1"), Decimal("0.9"), Decimal("0.9"), Decimal(6))
    # A computation from as many trades (a rerun) may still write: same trades, same values.
    assert aggregator.aggregate(spans).candles_changed == 0


def test_retention_keeps_partitions_the_aggregator_has_not_finished(
    pg: Postgres, database: str, aggregator: Aggregator, conn: psycopg2.extensions.connection,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], root_logging: None,
) -> None:
    day = 86_400_000
    insert_trades(conn, [trade(1, T0), trade(2, T0 + day), trade(3, T0 + 2 * day)])
    for key, value in pg.env(database).items():
        monkeypatch.setenv(key, value)

    def retention() -> tuple[list[str], str]:
        assert admin.db_command(argparse.Namespace(action="retention", keep_days=2, env_file=None)) == 0
        out = capsys.readouterr()
        return out.out.splitlines(), out.err

    # No watermark: nothing has been aggregated, nothing goes (insert_trades made 5 days).
    dropped, log = retention()
    assert dropped == []
    assert "kept=5" in log and "trades_20191011: no aggregator watermark yet" in log
    assert scalar(conn, "SELECT count(*) FROM trades") == 3

    # The aggregator finished everything so far; then a late trade lands in the middle day.
    aggregator.save_watermark(aggregator.current_xmin())
    insert_trades(conn, [trade(5, T0 + day + 1)])
    dropped, log = retention()
    assert dropped == [f"dropped trades_201910{d}" for d in ("10", "11", "13", "14")]
    assert "kept=1" in log and "trades_20191012: holds trades not aggregated yet" in log
    assert len(log.strip().splitlines()) == 1

    # Once run has passed it, it goes as well.
    aggregator.save_watermark(aggregator.current_xmin())
    assert retention()[0] == ["dropped trades_20191012"]


QUIET = [trade(1, T0 + 1_000, "1.0"), trade(2, T0 + 50_000, "1.2"), trade(3, T0 + 2 * MINUTE + 5_000, "1.1")]


def test_a_quiet_minute_between_consecutive_ids_gets_a_complete_filler(
    aggregator: Aggregator, conn: psycopg2.extensions.connection,
) -> None:
    mark = aggregator.current_xmin()
    insert_trades(conn, QUIET)
    aggregator.tick(mark)
    assert completeness(conn, "1m") == {T0: (2, True), T0 + MINUTE: (0, True), T0 + 2 * MINUTE: (1, True)}
    assert candles(conn, "1m") == candles_from_trades(QUIET, MINUTE)
    assert completeness(conn, "5m") == {T0: (3, True)}


def test_trades_missing_across_two_minutes_make_incomplete_candles_until_they_arrive(
    aggregator: Aggregator, conn: psycopg2.extensions.connection,
) -> None:
    every = [trade(1, T0 + 1_000, "1.0"), trade(2, T0 + 30_000, "1.2"),
             trade(3, T0 + MINUTE + 1_000, "1.3"), trade(4, T0 + MINUTE + 2_000, "1.4"),  # lost in an outage
             trade(5, T0 + 2 * MINUTE + 1_000, "1.1"),                                     # lost in an outage
             trade(6, T0 + 3 * MINUTE + 1_000, "0.9"), trade(7, T0 + 3 * MINUTE + 9_000, "1.0")]
    lost = every[2:5]
    stored = [t for t in every if t not in lost]
    mark = aggregator.current_xmin()
    insert_trades(conn, stored)
    mark, _ = aggregator.tick(mark)
    one = completeness(conn, "1m")
    assert one == {T0: (2, False), T0 + MINUTE: (0, False), T0 + 2 * MINUTE: (0, False),
                   T0 + 3 * MINUTE: (2, False)}
    assert completeness(conn, "5m") == {T0: (4, False)}  # ids 1, 2, 6, 7: not consecutive
    assert scalar(conn, "SELECT count(*) FROM candles WHERE trade_count = 0 AND complete") == 0

    # The missing trades arrive late (REST or a backfill); the next tick rebuilds the region.
    insert_trades(conn, lost)
    mark, outcome = aggregator.tick(mark)
    assert outcome is not None
    assert scalar(conn, "SELECT count(*) FROM candles WHERE NOT complete") == 0
    assert candles(conn, "1m") == candles_from_trades(every, MINUTE)
    assert candles(conn, "5m") == candles_from_trades(every, 5 * MINUTE)
    # Equal to a recomputation from scratch.
    built = candle_table(conn)
    with conn.cursor() as cur:
        cur.execute("TRUNCATE candles")
    aggregator.backfill(T0, T0 + 5 * MINUTE)
    assert candle_table(conn) == built
    assert scalar(conn, "SELECT count(*) FROM candles WHERE NOT complete") == 0


def test_gaps_filled_late_are_marked_resolved_by_a_tick(
    aggregator: Aggregator, conn: psycopg2.extensions.connection, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="candlestack.aggregator.jobs")
    with conn.cursor() as cur:
        cur.execute("INSERT INTO ingest_gaps (symbol, stream, from_id, to_id, reason, detected_at) "
                    "VALUES ('XRPETH', 'aggTrade', 2, 3, 'test', now())")
    mark = aggregator.current_xmin()
    insert_trades(conn, [trade(1, T0 + 1_000), trade(4, T0 + 4_000)])
    mark, _ = aggregator.tick(mark)
    assert scalar(conn, "SELECT count(*) FROM ingest_gaps WHERE resolved_at IS NULL") == 1
    insert_trades(conn, [trade(2, T0 + 2_000), trade(3, T0 + 3_000)])
    aggregator.tick(mark)
    assert scalar(conn, "SELECT count(*) FROM ingest_gaps WHERE resolved_at IS NULL") == 0
    assert any(r.getMessage() == "ingest gaps filled late, marked resolved" for r in caplog.records)


def test_a_backfill_outlives_a_lost_connection_but_not_a_lasting_fault(
    pg: Postgres, database: str, spark: SparkSession, conn: psycopg2.extensions.connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What `reconcile` (a backfill on a timer) meets when PostgreSQL restarts under it."""
    aggregator = make_aggregator(pg, database, spark, retry_initial_s=0.05, retry_max_s=0.1)
    trades = agg_trades()[:1500]
    insert_trades(conn, trades)
    start, end = trades[0].time_ms, trades[-1].time_ms + 1
    try:
        aggregator._conn.close()  # as a restart of PostgreSQL leaves it
        assert aggregator.backfill(start, end).finished
        assert candles(conn, "1m") == candles_from_trades(trades, MINUTE)

        monkeypatch.setattr(compute, "SOURCE", "(SELECT * FROM no_such_table) AS src")
        failures_before = sample("candlestack_aggregator_ticks_total", {"outcome": "error"})
        with pytest.raises(TickError):
            aggregator.backfill(start, end)
        retried = sample("candlestack_aggregator_ticks_total", {"outcome": "error"}) - failures_before
        assert retried == BACKFILL_CHUNK_RETRIES
    finally:
        aggregator._conn.close()
