"""Trades as Binance writes them: stream events, combined-stream frames, REST rows, and the junk
frames fault injection sends. Pure functions.

Serving a source on the other stream type:

- a raw trade (trades file, synthetic) on an ``@aggTrade`` stream is an aggregate of itself:
  ``a = f = l = id``;
- an aggregate (aggTrades file) on an ``@trade`` stream is one trade per aggregate with
  ``t = aggId`` (its quantity is the aggregate's total). Raw trade ids ``f..l`` are not
  expanded: the price of each raw trade is known but not its own quantity.

Event time ``E`` equals trade time ``T`` (both shifted by ``--retime``).
"""

from __future__ import annotations

import json
from typing import Any

from candlestack.core.contract import StreamType
from candlestack.replay.model import ReplayTrade
from candlestack.replay.sources import quote_qty
from candlestack.replay.streams import Stream


def trade_event(trade: ReplayTrade) -> dict[str, Any]:
    """A ``trade`` event (the ``data`` of an ``@trade`` frame)."""
    return {
        "e": "trade", "E": trade.time, "s": trade.symbol, "t": trade.trade_id, "p": trade.price,
        "q": trade.qty, "T": trade.time, "m": trade.is_buyer_maker, "M": True,
    }


def agg_trade_event(trade: ReplayTrade) -> dict[str, Any]:
    """An ``aggTrade`` event (the ``data`` of an ``@aggTrade`` frame)."""
    return {
        "e": "aggTrade", "E": trade.time, "s": trade.symbol, "a": trade.trade_id, "p": trade.price,
        "q": trade.qty, "f": trade.first_id, "l": trade.last_id, "T": trade.time, "m": trade.is_buyer_maker,
        "M": True,
    }


def event(trade: ReplayTrade, kind: StreamType) -> dict[str, Any]:
    return trade_event(trade) if kind == "trade" else agg_trade_event(trade)


def encode_frame(trade: ReplayTrade, kind: StreamType, stream: str | None) -> bytes:
    """The frame of ``trade`` on a stream of ``kind``: wrapped as ``{"stream","data"}`` when
    ``stream`` names a combined stream, bare when it is None.

    Byte for byte ``json.dumps(..., separators=(",", ":"))`` of :func:`event`, written with
    string formatting because it runs for every trade and every connection. That is safe because
    every string in it was validated on the way in (symbols and stream names by pattern, prices
    and quantities as plain decimals).
    """
    maker = "true" if trade.is_buyer_maker else "false"
    if kind == "trade":
        body = (
            f'{{"e":"trade","E":{trade.time},"s":"{trade.symbol}","t":{trade.trade_id},"p":"{trade.price}",'
            f'"q":"{trade.qty}","T":{trade.time},"m":{maker},"M":true}}'
        )
    else:
        body = (
            f'{{"e":"aggTrade","E":{trade.time},"s":"{trade.symbol}","a":{trade.trade_id},"p":"{trade.price}",'
            f'"q":"{trade.qty}","f":{trade.first_id},"l":{trade.last_id},"T":{trade.time},"m":{maker},"M":true}}'
        )
    if stream is not None:
        body = f'{{"stream":"{stream}","data":{body}}}'
    return body.encode()


def agg_trade_row(trade: ReplayTrade) -> dict[str, Any]:
    """A row of ``GET /api/v3/aggTrades``."""
    return {
        "a": trade.trade_id, "p": trade.price, "q": trade.qty, "f": trade.first_id, "l": trade.last_id,
        "T": trade.time, "m": trade.is_buyer_maker, "M": True,
    }


def historical_trade_row(trade: ReplayTrade) -> dict[str, Any]:
    """A row of ``GET /api/v3/historicalTrades`` and ``/api/v3/trades``."""
    return {
        "id": trade.trade_id, "price": trade.price, "qty": trade.qty, "quoteQty": quote_qty(trade),
        "time": trade.time, "isBuyerMaker": trade.is_buyer_maker, "isBestMatch": True,
    }


SHUTDOWN_STREAM = "!serverShutdown"


def server_shutdown_frame(event_time: int, *, combined: bool) -> bytes:
    """Binance's ``serverShutdown`` event.

    As documented for the spot market data streams: bare ``{"e":"serverShutdown","E":ms}`` on a
    raw ``/ws`` connection; on a combined ``/stream`` connection wrapped like any other event,
    under the stream name ``!serverShutdown``.
    """
    body: dict[str, Any] = {"e": "serverShutdown", "E": event_time}
    if combined:
        body = {"stream": SHUTDOWN_STREAM, "data": body}
    return json.dumps(body, separators=(",", ":")).encode()


MALFORMED_VARIANTS = 4


def malformed_frame(number: int, stream: Stream | None, *, combined: bool) -> bytes:
    """Junk a client must survive, cycling through kinds as ``number`` grows.

    0: JSON cut short; 1: not JSON at all; 2 and 3: well-formed JSON of a trade event of the
    connection's stream with fields of the wrong type (ids and times as strings, price as a
    number, ``m`` as a string), which :func:`candlestack.core.contract.trade_from_binance` refuses.
    """
    name = stream.name if stream is not None else "btcusdt@trade"
    symbol = stream.symbol if stream is not None else "BTCUSDT"
    kind = stream.kind if stream is not None else "trade"
    variant = number % MALFORMED_VARIANTS
    if variant == 0:
        cut = f'{{"e":"{kind}","E":17'
        return (f'{{"stream":"{name}","data":{cut}' if combined else cut).encode()
    if variant == 1:
        return b"<html><body>502 Bad Gateway</body></html>"
    body: dict[str, Any]
    id_field = "t" if kind == "trade" else "a"
    if variant == 2:
        body = {"e": kind, "E": "1570752011620", "s": symbol, id_field: "13519807", "p": 0.00141342,
                "q": "23.00000000", "T": 1570752011620, "m": "true", "M": True}
    else:
        body = {"e": kind, "E": 1570752011620, "s": symbol, id_field: 13519807.5, "p": "0.00141342",
                "q": None, "T": "yesterday", "m": 1, "M": True}
    if kind == "aggTrade":
        body.update(f=[1], l={"id": 2})
    if combined:
        body = {"stream": name, "data": body}
    return json.dumps(body, separators=(",", ":")).encode()
