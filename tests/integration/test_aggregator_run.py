"""``aggregator run`` on the standalone cluster: the watermark follows new trades exactly, and a
late trade re-opens only the windows it touches."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg2.extensions
import pytest
from pyspark.sql import SparkSession

from candlestack.aggregator.jobs import Aggregator
from candlestack.core import db
from tests.harness.pipeline import candles, insert_trades, scalar
from tests.harness.reference import AggTrade, agg_trades, binance_klines, candles_from_trades
from tests.harness.services import Postgres
from tests.harness.settings import aggregator_settings

pytestmark = pytest.mark.slow


@pytest.fixture
def aggregator(pg: Postgres, database: str, spark: SparkSession) -> Iterator[Aggregator]:
    settings = aggregator_settings(pg, database, spark.sparkContext.master)
    work = db.connect(settings.postgres)
    yield Aggregator(settings, spark, work)
    work.close()


def candle_versions(conn: psycopg2.extensions.connection) -> dict[tuple[str, datetime], datetime]:
    with conn.cursor() as cur:
        cur.execute("SELECT timeframe, open_time, updated_at FROM candles")
        return {(tf, start): updated for tf, start, updated in cur.fetchall()}


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def test_run_ticks_follow_trades_and_late_trades_reopen_only_their_windows(
    aggregator: Aggregator, conn: psycopg2.extensions.connection,
) -> None:
    trades = agg_trades()
    watermark = aggregator.current_xmin()
    insert_trades(conn, trades[:6000])
    watermark, outcome = aggregator.tick(watermark)
    assert outcome is not None and outcome.trades >= 6000
    insert_trades(conn, trades[6000:])
    watermark, outcome = aggregator.tick(watermark)
    assert outcome is not None
    assert candles(conn, "1m") == binance_klines()
    assert candles(conn, "5m") == candles_from_trades(trades, 300_000)
    # The reference ids are consecutive: no candle may be missing a trade, fillers included.
    assert scalar(conn, "SELECT count(*) FROM candles WHERE NOT complete") == 0

    # Nothing new: no Spark job, nothing written.
    watermark, outcome = aggregator.tick(watermark)
    assert outcome is None

    # A late trade inside a quiet minute (a filler candle) between two traded minutes.
    klines = binance_klines()
    quiet = next(start for start, k in sorted(klines.items())
                 if k[4] == 0 and klines.get(start - 60_000, (0,) * 5)[4] > 0)
    next_traded = min(start for start, k in klines.items() if start > quiet and k[4] > 0)
    before = candle_versions(conn)
    late = AggTrade(agg_id=1, price="0.00199999", qty="7", first_id=1, last_id=1, time_ms=quiet + 30_000,
                    buyer_is_maker=False)
    insert_trades(conn, [late])
    watermark, outcome = aggregator.tick(watermark)
    assert outcome is not None and outcome.candles_changed >= 1
    after = candle_versions(conn)
    changed = {key for key in after if after[key] != before.get(key)}
    prev_traded = max(start for start, k in klines.items() if start < quiet and k[4] > 0)
    five = quiet - quiet % 300_000
    # The fillers after the trade, and completeness from the traded window before it to the one
    # after it: whether their edge ids join depends on the new trade's id.
    allowed = {("1m", at(ms)) for ms in range(prev_traded, next_traded + 60_000, 60_000)}
    allowed |= {("5m", at(ms)) for ms in range(five - 300_000, next_traded + 300_000, 300_000)}
    assert ("1m", at(quiet)) in changed
    assert changed <= allowed, sorted(changed - allowed)
    expected = candles_from_trades([*trades, late], 60_000)
    assert candles(conn, "1m") == expected
    assert candles(conn, "5m") == candles_from_trades([*trades, late], 300_000)


def test_watermark_never_passes_a_transaction_still_in_flight(
    pg: Postgres, database: str, aggregator: Aggregator, conn: psycopg2.extensions.connection,
) -> None:
    trades = agg_trades()[:500]
    watermark = aggregator.current_xmin()
    insert_trades(conn, trades[:250])
    slow = pg.connect(database)  # a consumer batch that takes its time to commit
    try:
        insert_trades(slow, trades[250:])  # not committed yet
        watermark, _ = aggregator.tick(watermark)
        assert sum(c[4] for c in candles(conn, "1m").values()) == sum(int(t.qty.split(".")[0]) for t in trades[:250])
        slow.commit()
    finally:
        slow.close()
    watermark, outcome = aggregator.tick(watermark)
    assert outcome is not None
    assert candles(conn, "1m") == candles_from_trades(trades, 60_000)


def test_rest_mode_leaves_the_open_window_to_a_later_tick_but_builds_a_closed_window_at_once(
    pg: Postgres, database: str, spark: SparkSession, conn: psycopg2.extensions.connection,
) -> None:
    settings = aggregator_settings(pg, database, spark.sparkContext.master,
                                   CANDLESTACK_AGGREGATOR_OPEN_REFRESH_S="600")
    work = db.connect(settings.postgres)
    try:
        aggregator = Aggregator(settings, spark, work)
        now = int(time.time() * 1000)
        if now % 60_000 > 40_000:  # keep the whole test inside one open minute
            time.sleep((60_000 - now % 60_000) / 1000 + 0.5)
            now = int(time.time() * 1000)
        minute = now - now % 60_000
        with conn.cursor() as cur:
            cur.execute("SELECT ensure_trade_partitions(current_date - 1, current_date + 1)")

        def trade(agg_id: int, time_ms: int) -> AggTrade:
            return AggTrade(agg_id=agg_id, price="0.002", qty="1", first_id=agg_id, last_id=agg_id,
                            time_ms=time_ms, buyer_is_maker=False)

        def open_count() -> int:
            return int(scalar(conn, "SELECT coalesce(sum(trade_count), 0) FROM candles "
                                    f"WHERE timeframe = '1m' AND open_time = to_timestamp({minute / 1000})"))

        # The first tick of a process refreshes whatever it finds.
        watermark = aggregator.current_xmin()
        insert_trades(conn, [trade(1, minute + 100)])
        watermark, outcome = aggregator.tick(watermark)
        assert outcome is not None and open_count() == 1

        # Another trade of the open minute, open candles refreshed a moment ago: no Spark job,
        # the watermark stays where it was, the open candle waits.
        insert_trades(conn, [trade(2, minute + 200)])
        waited, outcome = aggregator.tick(watermark)
        assert (waited, outcome) == (watermark, None)
        assert open_count() == 1

        # A late trade for the minute before: a closed window waits for nobody, and the same job
        # takes the open minute's waiting trade too.
        insert_trades(conn, [trade(3, minute - 30_000)])
        watermark, outcome = aggregator.tick(waited)
        assert outcome is not None and outcome.trades == 3
        assert open_count() == 2
        assert scalar(conn, "SELECT count(*) FROM candles WHERE timeframe = '1m' AND trade_count > 0 "
                            f"AND open_time = to_timestamp({(minute - 60_000) / 1000})") == 1
    finally:
        work.close()


def test_backfill_joins_chunks_up_to_a_trade_count(
    pg: Postgres, database: str, spark: SparkSession, conn: psycopg2.extensions.connection,
) -> None:
    trades = agg_trades()
    insert_trades(conn, trades)
    first, last = min(t.time_ms for t in trades), max(t.time_ms for t in trades) + 1
    hour = 3_600_000
    start, end = first - first % hour, last - last % hour + hour
    per_hour: dict[int, int] = {}
    for t in trades:
        per_hour[t.time_ms - t.time_ms % hour] = per_hour.get(t.time_ms - t.time_ms % hour, 0) + 1

    def plan(limit: int) -> list[tuple[int, int]]:
        settings = aggregator_settings(pg, database, spark.sparkContext.master,
                                       CANDLESTACK_AGGREGATOR_BACKFILL_CHUNK_HOURS="1",
                                       CANDLESTACK_AGGREGATOR_BACKFILL_CHUNK_TRADES=str(limit))
        work = db.connect(settings.postgres)
        try:
            return Aggregator(settings, spark, work).plan_chunks(["XRPETH"], start, end)
        finally:
            work.close()

    # Everything fits in one job.
    assert plan(len(trades)) == [(start, end)]
    # One trade per job at most: every hour alone, hours with no trade joined to the one before.
    units = [(lo, lo + hour) for lo in range(start, end, hour)]
    alone = plan(1)
    assert alone[0][0] == start and alone[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(alone))
    assert len(alone) == sum(1 for lo, _ in units if per_hour.get(lo, 0) > 0) + (per_hour.get(start, 0) == 0)
    # A limit in between: no job holds more than the limit unless one hour alone does.
    limit = max(per_hour.values())
    for lo, hi in plan(limit):
        held = sum(n for ms, n in per_hour.items() if lo <= ms < hi)
        assert held <= limit


def test_a_tick_reads_the_minutes_it_touched_and_rolls_up_the_rest_of_their_five_minutes(
    aggregator: Aggregator, conn: psycopg2.extensions.connection,
) -> None:
    trades = agg_trades()
    minutes: dict[int, list[AggTrade]] = {}
    for t in trades:
        minutes.setdefault(t.time_ms - t.time_ms % 60_000, []).append(t)
    # A five-minute window whose trades fall in at least three of its minutes.
    five = next(w for w in sorted({m - m % 300_000 for m in minutes})
                if sum(1 for m in minutes if m - m % 300_000 == w) >= 3)
    inside = sorted(m for m in minutes if m - m % 300_000 == five)
    first, later = [t for m in inside[:-1] for t in minutes[m]], minutes[inside[-1]]
    watermark = aggregator.current_xmin()
    insert_trades(conn, first)
    watermark, outcome = aggregator.tick(watermark)
    assert outcome is not None and outcome.trades == len(first)
    insert_trades(conn, later)
    watermark, outcome = aggregator.tick(watermark)
    # Only the last minute's trades are read; the five-minute candle is still exact.
    assert outcome is not None and outcome.trades == len(later)
    assert candles(conn, "5m") == candles_from_trades(first + later, 300_000)
    assert candles(conn, "1m") == candles_from_trades(first + later, 60_000)
