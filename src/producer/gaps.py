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


# Retries of a pending gap: 1 s, 2 s, 4 s ... at most a minute apart, but never sooner than the
# server asked (Retry-After), however long that is.
PENDING_RETRY_INITIAL_S = 1.0
PENDING_RETRY_MAX_S = 60.0


def pending_retry_delay_s(attempts: int, *, retry_after_s: float | None = None,
                          initial_s: float = PENDING_RETRY_INITIAL_S, max_s: float = PENDING_RETRY_MAX_S) -> float:
    """The wait before the next try of a pending gap that has failed ``attempts`` times."""
    delay = min(max_s, initial_s * 2.0 ** min(attempts, 32))
    return max(delay, retry_after_s or 0.0)


@dataclass(slots=True)
class PendingGap:
    """Ids ``from_id``..``to_id`` of ``symbol`` that REST could not give us yet.

    ``from_id`` moves up only as fill trades are acknowledged by the broker (it is what the
    state file keeps); ``cursor`` moves up as they are published, so that the next try goes on
    where the last one stopped. ``due`` is the monotonic time of the next try, ``filled`` counts
    the trades published for it by this process.
    """

    symbol: str
    from_id: int
    to_id: int
    reason: str
    detected_at: int
    attempts: int = 0
    due: float = 0.0
    cursor: int = -1
    filled: int = 0

    def __post_init__(self) -> None:
        self.cursor = max(self.cursor, self.from_id)

    @property
    def acknowledged(self) -> bool:
        """Every id of the range is on the broker."""
        return self.from_id > self.to_id

    @property
    def published(self) -> bool:
        """Every id of the range has been handed to the publisher (acknowledged or not)."""
        return self.cursor > self.to_id

    def unpublished(self) -> Missing:
        return Missing(self.symbol, self.cursor, self.to_id)
