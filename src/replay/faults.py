"""Frame-level fault injection on one connection: duplicate and malformed frames.

Connection-level faults (disconnects, ``serverShutdown``, the connection age limit) need timers
and sockets and live in :mod:`candlestack.replay.server`.
"""

from __future__ import annotations

from dataclasses import dataclass

from candlestack.replay.events import malformed_frame
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
