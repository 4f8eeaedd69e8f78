"""The trade the replay feed passes between its modules, and its errors."""

from __future__ import annotations

from dataclasses import dataclass

from candlestack.core.contract import StreamType
from candlestack.core.errors import CandlestackError


@dataclass(frozen=True, slots=True)
class ReplayTrade:
    """One trade or aggregate trade, with prices and quantities as exact decimal strings.

    ``trade_id`` is the id in the source's own id space (the aggregate id for aggTrades files);
    ``first_id``/``last_id`` are the raw trade ids an aggregate covers (both equal to
    ``trade_id`` for a raw trade). ``time`` is the trade time in ms.
    """

    symbol: str
    kind: StreamType
    trade_id: int
    price: str
    qty: str
    time: int
    is_buyer_maker: bool
    first_id: int
    last_id: int
    # Only trades files carry it; computed as price * qty where a REST row needs it otherwise.
    quote_qty: str | None = None


class ReplayError(CandlestackError):
    """Base class of the replay feed's errors."""


class SourceError(ReplayError):
    """A source of trades is unusable; ``source`` names it (a path), ``line`` is 1-based or None."""

    def __init__(self, source: str, reason: str, *, line: int | None = None) -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {reason}")
        self.source = source
        self.line = line
        self.reason = reason


class InvalidStream(ReplayError):
    """A WebSocket path or stream name the feed does not serve; ``stream`` is the offending part."""

    def __init__(self, stream: str, reason: str) -> None:
        super().__init__(f"{reason}: {stream!r}")
        self.stream = stream
        self.reason = reason
