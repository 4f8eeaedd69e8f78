"""The aggregator's two modes: ``run`` (follow new trades) and ``backfill`` (rebuild a range)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg2.extensions
from pyspark.sql import SparkSession

from aggregator import compute, metrics, sink
from aggregator.windows import Span, chunks, covering_step, from_ms, merge_windows
from candlestack.settings import INTERVALS_MS, AggregatorSettings

log = logging.getLogger(__name__)

STATE_NAME = "run"

# Trades whose inserting transaction is at or above the watermark, grouped by symbol and by
# window of the covering (largest) interval. The new watermark is the xmin of this same
# snapshot: every transaction below it has ended, so no later commit can land below it.
TOUCHED_SQL = """
SELECT symbol, (floor(extract(epoch FROM trade_time) * 1000 / %(step)s) * %(step)s)::bigint AS window_ms
FROM trades
WHERE ingest_xid >= %(watermark)s::text::xid8
GROUP BY 1, 2
"""


@dataclass(frozen=True, slots=True)
class Outcome:
    trades: int
    candles_changed: int
    seconds: float


class Aggregator:
    def __init__(self, settings: AggregatorSettings, spark: SparkSession,
                 conn: psycopg2.extensions.connection) -> None:
        self._settings = settings
        self._spark = spark
        self._conn = conn
        self._step = covering_step(settings.intervals)

    def aggregate(self, spans: Sequence[Span], extra_regions: Sequence[sink.Region] = ()) -> Outcome:
        """Recompute every candle inside ``spans`` and write what changed."""
        started = time.perf_counter()
        if not spans:
            changed = sink.write(self._conn, [], extra_regions) if extra_regions else 0
            return Outcome(0, changed, time.perf_counter() - started)
        where = compute.predicates(spans, self._settings.read_partitions, self._conn)
        trades, rows = compute.compute(self._spark, self._settings.postgres, where, self._settings.intervals)
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
        symbols = list(symbols) if symbols else self.symbols_with_trades()
        pieces = list(chunks(start_ms, end_ms, self._settings.backfill_chunk_hours * 3_600_000, self._step))
        total_trades = total_changed = 0
        began = time.perf_counter()
        log.info("backfill starting", extra={"from": from_ms(start_ms).isoformat(), "to": from_ms(end_ms).isoformat(),
                                             "symbols": ",".join(symbols) or "-", "chunks": len(pieces)})
        for number, (lo, hi) in enumerate(pieces, start=1):
            if stop is not None and stop.is_set():
                log.warning("backfill interrupted", extra={"chunk": number, "chunks": len(pieces)})
                break
            spans = [piece for symbol in symbols for piece in self._read_slices(symbol, lo, hi)]
            # Fillers are refreshed over the whole chunk even where no trade is left in it.
            regions = [sink.Region(symbol, name, INTERVALS_MS[name], lo, hi - INTERVALS_MS[name])
                       for symbol in symbols for name in self._settings.intervals]
            outcome = self.aggregate(spans, regions)
            total_trades += outcome.trades
            total_changed += outcome.candles_changed
            elapsed = time.perf_counter() - began
            eta = elapsed / number * (len(pieces) - number)
            log.info("backfill progress", extra={
                "chunk": f"{number}/{len(pieces)}", "window": f"{from_ms(lo).isoformat()}..{from_ms(hi).isoformat()}",
                "trades": outcome.trades, "candles_changed": outcome.candles_changed,
                "chunk_s": round(outcome.seconds, 2), "eta_s": round(eta, 1)})
        outcome = Outcome(total_trades, total_changed, time.perf_counter() - began)
        log.info("backfill done", extra={"trades": outcome.trades, "candles_changed": outcome.candles_changed,
                                         "seconds": round(outcome.seconds, 2)})
        return outcome

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

    def touched(self, watermark: int) -> tuple[int, list[Span]]:
        """(new watermark, spans of covering windows touched since ``watermark``)."""
        self._conn.set_session(isolation_level="REPEATABLE READ")
        try:
            with self._conn, self._conn.cursor() as cur:
                cur.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
                row = cur.fetchone()
                assert row is not None
                new_mark = int(row[0])
                cur.execute(TOUCHED_SQL, {"step": self._step, "watermark": str(watermark)})
                windows: dict[str, list[int]] = {}
                for symbol, window_ms in cur.fetchall():
                    windows.setdefault(symbol, []).append(int(window_ms))
        finally:
            self._conn.set_session(isolation_level="READ COMMITTED")
        spans = [span for symbol, starts in sorted(windows.items())
                 for span in merge_windows(symbol, starts, self._step)]
        return new_mark, spans

    def tick(self, watermark: int) -> tuple[int, Outcome | None]:
        new_mark, spans = self.touched(watermark)
        outcome = self.aggregate(spans) if spans else None
        if new_mark != watermark or outcome is not None:
            self.save_watermark(new_mark)
        return new_mark, outcome

    def run(self, stop: threading.Event) -> None:
        watermark = self.load_watermark()
        if watermark is None:
            # First start: take the snapshot first, then rebuild everything already stored; the
            # ticks that follow pick up whatever arrived meanwhile.
            watermark = self.current_xmin()
            with self._conn, self._conn.cursor() as cur:
                cur.execute("SELECT min(trade_time), max(trade_time) FROM trades")
                first, last = cur.fetchone() or (None, None)
            if first is not None and last is not None:
                log.info("no watermark yet: building candles for the trades already stored")
                self.backfill(int(first.timestamp() * 1000), int(last.timestamp() * 1000) + 1, stop=stop)
            self.save_watermark(watermark)
        log.info("aggregator running", extra={"watermark_xid": watermark, "tick_s": self._settings.tick_s,
                                              "intervals": ",".join(self._settings.intervals)})
        while not stop.is_set():
            started = time.monotonic()
            try:
                watermark, outcome = self.tick(watermark)
            except psycopg2.OperationalError as exc:
                metrics.TICKS.labels("error").inc()
                log.warning("tick failed; retrying next tick", extra={"error": str(exc).strip()})
                self._reconnect()
            else:
                metrics.LAST_TICK.set(time.time())
                if outcome is None:
                    metrics.TICKS.labels("idle").inc()
                else:
                    metrics.TICKS.labels("work").inc()
                    metrics.TICK_SECONDS.observe(outcome.seconds)
                    log.info("tick", extra={"trades": outcome.trades, "candles_changed": outcome.candles_changed,
                                            "seconds": round(outcome.seconds, 2), "watermark_xid": watermark})
            stop.wait(max(0.0, self._settings.tick_s - (time.monotonic() - started)))

    def _reconnect(self) -> None:
        from candlestack import db  # noqa: PLC0415

        with contextlib.suppress(psycopg2.Error):
            self._conn.close()
        try:
            self._conn = db.connect(self._settings.postgres)
        except psycopg2.OperationalError as exc:
            log.warning("database still unreachable", extra={"error": str(exc).strip()})
