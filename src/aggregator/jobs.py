"""The aggregator's two modes: ``run`` (follow new trades) and ``backfill`` (rebuild a range)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import psycopg2.extensions
from pyspark.sql import SparkSession

from candlestack.aggregator import compute, faults, metrics, sink
from candlestack.aggregator.windows import (
    Span,
    chunks,
    covering_step,
    floor_to,
    merge_windows,
    pause_before_tick,
    uncovered,
)
from candlestack.core.backoff import Backoff
from candlestack.core.epoch import from_ms
from candlestack.core.settings import INTERVALS_MS, AggregatorSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

STATE_NAME = "run"
JOB_TIMEOUT_MAX_S = 3600.0

# Longest wait between two attempts after failed ticks.
RETRY_MAX_S = 60.0
# A backfill (and reconcile, its timer's form) retries a failed chunk this many times, the wait
# doubling from the tick interval up to RETRY_MAX_S, jittered (1 to 2 minutes in all with the
# defaults): enough for PostgreSQL or a Spark process to restart, short enough that a lasting
# fault fails the command for the operator.
BACKFILL_CHUNK_RETRIES = 6

# Trades whose inserting transaction is at or above the watermark, grouped by symbol and by
# window of %(step)s (see Aggregator._touch_step), with the oldest trade time and the count of
# each group. The new watermark is the xmin of this same snapshot: every transaction below it has
# ended, so no later commit can land below it. One statement, so that a tick with nothing to do
# costs one query; the outer join returns the xmin even when no trade was touched.
TOUCHED_SQL = """
SELECT pg_snapshot_xmin(pg_current_snapshot())::text, t.symbol, t.window_ms, t.oldest_ms, t.trades
FROM (SELECT) AS one
LEFT JOIN (
    SELECT symbol, (floor(extract(epoch FROM trade_time) * 1000 / %(step)s) * %(step)s)::bigint AS window_ms,
           floor(extract(epoch FROM min(trade_time)) * 1000)::bigint AS oldest_ms, count(*) AS trades
    FROM trades
    WHERE ingest_xid >= %(watermark)s::text::xid8
    GROUP BY 1, 2
) AS t ON true
"""

# Trades per backfill piece (pieces of the chunk length, numbered from the range's start).
CHUNK_COUNTS_SQL = """
SELECT floor(extract(epoch FROM trade_time - %(lo)s) * 1000 / %(unit_ms)s)::int, count(*)
FROM trades
WHERE symbol = ANY(%(symbols)s) AND trade_time >= %(lo)s AND trade_time < %(hi)s
GROUP BY 1
"""

# A tick runs this long after each base window (1m) closes, whatever the tick interval says:
# time for the window's last trades to travel from Binance through Kafka into PostgreSQL.
CLOSE_SETTLE_S = 0.5

# Below this many touched trades a tick's job reads over one JDBC connection: a few thousand
# rows do not repay a task per read partition.
SMALL_TICK_TRADES = 50_000


@dataclass(frozen=True, slots=True)
class Touched:
    """What a tick found stored since the watermark."""

    new_mark: int
    # Where trades arrived: base windows (1m) when the larger intervals can be rolled up from
    # stored base candles, else windows of the covering interval.
    spans: list[Span]
    trades: int = 0
    # The oldest trade time among them (ms); None when nothing was touched.
    oldest_ms: int | None = None
    # The rest of the covering windows around ``spans``, whose stored base candles the larger
    # intervals are rolled up with (empty when ``spans`` are covering windows).
    around: list[Span] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Outcome:
    trades: int
    candles_changed: int
    seconds: float
    # False when a stop interrupted a backfill before its last chunk.
    finished: bool = True


class Aggregator:
    """Builds candles with one Spark session and one PostgreSQL connection.

    Args:
        session_factory: given the current Spark session, which keeps failing, stops it and
            returns a new one; None keeps the session whatever happens.
        retry_initial_s: first wait after a failed tick (default: the tick interval), doubled
            for each failure in a row up to ``retry_max_s``, jittered.
    """

    def __init__(self, settings: AggregatorSettings, spark: SparkSession, conn: psycopg2.extensions.connection,
                 *, session_factory: Callable[[SparkSession], SparkSession] | None = None,
                 retry_initial_s: float | None = None, retry_max_s: float = RETRY_MAX_S) -> None:
        self._settings = settings
        self._spark = spark
        self._conn = conn
        self._step = covering_step(settings.intervals)
        self._base_step = compute.base_step(settings.intervals)
        # Ticks read the trades of the base windows they touched and roll the larger intervals up
        # with the stored base candles around them, when the base interval is one of the
        # configured ones; otherwise they read whole covering windows.
        self._touch_step = self._base_step if compute.base_interval(settings.intervals) else self._step
        # When a tick last ran a Spark job (monotonic); None: not yet in this process.
        self._last_refresh: float | None = None
        self._session_factory = session_factory
        self._retry_initial_s = settings.tick_s if retry_initial_s is None else retry_initial_s
        self._retry_max_s = retry_max_s
        # Doubles after each job that timed out and resets after a tick that succeeded: a
        # stalled cluster is noticed within the configured timeout, while a tick that really
        # needs longer (a backlog after an outage) gets the time at its next attempts.
        self._job_timeout_s = settings.job_timeout_s

    @property
    def spark(self) -> SparkSession:
        """The current session (a new one after a rebuild)."""
        return self._spark

    def aggregate(self, spans: Sequence[Span], extra_regions: Sequence[sink.Region] = (),
                  *, around: Sequence[Span] = (), timeout_s: float | None = None,
                  stop: threading.Event | None = None, read_partitions: int | None = None) -> Outcome:
        """Recompute every candle inside ``spans`` and write what changed.

        ``around``: spans whose stored base candles join the larger intervals (see
        :class:`Touched`). The Spark job is cancelled after ``timeout_s`` (None: never) or when
        ``stop`` is set. It reads over ``read_partitions`` JDBC connections (None: the setting's).
        """
        started = time.perf_counter()
        if not spans:
            changed = sink.write(self._conn, [], extra_regions) if extra_regions else 0
            return Outcome(0, changed, time.perf_counter() - started)
        parts = read_partitions or self._settings.read_partitions
        where = compute.predicates(spans, parts, self._conn)
        stored_where = compute.predicates(around, parts, self._conn)
        trades, rows = compute.compute(self._spark, self._settings.postgres, where, self._settings.intervals,
                                       stored_where=stored_where, timeout_s=timeout_s, stop=stop)
        changed = sink.write(self._conn, rows, extra_regions)
        metrics.TRADES_READ.inc(trades)
        metrics.CANDLES_WRITTEN.inc(changed)
        return Outcome(trades, changed, time.perf_counter() - started)

    # -- backfill -----------------------------------------------------------------------------
    def symbols_with_trades(self) -> list[str]:
        with self._conn, self._conn.cursor() as cur:
            cur.execute("SELECT symbol FROM symbol_state ORDER BY symbol")
            return [row[0] for row in cur.fetchall()]

    def backfill(self, start_ms: int, end_ms: int, symbols: Sequence[str] | None = None,
                 *, stop: threading.Event | None = None) -> Outcome:
        """Rebuild [start, end) chunk by chunk, logging progress; safe to repeat."""
        stop = stop or threading.Event()
        symbols = list(symbols) if symbols else self._retrying(stop, self.symbols_with_trades,
                                                                max_failures=BACKFILL_CHUNK_RETRIES)
        if symbols is None:
            return Outcome(0, 0, 0.0, finished=False)
        pieces = self._retrying(stop, partial(self.plan_chunks, symbols, start_ms, end_ms),
                                max_failures=BACKFILL_CHUNK_RETRIES)
        if pieces is None:
            return Outcome(0, 0, 0.0, finished=False)
        total_trades = total_changed = 0
        finished = True
        began = time.perf_counter()
        log.info("backfill starting", extra={"from": from_ms(start_ms).isoformat(), "to": from_ms(end_ms).isoformat(),
                                             "symbols": ",".join(symbols) or "-", "chunks": len(pieces)})
        for number, (lo, hi) in enumerate(pieces, start=1):
            chunk = self._retrying(stop, partial(self._backfill_chunk, symbols, lo, hi),
                                   max_failures=BACKFILL_CHUNK_RETRIES)
            if chunk is None:
                log.warning("backfill interrupted", extra={"chunk": number, "chunks": len(pieces)})
                finished = False
                break
            outcome = chunk
            total_trades += outcome.trades
            total_changed += outcome.candles_changed
            elapsed = time.perf_counter() - began
            eta = elapsed / number * (len(pieces) - number)
            log.info("backfill progress", extra={
                "chunk": f"{number}/{len(pieces)}", "window": f"{from_ms(lo).isoformat()}..{from_ms(hi).isoformat()}",
                "trades": outcome.trades, "candles_changed": outcome.candles_changed,
                "chunk_s": round(outcome.seconds, 2), "eta_s": round(eta, 1)})
        outcome = Outcome(total_trades, total_changed, time.perf_counter() - began, finished)
        log.info("backfill done" if finished else "backfill stopped",
                 extra={"trades": outcome.trades, "candles_changed": outcome.candles_changed,
                        "seconds": round(outcome.seconds, 2)})
        return outcome

    def plan_chunks(self, symbols: Sequence[str], start_ms: int, end_ms: int) -> list[tuple[int, int]]:
        """Cut [start, end) into the backfill's Spark jobs.

        Pieces of ``backfill_chunk_hours`` are the unit; consecutive pieces are joined while the
        trades they hold add up to no more than ``backfill_chunk_trades``. Each job has a fixed
        cost (scheduling, the filler and completeness statements of every symbol and interval),
        so a sparse month is one job rather than thirty, while a dense one still comes in
        chunks that bound the job's memory and give a progress line each. Counting the trades
        reads the range once, through the (symbol, trade_time) index.
        """
        unit_ms = self._settings.backfill_chunk_hours * 3_600_000
        units = list(chunks(start_ms, end_ms, unit_ms, self._step))
        if len(units) <= 1 or not symbols:
            return units
        first = units[0][0]
        with self._conn, self._conn.cursor() as cur:
            cur.execute(CHUNK_COUNTS_SQL, {"symbols": list(symbols), "lo": from_ms(first),
                                           "hi": from_ms(units[-1][1]),
                                           "unit_ms": units[0][1] - first})
            counts = dict(cur.fetchall())
        limit = self._settings.backfill_chunk_trades
        planned: list[tuple[int, int]] = []
        held = 0
        for index, (lo, hi) in enumerate(units):
            trades = int(counts.get(index, 0))
            if planned and held + trades <= limit:
                planned[-1] = (planned[-1][0], hi)
                held += trades
            else:
                planned.append((lo, hi))
                held = trades
        return planned

    def _backfill_chunk(self, symbols: Sequence[str], lo: int, hi: int) -> Outcome:
        spans = [piece for symbol in symbols for piece in self._read_slices(symbol, lo, hi)]
        # Fillers are refreshed over the whole chunk even where no trade is left in it.
        regions = [sink.Region(symbol, name, INTERVALS_MS[name], lo, hi - INTERVALS_MS[name])
                   for symbol in symbols for name in self._settings.intervals]
        try:
            return self.aggregate(spans, regions)
        except Exception as exc:
            raise faults.TickError(spans) from exc

    def _read_slices(self, symbol: str, lo: int, hi: int) -> list[Span]:
        """Cut a chunk into pieces so the JDBC read runs in parallel."""
        parts = self._settings.read_partitions
        width = max(self._step, -(-(hi - lo) // parts // self._step) * self._step)
        return [Span(symbol, start, min(start + width, hi)) for start in range(lo, hi, width)]

    # -- run ----------------------------------------------------------------------------------
    def load_watermark(self) -> int | None:
        with self._conn, self._conn.cursor() as cur:
            cur.execute("SELECT watermark_xid::text FROM aggregator_state WHERE name = %s", (STATE_NAME,))
            row = cur.fetchone()
        return int(row[0]) if row else None

    def save_watermark(self, xid: int) -> None:
        with self._conn, self._conn.cursor() as cur:
            cur.execute(
                "INSERT INTO aggregator_state (name, watermark_xid, ticks) VALUES (%s, %s::text::xid8, 1) "
                "ON CONFLICT (name) DO UPDATE SET watermark_xid = EXCLUDED.watermark_xid, "
                "ticks = aggregator_state.ticks + 1, updated_at = now()",
                (STATE_NAME, str(xid)),
            )
        metrics.WATERMARK.set(xid)

    def current_xmin(self) -> int:
        with self._conn, self._conn.cursor() as cur:
            cur.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
            row = cur.fetchone()
        assert row is not None
        return int(row[0])

    def touched(self, watermark: int) -> Touched:
        """What was stored since ``watermark`` (see :class:`Touched`), and the new watermark."""
        self._conn.set_session(isolation_level="REPEATABLE READ")
        try:
            with self._conn, self._conn.cursor() as cur:
                cur.execute(TOUCHED_SQL, {"step": self._touch_step, "watermark": str(watermark)})
                rows = cur.fetchall()
        finally:
            self._conn.set_session(isolation_level="READ COMMITTED")
        windows: dict[str, list[int]] = {}
        trades = 0
        oldest: int | None = None
        for _, symbol, window_ms, oldest_ms, count in rows:
            if symbol is None:
                continue
            windows.setdefault(symbol, []).append(int(window_ms))
            trades += int(count)
            oldest = int(oldest_ms) if oldest is None else min(oldest, int(oldest_ms))
        spans = [span for symbol, starts in sorted(windows.items())
                 for span in merge_windows(symbol, starts, self._touch_step)]
        around = uncovered(spans, self._step) if self._touch_step != self._step else []
        return Touched(int(rows[0][0]), spans, trades, oldest, around)

    def can_wait(self, touched: Touched, now_ms: int) -> bool:
        """Whether this tick may leave its trades to a later one: the rest mode.

        Only when every touched trade is in the open window of the smallest interval (so no
        closed candle is waiting for them), and the open candles were refreshed less than
        ``open_refresh_s`` ago. The trades stay above the unsaved watermark, so the next tick
        finds them again, with whatever arrived since, in the same one query.
        """
        refresh_s = self._settings.open_refresh_s
        if touched.oldest_ms is None or refresh_s <= self._settings.tick_s or self._last_refresh is None:
            return False
        if touched.oldest_ms < floor_to(now_ms, self._base_step):
            return False
        return time.monotonic() - self._last_refresh < refresh_s

    def resolve_gaps(self) -> int:
        """Mark the recorded ingest gaps whose trades have all arrived since as resolved."""
        with self._conn, self._conn.cursor() as cur:
            cur.execute("SELECT resolve_filled_gaps()")
            row = cur.fetchone()
        marked = int(row[0]) if row else 0
        if marked:
            metrics.GAPS_RESOLVED.inc(marked)
            log.info("ingest gaps filled late, marked resolved", extra={"gaps": marked})
        return marked

    def tick(self, watermark: int, *, stop: threading.Event | None = None) -> tuple[int, Outcome | None]:
        """Aggregate what was stored since ``watermark``; returns the new watermark.

        Its Spark job is cancelled after the job timeout, or when ``stop`` is set.

        Raises:
            faults.TickError: with the windows that could not be recomputed. The watermark is
                not saved then, so the next tick recomputes them.
        """
        spans: list[Span] = []
        try:
            touched = self.touched(watermark)
            spans = touched.spans
            if spans and self.can_wait(touched, int(time.time() * 1000)):
                metrics.TICKS_DEFERRED.inc()
                return watermark, None
            outcome = None
            if spans:
                outcome = self.aggregate(spans, around=touched.around, timeout_s=self._job_timeout_s, stop=stop,
                                         read_partitions=1 if touched.trades < SMALL_TICK_TRADES else None)
                self._last_refresh = time.monotonic()
                # Gaps are filled only by trades arriving, so only a tick with work looks.
                self.resolve_gaps()
            if touched.new_mark != watermark or outcome is not None:
                self.save_watermark(touched.new_mark)
        except Exception as exc:
            raise faults.TickError(spans) from exc
        return touched.new_mark, outcome

    def initial_build(self, stop: threading.Event) -> int | None:
        """Build candles for every trade already stored and save the watermark to follow from.

        The snapshot is taken first, so the ticks that follow pick up whatever arrives meanwhile.
        Returns None, saving nothing, when a stop interrupted the backfill: a watermark saved
        then would skip the unbuilt trades for good, while the next start simply rebuilds.
        """
        watermark = self.current_xmin()
        with self._conn, self._conn.cursor() as cur:
            cur.execute("SELECT min(trade_time), max(trade_time) FROM trades")
            first, last = cur.fetchone() or (None, None)
        if first is not None and last is not None:
            log.info("no watermark yet: building candles for the trades already stored")
            outcome = self.backfill(int(first.timestamp() * 1000), int(last.timestamp() * 1000) + 1, stop=stop)
            if not outcome.finished:
                log.warning("initial backfill interrupted: watermark not saved; the next start rebuilds")
                return None
            self.resolve_gaps()
        self.save_watermark(watermark)
        return watermark

    def run(self, stop: threading.Event) -> None:
        """Follow new trades until ``stop`` is set, surviving any failure of Spark or PostgreSQL."""
        watermark = self._retrying(stop, partial(self._starting_watermark, stop))
        if watermark is None:
            return
        log.info("aggregator running", extra={"watermark_xid": watermark, "tick_s": self._settings.tick_s,
                                              "intervals": ",".join(self._settings.intervals)})
        while not stop.is_set():
            started = time.monotonic()
            result = self._retrying(stop, partial(self.tick, watermark, stop=stop))
            if result is None:
                return
            watermark, outcome = result
            self._record(outcome, watermark)
            stop.wait(pause_before_tick(self._settings.tick_s, time.monotonic() - started,
                                        int(time.time() * 1000), self._base_step, CLOSE_SETTLE_S))

    def _starting_watermark(self, stop: threading.Event) -> int | None:
        watermark = self.load_watermark()
        return watermark if watermark is not None else self.initial_build(stop)

    def _retrying(self, stop: threading.Event, attempt: Callable[[], T | None],
                  *, max_failures: int | None = None) -> T | None:
        """``attempt()`` until it does not raise, waiting with capped backoff after each failure;
        after ``max_failures`` retries (None: never) the next failure is raised.

        None means stopped (``attempt`` returns None only when it saw the stop).
        """
        backoff = Backoff(self._retry_initial_s, self._retry_max_s)
        failures = 0
        while not stop.is_set():
            try:
                result = attempt()
            except Exception as exc:
                if stop.is_set():  # a stop cancels the running job: not a failure
                    log.info("stopped during an attempt; its windows are redone at the next start")
                    return None
                if max_failures is not None and failures >= max_failures:
                    raise
                failures += 1
                delay = backoff.next_delay()
                self._failed(exc, failures, delay)
                stop.wait(delay)
                continue
            if failures:
                log.info("recovered", extra={"failures": failures})
                metrics.CONSECUTIVE_FAILURES.set(0)
            self._job_timeout_s = self._settings.job_timeout_s
            return result
        return None

    def _failed(self, exc: Exception, failures: int, delay: float) -> None:
        """Log and count a failed attempt, then renew what its error calls for."""
        cause = exc.__cause__ if isinstance(exc, faults.TickError) and exc.__cause__ is not None else exc
        spans = exc.spans if isinstance(exc, faults.TickError) else ()
        recovery = faults.recovery_for(exc)
        if isinstance(cause, faults.JobTimeoutError):
            self._job_timeout_s = min(JOB_TIMEOUT_MAX_S, self._job_timeout_s * 2)
        metrics.TICKS.labels("error").inc()
        metrics.TICK_FAILURES.labels(type(cause).__name__).inc()
        metrics.CONSECUTIVE_FAILURES.set(failures)
        lines = str(cause).strip().splitlines()
        # The whole trace once per run of failures: a Java one is long, and retries repeat it.
        log.warning("tick failed; retrying", exc_info=cause if failures == 1 else None, extra={
            "windows": faults.describe(spans), "error_type": type(cause).__name__,
            "error": lines[0][:500] if lines else "", "failures": failures, "retry_in_s": round(delay, 2),
            "recovery": recovery.value})
        if recovery is faults.Recovery.RECONNECT:
            self._reconnect()
        if faults.needs_new_session(recovery, failures):
            self._renew_session()

    def _record(self, outcome: Outcome | None, watermark: int) -> None:
        metrics.LAST_TICK.set(time.time())
        if outcome is None:
            metrics.TICKS.labels("idle").inc()
            return
        metrics.TICKS.labels("work").inc()
        metrics.TICK_SECONDS.observe(outcome.seconds)
        log.info("tick", extra={"trades": outcome.trades, "candles_changed": outcome.candles_changed,
                                "seconds": round(outcome.seconds, 2), "watermark_xid": watermark})

    def _renew_session(self) -> None:
        if self._session_factory is None:
            return
        log.warning("rebuilding the Spark session")
        try:
            self._spark = self._session_factory(self._spark)
        except Exception:
            log.warning("the Spark session could not be rebuilt; retrying later", exc_info=True)
            return
        metrics.SESSION_REBUILDS.inc()

    def _reconnect(self) -> None:
        from candlestack.core import db  # noqa: PLC0415

        with contextlib.suppress(psycopg2.Error):
            self._conn.close()
        try:
            self._conn = db.connect(self._settings.postgres)
        except psycopg2.OperationalError as exc:
            log.warning("database still unreachable", extra={"error": str(exc).strip()})
