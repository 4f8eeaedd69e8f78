"""Binance protocol details: stream URLs, frame unwrapping and the REST trade lists.

Pure functions plus one small REST client; the connection loop lives in :mod:`producer.stream`.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from candlestack.contract import StreamType, Trade, trade_from_rest
from candlestack.errors import ContractError

log = logging.getLogger(__name__)

REST_PAGE_LIMIT = 1000


def combined_stream_url(base_url: str, symbols: tuple[str, ...], stream: StreamType) -> str:
    """``wss://host:9443/stream?streams=btcusdt@trade/ethusdt@trade``."""
    streams = "/".join(f"{symbol.lower()}@{stream}" for symbol in symbols)
    return f"{base_url.rstrip('/')}/stream?streams={streams}"


@dataclass(frozen=True, slots=True)
class ServerShutdown:
    """Binance announced it is about to close the connection."""

    event_time: int | None


def unwrap(frame: str | bytes) -> dict[str, Any] | ServerShutdown:
    """Return the event inside a frame (combined ``{"stream","data"}`` envelope or bare).

    Raises:
        ContractError: the frame is not a JSON object.
    """
    try:
        body = json.loads(frame)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError("frame", f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ContractError("frame", "not a JSON object")
    data = body.get("data", body) if "stream" in body else body
    if not isinstance(data, dict):
        raise ContractError("data", "event is not a JSON object")
    if data.get("e") == "serverShutdown":
        event_time = data.get("E")
        return ServerShutdown(event_time if isinstance(event_time, int) else None)
    return data


def is_retryable_http(exc: Exception) -> bool:
    """Whether a REST failure is worth another try."""
    if isinstance(exc, urllib.error.HTTPError):
        # 429: request weight exceeded; 418: IP banned for a while after ignoring 429s;
        # 5xx: Binance's own trouble. Other 4xx are our mistake and will not heal.
        return exc.code in (418, 429) or exc.code >= 500
    # URLError (DNS, refused, reset) and socket timeouts are transient network trouble.
    return isinstance(exc, urllib.error.URLError | TimeoutError | ConnectionError)


class RestClient:
    """Reads the trade lists that fill gaps: ``/api/v3/aggTrades`` or ``/api/v3/historicalTrades``."""

    def __init__(self, base_url: str, stream: StreamType, *, timeout_s: float = 10.0) -> None:
        self._base_url = base_url.rstrip("/")
        self._stream = stream
        self._timeout_s = timeout_s

    def page(self, symbol: str, from_id: int, *, limit: int = REST_PAGE_LIMIT) -> list[dict[str, Any]]:
        path = "/api/v3/aggTrades" if self._stream == "aggTrade" else "/api/v3/historicalTrades"
        query = urllib.parse.urlencode({"symbol": symbol, "fromId": from_id, "limit": limit})
        with urllib.request.urlopen(f"{self._base_url}{path}?{query}", timeout=self._timeout_s) as response:
            rows = json.load(response)
        if not isinstance(rows, list):
            raise ContractError("rest", f"expected a JSON list from {path}")
        return rows

    def trades(self, symbol: str, from_id: int, to_id: int | None, *, ingest_time: int) -> Iterator[Trade]:
        """Trades ``from_id``..``to_id`` in id order; ``to_id=None`` reads up to the newest.

        Stops early when the server has nothing more (a page shorter than asked for).
        """
        next_id = from_id
        while to_id is None or next_id <= to_id:
            rows = self.page(symbol, next_id)
            for row in rows:
                trade = trade_from_rest(row, symbol=symbol, stream=self._stream, ingest_time=ingest_time)
                if trade.trade_id < next_id:
                    continue
                if to_id is not None and trade.trade_id > to_id:
                    return
                next_id = trade.trade_id + 1
                yield trade
            if len(rows) < REST_PAGE_LIMIT:
                return
