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

import re
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import orjson

from candlestack.core.errors import ContractError

VERSION = 1
StreamType = Literal["trade", "aggTrade"]
STREAMS: tuple[StreamType, ...] = get_args(StreamType)

SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{2,20}$")
# numeric(22,10) holds every Binance price and quantity (8 decimals) with room to spare; the
# aggregator reads them as DECIMAL(22,10) so that Spark keeps exact arithmetic.
DECIMAL_PATTERN = re.compile(r"^\d{1,12}(\.\d{1,10})?$")
# Binance opened on 2017-07-01 (UTC): no trade, event or ingest time can be older. Later than
# 2100-01-01 is a unit mix-up (microseconds); the usual ceiling is tighter (see Bounds).
MIN_TIME_MS = 1_498_867_200_000
MAX_TIME_MS = 4_102_444_800_000
# How far ahead of the reader's clock a time may be: clocks drift, but a trade a year ahead
# would create a partition per day up to it, and never age out.
MAX_AHEAD_MS = 86_400_000
# Ids are stored as bigint.
MAX_ID = 2**63 - 1
# A trade message is ~300 bytes; a gap carries a short reason. Anything much larger is not ours,
# and is refused before it is parsed.
MAX_PAYLOAD_BYTES = 16_384
# Every message is one flat object; a parser recurses once per level, so a deeply nested
# payload is refused before it is parsed.
MAX_DEPTH = 8


# Not frozen, but never changed once built: a frozen dataclass's __init__ costs about four
# times as much (a guarded setattr per field), and one is built for every message.
@dataclass(slots=True)
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
        })

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
        return _dumps(body)

    @property
    def key(self) -> bytes:
        return self.symbol.encode()


Message = Trade | Gap


@dataclass(frozen=True, slots=True)
class Bounds:
    """What a reader accepts beyond the message's shape: the latest time and the symbols.

    Passed in rather than read from the clock so that decoding stays pure (and cheap): a
    reader builds one per batch with :meth:`at`.
    """

    max_time_ms: int = MAX_TIME_MS
    # None accepts any well-formed symbol.
    symbols: frozenset[str] | None = None

    @classmethod
    def at(cls, now_ms: int, *, symbols: Collection[str] | None = None) -> Bounds:
        """Bounds for a reader whose clock reads ``now_ms``."""
        return cls(max_time_ms=min(MAX_TIME_MS, now_ms + MAX_AHEAD_MS),
                   symbols=None if symbols is None else frozenset(symbols))


NO_BOUNDS = Bounds()

# orjson: compact output, about a quarter of the json module's time on both sides. It keeps
# integers exact, refuses NaN and Infinity, and refuses integers beyond 64 bits without
# converting them (the json module would build a bignum from a literal of any length).
_dumps = orjson.dumps
# fullmatch, not match: "$" also matches before a trailing newline, which would reach COPY.
_symbol_ok = SYMBOL_PATTERN.fullmatch
_decimal_ok = DECIMAL_PATTERN.fullmatch


def normalise_symbol(raw: str) -> str:
    """Upper-case a symbol and check its shape.

    Raises:
        ContractError: the symbol is not 2-20 letters/digits.
    """
    symbol = raw.strip().upper()
    if not SYMBOL_PATTERN.fullmatch(symbol):
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
    if not DECIMAL_PATTERN.fullmatch(value):
        raise ContractError(field, f"field {field!r} is not a decimal string fitting numeric(22,10): {value!r}")
    if positive and not value.strip("0.").strip():
        raise ContractError(field, f"field {field!r} must be positive: {value!r}")
    return value  # type: ignore[no-any-return]


def _time_ms(body: dict[str, Any], field: str, bounds: Bounds) -> int:
    value: int = _require(body, field, int)
    if not MIN_TIME_MS <= value <= MAX_TIME_MS:
        raise ContractError(field, f"field {field!r} is not a millisecond timestamp since 2017-07-01: {value}")
    if value > bounds.max_time_ms:
        raise ContractError(field, f"field {field!r} is more than a day ahead of the clock: {value}")
    return value


def _trade_id(body: dict[str, Any], field: str, *, optional: bool = False) -> int | None:
    if optional and body.get(field) is None:
        return None
    value: int = _require(body, field, int)
    if not 0 <= value <= MAX_ID:
        raise ContractError(field, f"field {field!r} is outside 0..2^63-1: {value}")
    return value


def _text(body: dict[str, Any], field: str) -> str:
    value: str = _require(body, field, str)
    # PostgreSQL text cannot hold NUL.
    if "\x00" in value:
        raise ContractError(field, f"field {field!r} contains a NUL character")
    return value


def _symbol(body: dict[str, Any], bounds: Bounds) -> str:
    symbol = normalise_symbol(_text(body, "symbol"))
    if bounds.symbols is not None and symbol not in bounds.symbols:
        raise ContractError("symbol", f"symbol {symbol} is not configured")
    return symbol


def _stream(body: dict[str, Any]) -> StreamType:
    stream = _require(body, "stream", str)
    if stream not in STREAMS:
        raise ContractError("stream", f"unknown stream type {stream!r}")
    return stream  # type: ignore[no-any-return]


def nesting_depth(payload: bytes) -> int:
    """How deeply arrays and objects nest in a JSON text, without recursing.

    Brackets inside strings do not count. Malformed text gets some number; the parser then
    rejects it anyway.
    """
    depth = deepest = 0
    in_string = escaped = False
    for byte in payload:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def parse(payload: bytes | None) -> Any:
    """Parse a message value as JSON, refusing what could hurt the parser.

    Raises:
        ContractError: empty, too large, too deeply nested, an over-long integer, or not JSON.
    """
    if payload is None:
        raise ContractError("value", "empty message (tombstone)")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ContractError("value", f"message of {len(payload)} bytes; at most {MAX_PAYLOAD_BYTES}")
    # Counting brackets is an upper bound of the depth and runs at C speed; only a payload with
    # many brackets (never one of ours) pays for the exact scan.
    if payload.count(b"[") + payload.count(b"{") > MAX_DEPTH and nesting_depth(payload) > MAX_DEPTH:
        raise ContractError("value", f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:  # also invalid UTF-8 and integers beyond 64 bits
        raise ContractError("value", f"not JSON: {type(exc).__name__}: {str(exc)[:200]}") from None


def decode(payload: bytes | None, bounds: Bounds = NO_BOUNDS) -> Message:
    """Parse and validate one Kafka message value.

    Args:
        payload: the raw message value (None for a tombstone).
        bounds: the latest acceptable time and the accepted symbols; the default accepts any
            symbol and times up to 2100 (for tools; readers pass ``Bounds.at(now)``).

    Raises:
        ContractError: the payload is not a valid message of a known version; ``field`` names
            the first offending field.
    """
    return from_body(parse(payload), bounds)


def _fast_trade(body: dict[str, Any], bounds: Bounds) -> Trade | None:
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
    # The patterns admit no NUL; bounds.max_time_ms never exceeds MAX_TIME_MS.
    top, symbols = bounds.max_time_ms, bounds.symbols
    if not (type(symbol) is str and _symbol_ok(symbol) and (symbols is None or symbol in symbols)
            and stream in STREAMS
            and type(trade_id) is int and 0 <= trade_id <= MAX_ID and type(maker) is bool
            and type(price) is str and _decimal_ok(price) and price.strip("0.")
            and type(qty) is str and _decimal_ok(qty)
            and type(trade_ms) is int and MIN_TIME_MS <= trade_ms <= top
            and type(event_ms) is int and MIN_TIME_MS <= event_ms <= top
            and type(ingest_ms) is int and MIN_TIME_MS <= ingest_ms <= top
            and ((first is None and last is None)
                 or (type(first) is int and type(last) is int and 0 <= first <= last <= MAX_ID))):
        return None
    return Trade(symbol, stream, trade_id, price, qty, trade_ms, event_ms, maker, ingest_ms, first, last)


def from_body(body: Any, bounds: Bounds = NO_BOUNDS) -> Message:
    """Validate an already parsed message (see :func:`decode`)."""
    if not isinstance(body, dict):
        raise ContractError("value", "not a JSON object")
    if body.get("kind") == "trade" and body.get("v") == VERSION:
        trade = _fast_trade(body, bounds)
        if trade is not None:
            return trade
    if body.get("v") != VERSION:
        raise ContractError("v", f"unsupported version {str(body.get('v'))[:40]!r}")
    kind = body.get("kind")
    symbol = _symbol(body, bounds)
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
            trade_time=_time_ms(body, "trade_time", bounds),
            event_time=_time_ms(body, "event_time", bounds),
            buyer_is_maker=_require(body, "buyer_is_maker", bool),
            ingest_time=_time_ms(body, "ingest_time", bounds),
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
            reason=_text(body, "reason"),
            detected_at=_time_ms(body, "detected_at", bounds),
            pending=_require(body, "pending", bool) if "pending" in body else False,
        )
    raise ContractError("kind", f"unknown message kind {str(kind)[:40]!r}")


def trade_from_binance(event: dict[str, Any], *, ingest_time: int) -> Trade:
    """Build a Trade from a Binance ``trade`` or ``aggTrade`` event (the ``data`` of a frame).

    REST rows (``/api/v3/aggTrades``, ``/api/v3/historicalTrades``) use other field names and
    go through :func:`trade_from_rest`. Unknown fields (``b``, ``a`` of old trade frames,
    ``st``...) are ignored.

    Times may be at most a day ahead of ``ingest_time`` (the producer's clock).

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
    message = from_body(body, Bounds.at(ingest_time))
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
