"""Frame-level fault injection on one connection: duplicate and malformed frames.

Connection-level faults (disconnects, ``serverShutdown``, the connection age limit) need timers
and sockets and live in :mod:`candlestack.replay.server`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal

from candlestack.replay.events import malformed_frame
from candlestack.replay.klines import KLINE_FIELDS, KLINE_INTERVALS_MS
from candlestack.replay.streams import Stream


@dataclass(slots=True)
class FrameFaults:
    """Counts the trade frames sent on one connection and adds the injected ones after them.

    Args:
        duplicate_every: send every Nth trade frame twice; ``None`` disables.
        malformed_every: send a junk frame after every Nth trade frame; ``None`` disables.
    """

    duplicate_every: int | None = None
    malformed_every: int | None = None
    trade_frames: int = 0
    duplicates: int = 0
    malformed: int = 0

    def add(self, out: list[bytes], frame: bytes, stream: Stream, *, combined: bool) -> None:
        """Append ``frame`` to ``out``, then whatever the injection plan adds after it."""
        out.append(frame)
        self.trade_frames += 1
        if self.duplicate_every and self.trade_frames % self.duplicate_every == 0:
            out.append(frame)
            self.duplicates += 1
        if self.malformed_every and self.trade_frames % self.malformed_every == 0:
            out.append(self.junk(stream, combined=combined))

    def junk(self, stream: Stream | None, *, combined: bool) -> bytes:
        """The next malformed frame (the kinds rotate), counted."""
        frame = malformed_frame(self.malformed, stream, combined=combined)
        self.malformed += 1
        return frame


REST_FAULT_MODES = ("off", "429", "418", "truncate")
# Binance's answer to too much request weight (429) and to a client that kept going (418).
RATE_LIMIT_BODY = {"code": -1003, "msg": "Too much request weight used; please use WebSocket Streams for live updates "
                                         "to avoid polling the API."}
BANNED_BODY = {"code": -1003, "msg": "Way too much request weight used; IP banned until further notice."}


class RestFaultError(ValueError):
    """A bad ``mode``/``count``/``retry_after`` for the REST fault switch; ``field`` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(slots=True)
class RestFaults:
    """What the next ``/api/v3`` answers are: normal, 429 or 418 with ``Retry-After``, or cut short.

    Args:
        mode: ``off``, ``429``, ``418`` or ``truncate`` (the body stops halfway; Content-Length
            still announces all of it, so the client sees the connection end mid-answer).
        count: how many answers get the fault before it switches itself off; ``None``: all.
        retry_after: the ``Retry-After`` header of 429/418 answers, in whole seconds.
    """

    mode: str = "off"
    count: int | None = None
    retry_after: int = 1
    served: int = 0

    @classmethod
    def parse(cls, mode: str, count: str | None, retry_after: str | None) -> RestFaults:
        """From the control endpoint's query parameters.

        Raises:
            RestFaultError: a value out of range.
        """
        if mode not in REST_FAULT_MODES:
            raise RestFaultError("mode", f"expected one of {', '.join(REST_FAULT_MODES)}, got {mode!r}")
        seconds = _whole("retry_after", retry_after, 1)
        return cls(mode=mode, count=_whole("count", count, None), retry_after=1 if seconds is None else seconds)

    def take(self) -> str | None:
        """The fault for the answer being made now (and count it), or None for a normal one."""
        if self.mode == "off" or self.count == 0:
            return None
        if self.count is not None:
            self.count -= 1
        self.served += 1
        return self.mode

    def describe(self) -> dict[str, object]:
        return {"mode": self.mode, "count": self.count, "retry_after": self.retry_after, "served": self.served}


def _whole(field: str, raw: str | None, default: int | None) -> int | None:
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise RestFaultError(field, f"expected a whole number of at least 0, got {raw!r}")
    return int(raw)


@dataclass(slots=True)
class KlineFault:
    """Corrupts one field of served ``/api/v3/klines`` rows, so that an audit has something to find.

    Args:
        field: which field (a name of :data:`~candlestack.replay.klines.KLINE_FIELDS`); ``None``: off.
        symbol: only this symbol's klines; ``None``: any.
        interval: only klines of this interval; ``None``: any.
        open_time: only the kline opening at this time (ms); ``None``: the next served one.
        count: how many klines get the fault before it switches itself off; ``None``: all.
    """

    field: str | None = None
    symbol: str | None = None
    interval: str | None = None
    open_time: int | None = None
    count: int | None = None
    corrupted: list[dict[str, object]] = dataclasses.field(default_factory=list)

    @classmethod
    def parse(cls, query: dict[str, str]) -> KlineFault:
        """From the control endpoint's query: ``field`` (or ``off``), ``symbol``, ``interval``,
        ``open_time``, ``count`` (default: 1 without ``open_time``, else all).

        Raises:
            RestFaultError: a value out of range.
        """
        name = query.get("field", "")
        if name == "off":
            return cls()
        if name not in KLINE_FIELDS:
            raise RestFaultError("field", f"expected off or one of {', '.join(KLINE_FIELDS)}, got {name!r}")
        if query.get("interval") and query["interval"] not in KLINE_INTERVALS_MS:
            raise RestFaultError("interval", f"not a kline interval: {query['interval']!r}")
        open_time = _whole("open_time", query.get("open_time"), None)
        return cls(field=name, symbol=query.get("symbol") or None, interval=query.get("interval") or None,
                   open_time=open_time, count=_whole("count", query.get("count"), None if open_time else 1))

    def apply(self, symbol: str, interval: str, rows: list[list[object]]) -> None:
        """Corrupt the matching rows of one answer in place (and count them)."""
        if self.field is None or self.count == 0:
            return
        if (self.symbol and symbol != self.symbol) or (self.interval and interval != self.interval):
            return
        position = KLINE_FIELDS[self.field]
        for row in rows:
            if self.count == 0:
                return
            if self.open_time is not None and row[0] != self.open_time:
                continue
            before = row[position]
            row[position] = _nudged(before)
            self.corrupted.append({"symbol": symbol, "interval": interval, "open_time": row[0],
                                   "field": self.field, "was": before, "served": row[position]})
            if self.count is not None:
                self.count -= 1

    def describe(self) -> dict[str, object]:
        return {"field": self.field, "symbol": self.symbol, "interval": self.interval, "open_time": self.open_time,
                "count": self.count, "corrupted": self.corrupted[-10:]}


def _nudged(value: object) -> object:
    """One unit more in the last place: ``"0.00141418"`` -> ``"0.00141419"``, ``42`` -> ``43``."""
    if isinstance(value, int):
        return value + 1
    text = str(value)
    exponent = Decimal(text).as_tuple().exponent
    assert isinstance(exponent, int)
    return format(Decimal(text) + Decimal(1).scaleb(exponent), "f")
