"""The wire contract: one versioned message per trade (or per unfillable gap), keyed by symbol.

Producer and consumer both go through this module, so a message is validated the same way
on both sides. Prices and quantities stay exact decimal strings end to end; they are never
turned into floats.

A trade message, as JSON::

    {"v": 1, "kind": "trade", "symbol": "XRPETH", "stream": "aggTrade",
     "trade_id": 13519807, "first_trade_id": 15373518, "last_trade_id": 15373518,
     "price": "0.00141342", "qty": "23.00000000",
     "trade_time": 1570752011620, "event_time": 1570752011620,
     "buyer_is_maker": true, "ingest_time": 1700000000000}

A gap message records trade ids the producer could not recover::

    {"v": 1, "kind": "gap", "symbol": "XRPETH", "stream": "trade",
     "from_id": 100, "to_id": 250, "reason": "...", "detected_at": 1700000000000, "pending": false}
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from candlestack.errors import ContractError

VERSION = 1
STREAMS = ("trade", "aggTrade")
StreamType = Literal["trade", "aggTrade"]

SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{2,20}$")
# numeric(22,10) holds every Binance price and quantity (8 decimals) with room to spare; the
# aggregator reads them as DECIMAL(22,10) so that Spark keeps exact arithmetic.
DECIMAL_PATTERN = re.compile(r"^\d{1,12}(\.\d{1,10})?$")
# 2000-01-01 .. 2100-01-01 in ms: anything else is a unit mix-up (seconds or microseconds).
MIN_TIME_MS = 946_684_800_000
MAX_TIME_MS = 4_102_444_800_000


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade (or aggregate trade) as it travels from producer to consumer."""

    symbol: str
    stream: StreamType
    trade_id: int
    price: str
    qty: str
    trade_time: int
    event_time: int
    buyer_is_maker: bool
    ingest_time: int
    first_trade_id: int | None = None
    last_trade_id: int | None = None

    def to_json(self) -> bytes:
        # A literal dict rather than dataclasses.asdict(): this runs once per trade.
        return _dumps({
            "v": VERSION, "kind": "trade", "symbol": self.symbol, "stream": self.stream,
            "trade_id": self.trade_id, "price": self.price, "qty": self.qty, "trade_time": self.trade_time,
            "event_time": self.event_time, "buyer_is_maker": self.buyer_is_maker, "ingest_time": self.ingest_time,
            "first_trade_id": self.first_trade_id, "last_trade_id": self.last_trade_id,
        }).encode()

    @property
    def key(self) -> bytes:
        return self.symbol.encode()


@dataclass(frozen=True, slots=True)
class Gap:
    """A range of trade ids the producer knows it missed and could not fill."""

    symbol: str
    stream: StreamType
    from_id: int
    to_id: int
    reason: str
    detected_at: int
    # True while the producer still retries the fill (REST rate-limited or unreachable); a
    # later message for the same range with False means it gave up. Either way the database
    # marks the gap resolved once every id of the range is stored.
    pending: bool = False

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"v": VERSION, "kind": "gap", **asdict(self)}
        return json.dumps(body, separators=(",", ":")).encode()

    @property
    def key(self) -> bytes:
        return self.symbol.encode()


Message = Trade | Gap

_dumps = json.JSONEncoder(separators=(",", ":")).encode
_symbol_ok = SYMBOL_PATTERN.match
_decimal_ok = DECIMAL_PATTERN.match


def normalise_symbol(raw: str) -> str:
    """Upper-case a symbol and check its shape.

    Raises:
        ContractError: the symbol is not 2-20 letters/digits.
    """
    symbol = raw.strip().upper()
    if not SYMBOL_PATTERN.match(symbol):
        raise ContractError("symbol", f"bad symbol {raw!r}: expected 2-20 letters or digits")
    return symbol


def _require(body: dict[str, Any], field: str, kind: type | tuple[type, ...]) -> Any:
    if field not in body:
        raise ContractError(field, f"missing field {field!r}")
    value = body[field]
    # bool is a subclass of int: refuse true/false where a number is expected and vice versa.
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise ContractError(field, f"field {field!r} has type {type(value).__name__}")
    return value


def _decimal(body: dict[str, Any], field: str, *, positive: bool) -> str:
    value = _require(body, field, str)
    if not DECIMAL_PATTERN.match(value):
        raise ContractError(field, f"field {field!r} is not a decimal string fitting numeric(22,10): {value!r}")
    if positive and not value.strip("0.").strip():
        raise ContractError(field, f"field {field!r} must be positive: {value!r}")
    return value  # type: ignore[no-any-return]


def _time_ms(body: dict[str, Any], field: str) -> int:
    value: int = _require(body, field, int)
    if not MIN_TIME_MS <= value <= MAX_TIME_MS:
        raise ContractError(field, f"field {field!r} is not a millisecond timestamp: {value}")
    return value


def _trade_id(body: dict[str, Any], field: str, *, optional: bool = False) -> int | None:
    if optional and body.get(field) is None:
        return None
    value: int = _require(body, field, int)
    if value < 0:
        raise ContractError(field, f"field {field!r} is negative: {value}")
    return value


def _stream(body: dict[str, Any]) -> StreamType:
    stream = _require(body, "stream", str)
    if stream not in STREAMS:
        raise ContractError("stream", f"unknown stream type {stream!r}")
    return stream  # type: ignore[no-any-return]


def decode(payload: bytes | None) -> Message:
    """Parse and validate one Kafka message value.

    Raises:
        ContractError: the payload is not a valid message of a known version; ``field`` names
            the first offending field.
    """
    if payload is None:
        raise ContractError("value", "empty message (tombstone)")
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError("value", f"not JSON: {exc}") from None
    return from_body(body)


def _fast_trade(body: dict[str, Any]) -> Trade | None:
    """The common case, checked in one expression; None sends the body to the careful path.

    It accepts exactly what the careful path accepts (the careful path also upper-cases
    symbols) and exists because this runs for every message on both sides.
    """
    try:
        symbol, stream, trade_id = body["symbol"], body["stream"], body["trade_id"]
        price, qty, maker = body["price"], body["qty"], body["buyer_is_maker"]
        trade_ms, event_ms, ingest_ms = body["trade_time"], body["event_time"], body["ingest_time"]
    except KeyError:
        return None
    first, last = body.get("first_trade_id"), body.get("last_trade_id")
    if not (type(symbol) is str and _symbol_ok(symbol) and stream in STREAMS
            and type(trade_id) is int and trade_id >= 0 and type(maker) is bool
            and type(price) is str and _decimal_ok(price) and price.strip("0.")
            and type(qty) is str and _decimal_ok(qty)
            and type(trade_ms) is int and MIN_TIME_MS <= trade_ms <= MAX_TIME_MS
            and type(event_ms) is int and MIN_TIME_MS <= event_ms <= MAX_TIME_MS
            and type(ingest_ms) is int and MIN_TIME_MS <= ingest_ms <= MAX_TIME_MS
            and ((first is None and last is None)
                 or (type(first) is int and type(last) is int and 0 <= first <= last))):
        return None
    return Trade(symbol, stream, trade_id, price, qty, trade_ms, event_ms, maker, ingest_ms, first, last)


def from_body(body: Any) -> Message:
    """Validate an already parsed message (see :func:`decode`)."""
    if not isinstance(body, dict):
        raise ContractError("value", "not a JSON object")
    if body.get("kind") == "trade" and body.get("v") == VERSION:
        trade = _fast_trade(body)
        if trade is not None:
            return trade
    if body.get("v") != VERSION:
        raise ContractError("v", f"unsupported version {body.get('v')!r}")
    kind = body.get("kind")
    symbol = normalise_symbol(_require(body, "symbol", str))
    if kind == "trade":
        first = _trade_id(body, "first_trade_id", optional=True)
        last = _trade_id(body, "last_trade_id", optional=True)
        if (first is None) != (last is None) or (first is not None and last is not None and last < first):
            raise ContractError("last_trade_id", "first_trade_id/last_trade_id must both be set and ordered")
        trade_id = _trade_id(body, "trade_id")
        assert trade_id is not None
        return Trade(
            symbol=symbol,
            stream=_stream(body),
            trade_id=trade_id,
            price=_decimal(body, "price", positive=True),
            qty=_decimal(body, "qty", positive=False),
            trade_time=_time_ms(body, "trade_time"),
            event_time=_time_ms(body, "event_time"),
            buyer_is_maker=_require(body, "buyer_is_maker", bool),
            ingest_time=_time_ms(body, "ingest_time"),
            first_trade_id=first,
            last_trade_id=last,
        )
    if kind == "gap":
        from_id = _trade_id(body, "from_id")
        to_id = _trade_id(body, "to_id")
        assert from_id is not None and to_id is not None
        if to_id < from_id:
            raise ContractError("to_id", "gap ends before it starts")
        return Gap(
            symbol=symbol,
            stream=_stream(body),
            from_id=from_id,
            to_id=to_id,
            reason=_require(body, "reason", str),
            detected_at=_time_ms(body, "detected_at"),
            pending=_require(body, "pending", bool) if "pending" in body else False,
        )
    raise ContractError("kind", f"unknown message kind {kind!r}")


def trade_from_binance(event: dict[str, Any], *, ingest_time: int) -> Trade:
    """Build a Trade from a Binance ``trade`` or ``aggTrade`` event (the ``data`` of a frame).

    REST rows (``/api/v3/aggTrades``, ``/api/v3/historicalTrades``) use other field names and
    go through :func:`trade_from_rest`. Unknown fields (``b``, ``a`` of old trade frames,
    ``st``...) are ignored.

    Raises:
        ContractError: a required field is missing or malformed.
    """
    kind = event.get("e")
    if kind == "trade":
        body = {
            "trade_id": event.get("t"),
            "first_trade_id": None,
            "last_trade_id": None,
            "stream": "trade",
        }
    elif kind == "aggTrade":
        body = {
            "trade_id": event.get("a"),
            "first_trade_id": event.get("f"),
            "last_trade_id": event.get("l"),
            "stream": "aggTrade",
        }
    else:
        raise ContractError("e", f"not a trade event: {kind!r}")
    body.update(
        v=VERSION,
        kind="trade",
        symbol=event.get("s"),
        price=event.get("p"),
        qty=event.get("q"),
        trade_time=event.get("T"),
        event_time=event.get("E"),
        buyer_is_maker=event.get("m"),
        ingest_time=ingest_time,
    )
    message = from_body(body)
    assert isinstance(message, Trade)
    return message


def trade_from_rest(row: dict[str, Any], *, symbol: str, stream: StreamType, ingest_time: int) -> Trade:
    """Build a Trade from a row of Binance's REST trade lists.

    ``/api/v3/aggTrades`` rows look like stream events without ``e``/``E``/``s``;
    ``/api/v3/historicalTrades`` rows use ``id``, ``price``, ``qty``, ``time``, ``isBuyerMaker``.
    The event time of a REST row is its trade time.
    """
    if stream == "aggTrade":
        event = {**row, "e": "aggTrade", "E": row.get("T"), "s": symbol}
    else:
        event = {
            "e": "trade",
            "E": row.get("time"),
            "s": symbol,
            "t": row.get("id"),
            "p": row.get("price"),
            "q": row.get("qty"),
            "T": row.get("time"),
            "m": row.get("isBuyerMaker"),
        }
    return trade_from_binance(event, ingest_time=ingest_time)
