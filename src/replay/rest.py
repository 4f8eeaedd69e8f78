"""The REST endpoints of ``/api/v3`` the producer uses, over what the feed has published.

Only published trades are visible, as on the real market. Parameter errors use Binance's codes
and messages. Pure: the server turns a :class:`RestResponse` into HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from candlestack.replay.events import agg_trade_row, historical_trade_row
from candlestack.replay.feed import Feed, SymbolHistory
from candlestack.replay.klines import KLINE_INTERVALS_MS, kline_rows, open_times
from candlestack.replay.model import ReplayTrade

DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
# Binance refuses a startTime..endTime window of an hour or more on /api/v3/aggTrades.
MAX_WINDOW_MS = 3_600_000

_UNSIGNED = re.compile(r"^[0-9]{1,20}$")
_SYMBOL = re.compile(r"^[A-Z0-9\-_.]{1,20}$")


@dataclass(frozen=True, slots=True)
class RestResponse:
    status: int
    body: Any


class _BadRequest(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def error(status: int, code: int, msg: str) -> RestResponse:
    return RestResponse(status, {"code": code, "msg": msg})


class _Params:
    def __init__(self, query: str) -> None:
        self._values = {key: values[0] for key, values in parse_qs(query, keep_blank_values=True).items()}

    def unsigned(self, name: str) -> int | None:
        raw = self._values.get(name)
        if raw is None:
            return None
        if not _UNSIGNED.match(raw):
            raise _BadRequest(
                -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
            )
        return int(raw)

    def limit(self) -> int:
        value = self.unsigned("limit")
        if value is None:
            return DEFAULT_LIMIT
        if not 1 <= value <= MAX_LIMIT:
            raise _BadRequest(-1130, "Data sent for parameter 'limit' is not valid.")
        return value

    def interval_ms(self) -> int:
        raw = self._values.get("interval", "")
        if not raw:
            raise _BadRequest(-1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        step = KLINE_INTERVALS_MS.get(raw)
        if step is None:
            raise _BadRequest(-1120, "Invalid interval.")
        return step

    def history(self, feed: Feed) -> SymbolHistory:
        raw = self._values.get("symbol", "")
        if not raw:
            raise _BadRequest(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if not _SYMBOL.match(raw):
            raise _BadRequest(
                -1100, "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'."
            )
        history = feed.history.get(raw)
        if history is None:
            raise _BadRequest(-1121, "Invalid symbol.")
        return history


def _ping(_feed: Feed, _params: _Params, _now_ms: int) -> dict[str, Any]:
    return {}


def _time(_feed: Feed, _params: _Params, now_ms: int) -> dict[str, Any]:
    return {"serverTime": now_ms}


def _agg_trades(feed: Feed, params: _Params, _now_ms: int) -> list[dict[str, Any]]:
    history = params.history(feed)
    limit = params.limit()
    from_id = params.unsigned("fromId")
    start, end = params.unsigned("startTime"), params.unsigned("endTime")
    if from_id is not None and (start is not None or end is not None):
        raise _BadRequest(-1128, "Combination of optional parameters invalid.")
    if start is not None and end is not None and end - start >= MAX_WINDOW_MS:
        raise _BadRequest(-1127, "More than 1 hours between startTime and endTime.")
    trades: list[ReplayTrade]
    if from_id is not None:
        trades = history.from_id(from_id, limit)
    elif start is not None or end is not None:
        trades = history.between(start, end, limit)
    else:
        trades = history.recent(limit)
    return [agg_trade_row(trade) for trade in trades]


def _historical_trades(feed: Feed, params: _Params, _now_ms: int) -> list[dict[str, Any]]:
    history = params.history(feed)
    limit = params.limit()
    from_id = params.unsigned("fromId")
    trades = history.recent(limit) if from_id is None else history.from_id(from_id, limit)
    return [historical_trade_row(trade) for trade in trades]


def _recent_trades(feed: Feed, params: _Params, _now_ms: int) -> list[dict[str, Any]]:
    history = params.history(feed)
    return [historical_trade_row(trade) for trade in history.recent(params.limit())]


def klines(feed: Feed, params: _Params, _now_ms: int) -> list[list[object]]:
    """``/api/v3/klines``: the klines of what has been published, the open one included."""
    history = params.history(feed)
    step = params.interval_ms()
    limit = params.limit()
    start, end = params.unsigned("startTime"), params.unsigned("endTime")
    if start is not None and end is not None and start > end:
        raise _BadRequest(-1023, "Start time is greater than end time.")
    span = history.time_span()
    if span is None:
        return []
    opens = open_times(*span, step, start_ms=start, end_ms=end, limit=limit)
    if not opens:
        return []
    trades = history.during(opens[0], opens[-1] + step)
    return kline_rows(trades, opens, history.price_before(opens[0]))


_ROUTES: dict[str, Callable[[Feed, _Params, int], Any]] = {
    "/api/v3/ping": _ping,
    "/api/v3/time": _time,
    "/api/v3/aggTrades": _agg_trades,
    "/api/v3/historicalTrades": _historical_trades,
    "/api/v3/trades": _recent_trades,
    "/api/v3/klines": klines,
}


def is_rest_path(path: str) -> bool:
    return urlsplit(path).path.startswith("/api/")


def handle(feed: Feed, method: str, path: str, *, now_ms: int) -> RestResponse:
    """Answer one ``/api/...`` request."""
    parts = urlsplit(path)
    route = parts.path.rstrip("/")
    handler = _ROUTES.get(route)
    if handler is None:
        return error(404, -1, f"Unknown endpoint {route}.")
    if method != "GET":
        return error(405, -1, f"{method} is not allowed on {route}.")
    try:
        return RestResponse(200, handler(feed, _Params(parts.query), now_ms))
    except _BadRequest as exc:
        return error(400, exc.code, exc.msg)
