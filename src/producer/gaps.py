"""Per-symbol trade-id bookkeeping: what is new, what is a repeat, what is missing.

Binance trade ids (and aggregate trade ids) are consecutive per symbol, so any jump tells us
exactly which ids were missed, typically while reconnecting.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Missing:
    """Ids ``from_id``..``to_id`` (inclusive) of ``symbol`` were skipped."""

    symbol: str
    from_id: int
    to_id: int

    @property
    def size(self) -> int:
        return self.to_id - self.from_id + 1


@dataclass(slots=True)
class IdTracker:
    """Remembers the newest id published per symbol."""

    last_ids: dict[str, int] = field(default_factory=dict)

    def is_new(self, symbol: str, trade_id: int) -> bool:
        last = self.last_ids.get(symbol)
        return last is None or trade_id > last

    def missing_before(self, symbol: str, trade_id: int) -> Missing | None:
        """The ids between the last one seen and ``trade_id``, if any."""
        last = self.last_ids.get(symbol)
        if last is None or trade_id <= last + 1:
            return None
        return Missing(symbol, last + 1, trade_id - 1)

    def advance(self, symbol: str, trade_id: int) -> None:
        if self.is_new(symbol, trade_id):
            self.last_ids[symbol] = trade_id
