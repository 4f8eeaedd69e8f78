"""The producer's connection loop: read the combined stream, publish, reconnect, fill gaps."""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
from typing import Any

import websocket

from candlestack.backoff import Backoff
from candlestack.contract import Gap, Trade, trade_from_binance
from candlestack.errors import ContractError, GapFillError
from candlestack.settings import ProducerSettings
from producer import metrics
from producer.binance import RestClient, ServerShutdown, combined_stream_url, is_retryable_http, unwrap
from producer.gaps import IdTracker, Missing
from producer.publisher import Publisher

log = logging.getLogger(__name__)

# recv() wakes up this often to notice SIGTERM and the connection age.
RECV_TIMEOUT_S = 1.0
REST_ATTEMPTS = 5


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Reconnect(Exception):
    def __init__(self, reason: str, *, immediately: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.immediately = immediately


class TradeStream:
    """Owns the WebSocket; every trade goes through :meth:`accept` exactly once in id order."""

    def __init__(self, settings: ProducerSettings, publisher: Publisher, *, stop: threading.Event) -> None:
        self._settings = settings
        self._publisher = publisher
        self._stop = stop
        self._url = combined_stream_url(settings.ws_url, settings.symbols, settings.stream)
        self._rest = RestClient(settings.rest_url, settings.stream)
        self._ids = IdTracker()
        self._backoff = Backoff(settings.reconnect_initial_s, settings.reconnect_max_s)
        self._symbols = set(settings.symbols)
        self.malformed = 0
        self._metric_series: dict[tuple[str, str], tuple[Any, Any]] = {}

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        log.info("producer starting", extra={"url": self._url, "symbols": ",".join(self._settings.symbols),
                                            "stream": self._settings.stream})
        while not self._stop.is_set():
            try:
                self._session()
            except _Reconnect as reconnect:
                metrics.RECONNECTS.labels(reconnect.reason).inc()
                if reconnect.immediately:
                    self._backoff.reset()
                    continue
                delay = self._backoff.next_delay()
                log.warning("connection lost; reconnecting", extra={"reason": reconnect.reason,
                                                                    "delay_s": round(delay, 2)})
                self._stop.wait(delay)

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
                if time.monotonic() - opened > self._settings.max_connection_age_s:
                    log.info("planned reconnect before Binance's 24 h cut-off")
                    raise _Reconnect("max-age", immediately=True)
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

    # -- frames -------------------------------------------------------------------------------
    def _on_frame(self, frame: str | bytes) -> None:
        metrics.FRAMES.inc()
        ingest_time = now_ms()
        try:
            event = unwrap(frame)
            if isinstance(event, ServerShutdown):
                log.warning("server announced shutdown; reconnecting now")
                raise _Reconnect("server-shutdown", immediately=True)
            if event.get("e") not in ("trade", "aggTrade"):
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
            self._fill(missing, ingest_time=ingest_time)
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
        for symbol, last_id in sorted(self._ids.last_ids.items()):
            try:
                fetched = self._fetch(symbol, last_id + 1, None, limit=self._settings.gap_fill_max_trades)
            except GapFillError as exc:
                log.error("catch-up after reconnect failed", extra={"symbol": symbol, "reason": exc.reason})
                continue
            if fetched:
                log.info("caught up after reconnect", extra={"symbol": symbol, "trades": fetched})

    def _fill(self, missing: Missing, *, ingest_time: int) -> None:
        if missing.size > self._settings.gap_fill_max_trades:
            self._record_gap(missing, f"gap of {missing.size} trades exceeds the fill limit "
                                      f"({self._settings.gap_fill_max_trades})")
            return
        try:
            fetched = self._fetch(missing.symbol, missing.from_id, missing.to_id, limit=missing.size)
        except GapFillError as exc:
            self._record_gap(Missing(missing.symbol, exc.from_id, missing.to_id), exc.reason)
            return
        if self._ids.last_ids.get(missing.symbol, -1) < missing.to_id:
            # REST did not have them all (should not happen on Binance): record the rest.
            start = self._ids.last_ids.get(missing.symbol, missing.from_id - 1) + 1
            self._record_gap(Missing(missing.symbol, start, missing.to_id), "not returned by REST")
        log.info("filled gap", extra={"symbol": missing.symbol, "from_id": missing.from_id,
                                      "to_id": missing.to_id, "trades": fetched})

    def _fetch(self, symbol: str, from_id: int, to_id: int | None, *, limit: int) -> int:
        """Publish trades from_id..to_id from REST; returns how many were published."""
        published = 0
        backoff = Backoff(0.2, 5.0)
        attempt = 0
        next_id = from_id
        while True:
            try:
                for trade in self._rest.trades(symbol, next_id, to_id, ingest_time=now_ms()):
                    self.accept(trade, source="rest")
                    metrics.GAP_TRADES_FILLED.labels(symbol).inc()
                    next_id = trade.trade_id + 1
                    published += 1
                    if published >= limit:
                        return published
                return published
            except (urllib.error.URLError, TimeoutError, ConnectionError, ContractError, ValueError) as exc:
                attempt += 1
                retryable = not isinstance(exc, ContractError | ValueError) and is_retryable_http(exc)
                if not retryable or attempt >= REST_ATTEMPTS or self._stop.is_set():
                    raise GapFillError(symbol, next_id, to_id if to_id is not None else next_id, str(exc)) from exc
                self._stop.wait(backoff.next_delay())

    def _record_gap(self, missing: Missing, reason: str) -> None:
        metrics.GAPS_UNFILLED.labels(missing.symbol).inc()
        log.error("gap not filled", extra={"symbol": missing.symbol, "from_id": missing.from_id,
                                           "to_id": missing.to_id, "reason": reason})
        self._publisher.publish(Gap(symbol=missing.symbol, stream=self._settings.stream, from_id=missing.from_id,
                                    to_id=missing.to_id, reason=reason, detected_at=now_ms()))
        # Move on: the next trades are new again.
        self._ids.advance(missing.symbol, missing.to_id)
