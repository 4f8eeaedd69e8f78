"""The producer's connection loop: read the combined stream, publish, reconnect, fill gaps."""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import websocket

from candlestack.core.backoff import Backoff
from candlestack.core.contract import STREAMS, Gap, Trade, trade_from_binance
from candlestack.core.errors import ContractError, GapFillError
from candlestack.core.rest_weight import RestBudget, RestThrottled
from candlestack.core.settings import ProducerSettings
from candlestack.producer import metrics
from candlestack.producer.binance import (
    RestClient,
    ServerShutdown,
    combined_stream_url,
    is_retryable_rest,
    unwrap,
)
from candlestack.producer.gaps import IdTracker, Missing, PendingGap, pending_retry_delay_s
from candlestack.producer.publisher import Publisher
from candlestack.producer.state import Progress, StateFile

log = logging.getLogger(__name__)

# recv() wakes up this often to notice SIGTERM, the connection age and due pending gaps.
RECV_TIMEOUT_S = 1.0
REST_ATTEMPTS = 5
# A REST failure is retried on the spot only while the wait is this short; a longer one (a
# Retry-After, a spent weight budget) turns the range into a pending gap, retried between frames.
INLINE_RETRY_MAX_S = 2.0
# A pending gap is fetched this many trades at a time between frames, so that a large one does
# not hold up the live stream.
PENDING_TURN_TRADES = 5000
# The first unexpected session errors are logged with their traceback, then one in this many.
SESSION_ERROR_LOG_EVERY = 100

# Failures of a REST read: the network (OSError covers URLError, ssl.SSLError, timeouts), a
# broken answer (http.client.HTTPException covers IncompleteRead; ValueError covers a body cut
# short inside the JSON), a row the contract refuses, or our own throttle.
_REST_FAILURES = (OSError, ValueError, ContractError, RestThrottled, http.client.HTTPException)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Reconnect(Exception):
    def __init__(self, reason: str, *, immediately: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.immediately = immediately


class TradeStream:
    """Owns the WebSocket; every live trade goes through :meth:`accept` exactly once in id order.

    Trades of a pending gap are older than the live ones and bypass the id tracker; they go
    through :meth:`_publish_fill`, limited to the gap's own range.
    """

    def __init__(self, settings: ProducerSettings, publisher: Publisher, *, stop: threading.Event,
                 progress: Progress | None = None, state_file: StateFile | None = None) -> None:
        self._settings = settings
        self._publisher = publisher
        self._stop = stop
        self._url = combined_stream_url(settings.ws_url, settings.symbols, settings.stream)
        self._rest = RestClient(settings.rest_url, settings.stream, budget=RestBudget(settings.rest_weight_limit))
        self._progress = progress if progress is not None else Progress(settings.stream)
        self._state_file = state_file
        self._symbols = set(settings.symbols)
        self._ids = IdTracker({symbol: last for symbol, last in self._progress.resume_points().items()
                               if symbol in self._symbols})
        self._backoff = Backoff(settings.reconnect_initial_s, settings.reconnect_max_s)
        self.malformed = 0
        self.session_errors = 0
        self._metric_series: dict[tuple[str, str], tuple[Any, Any]] = {}

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        """Stream until the stop event; every failure inside a session becomes a reconnect."""
        log.info("producer starting", extra={"url": self._url, "symbols": ",".join(self._settings.symbols),
                                            "stream": self._settings.stream})
        self._announce_loaded_gaps()
        while not self._stop.is_set():
            try:
                self._session()
            except _Reconnect as reconnect:
                metrics.RECONNECTS.labels(reconnect.reason).inc()
                if reconnect.immediately:
                    self._backoff.reset()
                    continue
                self._wait_before_reconnect(reconnect.reason)
            except Exception as exc:  # whatever broke, the answer is a new session
                self._session_failed(exc)
                metrics.RECONNECTS.labels("error").inc()
                self._wait_before_reconnect(f"{type(exc).__name__}: {exc}")

    def _wait_before_reconnect(self, reason: str) -> None:
        delay = self._backoff.next_delay()
        log.warning("connection lost; reconnecting", extra={"reason": reason, "delay_s": round(delay, 2)})
        self._stop.wait(delay)

    def _session_failed(self, exc: Exception) -> None:
        self.session_errors += 1
        metrics.SESSION_ERRORS.labels(type(exc).__name__).inc()
        if self.session_errors <= 10 or self.session_errors % SESSION_ERROR_LOG_EVERY == 0:
            log.error("unexpected error in the session; reconnecting", exc_info=exc,
                      extra={"error": type(exc).__name__, "count": self.session_errors})

    def _session(self) -> None:
        try:
            # recv() decodes text frames as UTF-8 anyway; the pure-Python pre-check costs ~3x throughput.
            ws = websocket.create_connection(self._url, timeout=10, enable_multithread=False,
                                             skip_utf8_validation=True)
        except (websocket.WebSocketException, OSError) as exc:
            raise _Reconnect(f"connect failed: {exc}", immediately=False) from None
        metrics.CONNECTED.set(1)
        opened = time.monotonic()
        log.info("connected", extra={"url": self._url})
        try:
            ws.settimeout(RECV_TIMEOUT_S)
            # Trades made while we were away are on REST only: catch up before reading on.
            self._catch_up()
            self._backoff.reset()
            while not self._stop.is_set():
                now = time.monotonic()
                if now - opened > self._settings.max_connection_age_s:
                    log.info("planned reconnect before Binance's 24 h cut-off")
                    raise _Reconnect("max-age", immediately=True)
                self._between_frames(now)
                try:
                    frame = ws.recv()
                except websocket.WebSocketTimeoutException:
                    continue
                except (websocket.WebSocketException, OSError) as exc:
                    raise _Reconnect(f"{type(exc).__name__}: {exc}", immediately=False) from None
                if frame == "" and not ws.connected:
                    raise _Reconnect("closed by server", immediately=False)
                self._on_frame(frame)
        finally:
            metrics.CONNECTED.set(0)
            ws.close(timeout=1)

    def _between_frames(self, now: float) -> None:
        """Housekeeping that must not wait for a quiet stream: delivery reports, pending gaps,
        the state file. Cheap when there is nothing to do (this runs once per frame)."""
        if self._progress.pending:
            self._retry_pending(now)
        if self._state_file is not None and self._state_file.due(now):
            self._publisher.poll()
            self._state_file.maybe_save(self._progress, now=now, saved_at=now_ms())

    # -- frames -------------------------------------------------------------------------------
    def _on_frame(self, frame: str | bytes) -> None:
        metrics.FRAMES.inc()
        ingest_time = now_ms()
        try:
            event = unwrap(frame)
            if isinstance(event, ServerShutdown):
                log.warning("server announced shutdown; reconnecting now")
                raise _Reconnect("server-shutdown", immediately=True)
            if event.get("e") not in STREAMS:
                log.debug("ignoring event", extra={"event": event.get("e")})
                return
            trade = trade_from_binance(event, ingest_time=ingest_time)
        except ContractError as exc:
            self.malformed += 1
            metrics.MALFORMED.inc()
            # The first few in full, then one in a thousand: a broken feed must not flood the journal.
            if self.malformed <= 10 or self.malformed % 1000 == 0:
                log.warning("malformed frame skipped", extra={"reason": exc.reason, "field": exc.field,
                                                              "frame": str(frame)[:200], "count": self.malformed})
            return
        if trade.symbol not in self._symbols:
            return
        missing = self._ids.missing_before(trade.symbol, trade.trade_id)
        if missing is not None:
            self._fill(missing)
        self.accept(trade, source="ws")

    def accept(self, trade: Trade, *, source: str) -> None:
        if not self._ids.is_new(trade.symbol, trade.trade_id):
            metrics.REPEATS.labels(trade.symbol).inc()
            return
        self._publisher.publish(trade)
        self._ids.advance(trade.symbol, trade.trade_id)
        published, last_time = self._series(trade.symbol, source)
        published.inc()
        last_time.set(trade.trade_time / 1000)

    def _series(self, symbol: str, source: str) -> tuple[Any, Any]:
        """Metric children per (symbol, source), looked up once: this runs for every trade."""
        key = (symbol, source)
        series = self._metric_series.get(key)
        if series is None:
            series = (metrics.PUBLISHED.labels(symbol, source), metrics.LAST_TRADE_TIME.labels(symbol))
            self._metric_series[key] = series
        return series

    # -- gaps ---------------------------------------------------------------------------------
    def _catch_up(self) -> None:
        """Fill what was traded since the last id we know, up to the newest trade REST has.

        The range is exact (one cheap request asks for the newest id), so it follows the same
        rule as a jump in the stream (:meth:`_fill`). If the newest id cannot be read, the first
        live trade of the symbol reveals the range instead.
        """
        unknown: list[str] = []
        error = ""
        for symbol, last_id in sorted(self._ids.last_ids.items()):
            try:
                newest = self._rest.newest_id(symbol)
            except _REST_FAILURES as exc:
                unknown.append(symbol)
                error = f"{type(exc).__name__}: {exc}"
                continue
            if newest is not None and newest > last_id:
                log.info("catching up", extra={"symbol": symbol, "from_id": last_id + 1, "to_id": newest})
                self._fill(Missing(symbol, last_id + 1, newest))
        if unknown:
            # One line for all of them: with many symbols and REST throttled, one each would flood.
            log.warning("cannot read the newest trade id; the first live trade will show the gap",
                        extra={"symbols": ",".join(unknown), "error": error})

    def _fill(self, missing: Missing) -> None:
        """Fetch and publish a range at once; a range REST cannot give now becomes pending, one
        it can never give (or larger than the fill limit) is recorded as a gap. All or nothing
        for the limit: a range larger than it is not fetched at all, so that the record is exact.
        """
        if missing.size > self._settings.gap_fill_max_trades:
            self._record_gap(missing, f"gap of {missing.size} trades exceeds the fill limit "
                                      f"({self._settings.gap_fill_max_trades})")
            return
        try:
            next_id = self._fetch(missing, publish=lambda trade: self.accept(trade, source="rest"))
        except GapFillError as exc:
            rest = Missing(missing.symbol, exc.from_id, missing.to_id)
            if exc.retryable:
                self._add_pending(rest, exc.reason, retry_after_s=exc.retry_after_s)
            else:
                self._record_gap(rest, exc.reason)
            return
        if next_id <= missing.to_id:
            # REST did not have them all (should not happen on Binance): record the rest.
            self._record_gap(Missing(missing.symbol, next_id, missing.to_id), "not returned by REST")
        log.info("filled gap", extra={"symbol": missing.symbol, "from_id": missing.from_id,
                                      "to_id": missing.to_id, "trades": next_id - missing.from_id})

    def _fetch(self, missing: Missing, *, publish: Callable[[Trade], None], attempts: int = REST_ATTEMPTS) -> int:
        """Publish trades ``missing.from_id``..``to_id`` from REST; returns the first id not published.

        Raises:
            GapFillError: REST failed from ``from_id`` on; ``retryable`` says whether to try later.
        """
        backoff = Backoff(0.2, INLINE_RETRY_MAX_S)
        attempt = 0
        next_id = missing.from_id
        while True:
            try:
                for trade in self._rest.trades(missing.symbol, next_id, missing.to_id, ingest_time=now_ms()):
                    publish(trade)
                    metrics.GAP_TRADES_FILLED.labels(missing.symbol).inc()
                    next_id = trade.trade_id + 1
                return next_id
            except _REST_FAILURES as exc:
                attempt += 1
                retryable = is_retryable_rest(exc)
                wait = max(backoff.next_delay(), exc.wait_s if isinstance(exc, RestThrottled) else 0.0)
                if isinstance(exc, RestThrottled):
                    metrics.REST_THROTTLED.labels(exc.kind).inc()
                if (not retryable or attempt >= attempts or wait > INLINE_RETRY_MAX_S
                        or self._stop.is_set()):
                    raise GapFillError(missing.symbol, next_id, missing.to_id, f"{type(exc).__name__}: {exc}",
                                       retryable=retryable, retry_after_s=wait) from exc
                self._stop.wait(wait)

    def _record_gap(self, missing: Missing, reason: str) -> None:
        metrics.GAPS_UNFILLED.labels(missing.symbol).inc()
        log.error("gap not filled", extra={"symbol": missing.symbol, "from_id": missing.from_id,
                                           "to_id": missing.to_id, "reason": reason})
        self._publish_gap(missing, reason, pending=False)
        # Move on: the next trades are new again.
        self._ids.advance(missing.symbol, missing.to_id)

    def _publish_gap(self, missing: Missing, reason: str, *, pending: bool, detected_at: int | None = None) -> None:
        self._publisher.publish(Gap(symbol=missing.symbol, stream=self._settings.stream, from_id=missing.from_id,
                                    to_id=missing.to_id, reason=reason, detected_at=detected_at or now_ms(),
                                    pending=pending))

    # -- pending gaps -------------------------------------------------------------------------
    def _add_pending(self, missing: Missing, reason: str, *, retry_after_s: float | None) -> None:
        """Announce the range once as pending, remember it (and in the state file), move on."""
        detected_at = now_ms()
        gap = PendingGap(missing.symbol, missing.from_id, missing.to_id, reason, detected_at, attempts=1,
                         due=time.monotonic() + pending_retry_delay_s(0, retry_after_s=retry_after_s))
        self._progress.add_pending(gap)
        metrics.PENDING_GAPS.set(len(self._progress.pending))
        log.warning("gap pending: REST cannot give it yet; retrying between frames", extra={
            "symbol": missing.symbol, "from_id": missing.from_id, "to_id": missing.to_id, "reason": reason,
            "retry_in_s": round(gap.due - time.monotonic(), 2)})
        self._publish_gap(missing, reason, pending=True, detected_at=detected_at)
        self._ids.advance(missing.symbol, missing.to_id)

    def _announce_loaded_gaps(self) -> None:
        """Gaps pending at the last stop: announce them again (the first message may not have
        reached the broker) and retry them at once."""
        for gap in self._progress.pending.values():
            self._publish_gap(gap.unpublished(), gap.reason, pending=True, detected_at=gap.detected_at)
        metrics.PENDING_GAPS.set(len(self._progress.pending))

    def _retry_pending(self, now: float) -> None:
        """One turn for the most overdue pending gap, at most :data:`PENDING_TURN_TRADES` trades."""
        due = [gap for gap in self._progress.pending.values() if not gap.published and gap.due <= now]
        if not due:
            return
        gap = min(due, key=lambda g: g.due)
        limit = self._settings.gap_fill_max_trades
        if gap.unpublished().size > limit:
            # Only when the limit was lowered since the gap was found (e.g. loaded from the state file).
            self._give_up(gap, gap.cursor, f"gap of {gap.unpublished().size} trades exceeds the fill limit ({limit})")
            return
        chunk = Missing(gap.symbol, gap.cursor, min(gap.to_id, gap.cursor + PENDING_TURN_TRADES - 1))
        try:
            next_id = self._fetch(chunk, publish=lambda trade: self._publish_fill(trade, gap), attempts=1)
        except GapFillError as exc:
            self._pending_failed(gap, exc, now)
            return
        if next_id <= chunk.to_id:
            # REST has nothing from here on: the rest of the range is lost for good. Recording
            # all of it (to the gap's end) lets its acknowledgement end the pending gap.
            gap.cursor = gap.to_id + 1
            self._record_gap(Missing(gap.symbol, next_id, gap.to_id), "not returned by REST")
        gap.due = now
        if gap.published:
            log.info("pending gap filled", extra={"symbol": gap.symbol, "to_id": gap.to_id,
                                                  "attempts": gap.attempts, "trades": gap.filled})

    def _pending_failed(self, gap: PendingGap, exc: GapFillError, now: float) -> None:
        if not exc.retryable:
            self._give_up(gap, exc.from_id, exc.reason)
            return
        delay = pending_retry_delay_s(gap.attempts, retry_after_s=exc.retry_after_s)
        gap.attempts += 1
        gap.due = now + delay
        gap.reason = exc.reason
        log.info("pending gap still unavailable", extra={"symbol": gap.symbol, "from_id": gap.cursor,
                                                         "to_id": gap.to_id, "reason": exc.reason,
                                                         "retry_in_s": round(delay, 2)})

    def _give_up(self, gap: PendingGap, from_id: int, reason: str) -> None:
        """The rest of ``gap`` will never come: its final record replaces the pending one (the
        progress drops the gap once this message is acknowledged)."""
        gap.cursor = gap.to_id + 1
        metrics.GAPS_UNFILLED.labels(gap.symbol).inc()
        log.error("pending gap cannot be filled", extra={"symbol": gap.symbol, "from_id": from_id,
                                                         "to_id": gap.to_id, "reason": reason})
        self._publish_gap(Missing(gap.symbol, from_id, gap.to_id), reason, pending=False, detected_at=gap.detected_at)

    def _publish_fill(self, trade: Trade, gap: PendingGap) -> None:
        if gap.cursor <= trade.trade_id <= gap.to_id:
            self._publisher.publish(trade)
            gap.cursor = trade.trade_id + 1
            gap.filled += 1
            self._series(trade.symbol, "rest")[0].inc()
