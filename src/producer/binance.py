"""Binance protocol details: stream URLs, frame unwrapping and the REST trade lists.

Pure functions plus one small REST client; the connection loop lives in :mod:`candlestack.producer.stream`.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from candlestack.core.contract import StreamType, Trade, trade_from_rest
from candlestack.core.errors import ContractError
from candlestack.core.rest_weight import RestBudget, RestThrottled, check_budget, get_json_list

log = logging.getLogger(__name__)

REST_PAGE_LIMIT = 1000
# Request weight of one call, whatever its limit (Binance spot API docs, market data endpoints).
HISTORICAL_TRADES_WEIGHT = 25
AGG_TRADES_WEIGHT = 4


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
        body = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:  # also invalid UTF-8
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


def is_retryable_rest(exc: BaseException) -> bool:
    """Whether a REST failure is worth another try later."""
    if isinstance(exc, RestThrottled):
        return True
    if isinstance(exc, urllib.error.HTTPError):
        # 429: request weight exceeded; 418: IP banned for a while after ignoring 429s;
        # 5xx: Binance's own trouble. Other 4xx are our mistake and will not heal.
        return exc.code in (418, 429) or exc.code >= 500
    # URLError (DNS, refused, reset), ssl.SSLError, socket timeouts: all OSError, all transient.
    # IncompleteRead / BadStatusLine: the connection broke mid-answer. A JSONDecodeError is a
    # body cut short the same way. A ContractError (a well-formed row we refuse) will not heal.
    return isinstance(exc, OSError | http.client.HTTPException | json.JSONDecodeError)


def page_weight(stream: StreamType) -> int:
    return AGG_TRADES_WEIGHT if stream == "aggTrade" else HISTORICAL_TRADES_WEIGHT


class RestClient:
    """Reads the trade lists that fill gaps: ``/api/v3/aggTrades`` or ``/api/v3/historicalTrades``.

    Every request first asks the :class:`RestBudget`; a request that would exceed it, or that the
    server answers with 429/418, raises :class:`RestThrottled` instead of being sent or repeated.
    """

    def __init__(self, base_url: str, stream: StreamType, *, budget: RestBudget, timeout_s: float = 10.0,
                 wall: Callable[[], float] = time.time) -> None:
        self._base_url = base_url.rstrip("/")
        self._stream = stream
        self._timeout_s = timeout_s
        self._path = "/api/v3/aggTrades" if stream == "aggTrade" else "/api/v3/historicalTrades"
        self._cost = page_weight(stream)
        self.budget = budget
        self._wall = wall

    def page(self, symbol: str, from_id: int | None, *, limit: int = REST_PAGE_LIMIT) -> list[dict[str, Any]]:
        """One page from ``from_id``, or the newest trades when ``from_id`` is None.

        Raises:
            RestThrottled: the budget or the server says wait.
            ContractError: the answer is not a JSON list.
        """
        now = self._wall()
        check_budget(self.budget, self._cost, now)
        params: dict[str, Any] = {"symbol": symbol, "limit": limit}
        if from_id is not None:
            params["fromId"] = from_id
        return get_json_list(self._base_url, self._path, params, budget=self.budget, cost=self._cost, now=now,
                             timeout_s=self._timeout_s)

    def newest_id(self, symbol: str) -> int | None:
        """The id of the newest trade of ``symbol``, None if it has none."""
        rows = self.page(symbol, None, limit=1)
        if not rows:
            return None
        return trade_from_rest(rows[-1], symbol=symbol, stream=self._stream, ingest_time=int(self._wall() * 1000)
                               ).trade_id

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
