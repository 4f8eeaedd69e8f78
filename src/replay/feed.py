"""The market clock and what it has published.

A :class:`Feed` is a "live market": one cursor moves through the source as its clock runs,
whoever is listening. The server asks it which trades are due at each tick and sends those to
the connections open at that moment; a trade published while a client was away is gone for that
client, exactly as on Binance, and can only be fetched again over REST from the per-symbol
:class:`SymbolHistory`.

Pure: the caller passes the monotonic and wall-clock times in.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from candlestack.replay.model import ReplayTrade, SourceError


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast the clock runs through the source.

    Exactly one mode: ``speed`` > 0 keeps the source's own inter-trade timing divided by
    ``speed``; ``rate`` publishes that many trades a second whatever the timing; neither (or
    ``speed`` 0) publishes as fast as the connected readers take them.
    """

    speed: float | None = 1.0
    rate: float | None = None

    def __post_init__(self) -> None:
        if self.rate is not None and (self.rate <= 0 or self.speed):
            raise ValueError("a pace is either a speed or a positive rate")
        if self.speed is not None and self.speed < 0:
            raise ValueError("speed must not be negative")

    @property
    def asap(self) -> bool:
        return self.rate is None and not self.speed

    def describe(self) -> str:
        if self.rate is not None:
            return f"{self.rate:g} trades/s"
        return "as fast as possible" if self.asap else f"speed x{self.speed:g}"


class SymbolHistory:
    """Every trade of one symbol published so far (or the newest ``max_size`` to ``2 * max_size``
    of them when capped), in id order, found by id or time with a binary search.
    """

    __slots__ = ("_ids", "_times", "_trades", "dropped", "first_id", "max_size")

    def __init__(self, *, max_size: int | None = None) -> None:
        self._ids: list[int] = []
        self._times: list[int] = []
        self._trades: list[ReplayTrade] = []
        self.max_size = max_size
        self.first_id: int | None = None
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._trades)

    @property
    def last_id(self) -> int | None:
        return self._ids[-1] if self._ids else None

    def add(self, trade: ReplayTrade) -> None:
        """Record a published trade.

        Raises:
            SourceError: its id does not follow the last one (the lookups need ids in order).
        """
        if self._ids and trade.trade_id <= self._ids[-1]:
            raise SourceError(trade.symbol, f"trade id {trade.trade_id} published after {self._ids[-1]}")
        if self.first_id is None:
            self.first_id = trade.trade_id
        self._ids.append(trade.trade_id)
        self._times.append(trade.time)
        self._trades.append(trade)
        # Trim in halves so that appending stays amortised O(1).
        if self.max_size is not None and len(self._ids) >= 2 * self.max_size:
            del self._ids[: self.max_size], self._times[: self.max_size], self._trades[: self.max_size]
            self.dropped += self.max_size

    def from_id(self, from_id: int, limit: int) -> list[ReplayTrade]:
        """Up to ``limit`` trades with id >= ``from_id``."""
        start = bisect_left(self._ids, from_id)
        return self._trades[start : start + limit]

    def recent(self, limit: int) -> list[ReplayTrade]:
        """The newest ``limit`` trades, oldest first."""
        return self._trades[-limit:] if limit > 0 else []

    def between(self, start_ms: int | None, end_ms: int | None, limit: int) -> list[ReplayTrade]:
        """Up to ``limit`` trades with ``start_ms <= time <= end_ms`` (either bound optional)."""
        start = 0 if start_ms is None else bisect_left(self._times, start_ms)
        trades = self._trades[start : start + limit]
        if end_ms is not None:
            trades = [trade for trade in trades if trade.time <= end_ms]
        return trades

    def ids(self) -> list[int]:
        return list(self._ids)

    def time_span(self) -> tuple[int, int] | None:
        """Times of the oldest kept and the newest trade, None before the first."""
        return (self._times[0], self._times[-1]) if self._times else None

    def during(self, start_ms: int, end_ms: int) -> list[ReplayTrade]:
        """Every trade with ``start_ms <= time < end_ms`` (for klines: no limit)."""
        return self._trades[bisect_left(self._times, start_ms) : bisect_left(self._times, end_ms)]

    def price_before(self, time_ms: int) -> str | None:
        """The price of the newest trade before ``time_ms``, None if there is none."""
        position = bisect_left(self._times, time_ms)
        return self._trades[position - 1].price if position else None


class Feed:
    """The cursor through a source, driven by a clock the caller advances.

    Args:
        source: trades in time order, ids increasing per symbol.
        symbols: every symbol the source can produce (REST answers -1121 for others).
        pace: how fast the clock runs.
        retime: shift times so that the first trade happens at the wall-clock time of
            :meth:`start` (event time follows, as it always equals trade time).
        total: how many trades the source holds, if known (for progress and status).
        max_history: trades kept per symbol for REST lookups; ``None`` keeps all.
    """

    def __init__(
        self,
        source: Iterable[ReplayTrade],
        *,
        symbols: Iterable[str],
        pace: Pace,
        retime: bool = False,
        total: int | None = None,
        max_history: int | None = None,
    ) -> None:
        self._source: Iterator[ReplayTrade] = iter(source)
        self.pace = pace
        self.retime = retime
        self.total = total
        self._max_history = max_history
        self.history: dict[str, SymbolHistory] = {s: SymbolHistory(max_size=max_history) for s in symbols}
        self.published = 0
        self.started = False
        self.paused = False
        self.done = False
        self._accumulated = 0.0
        self._running_since: float | None = None
        self._start_wall_ms = 0
        self._shift: int | None = None
        self._first_time: int | None = None
        # Speed pacing needs the next trade's time before it is due; the other paces pull a
        # trade only when it is due, so a synthetic trade is stamped when it is published.
        self._lookahead: ReplayTrade | None = None
        self._primed = False

    # -- clock ---------------------------------------------------------------------------

    def start(self, now: float, wall_ms: int) -> None:
        """Start the clock (idempotent). ``now`` is monotonic seconds, ``wall_ms`` Unix ms."""
        if self.started:
            return
        self.started = True
        self._start_wall_ms = wall_ms
        if not self.paused:
            self._running_since = now

    def pause(self, now: float) -> None:
        if self.paused:
            return
        self.paused = True
        if self._running_since is not None:
            self._accumulated += now - self._running_since
            self._running_since = None

    def resume(self, now: float) -> None:
        if not self.paused:
            return
        self.paused = False
        if self.started:
            self._running_since = now

    def elapsed(self, now: float) -> float:
        """Seconds of market time so far (the clock stands still while paused)."""
        running = now - self._running_since if self._running_since is not None else 0.0
        return self._accumulated + running

    @property
    def running(self) -> bool:
        return self.started and not self.paused and not self.done

    # -- cursor --------------------------------------------------------------------------

    def _pull(self) -> ReplayTrade | None:
        trade = next(self._source, None)
        if trade is None:
            self.done = True
            return None
        if self._shift is None:
            self._shift = self._start_wall_ms - trade.time if self.retime else 0
            self._first_time = trade.time
        return replace(trade, time=trade.time + self._shift) if self._shift else trade

    def _offset(self, trade: ReplayTrade) -> float:
        """When ``trade`` is due, in seconds of market time (speed pacing)."""
        assert self._first_time is not None and self._shift is not None and self.pace.speed
        return (trade.time - self._shift - self._first_time) / 1000.0 / self.pace.speed

    def take_due(self, now: float, limit: int) -> list[ReplayTrade]:
        """Publish the trades due by ``now`` (at most ``limit``), record them, and return them.

        Raises:
            SourceError: the source broke (a bad CSV row) or its ids went backwards.
        """
        if not self.running:
            return []
        batch: list[ReplayTrade] = []
        if self.pace.rate is not None or self.pace.asap:
            if self.pace.rate is not None:
                due = math.floor(self.elapsed(now) * self.pace.rate) + 1 - self.published
                limit = min(limit, due)
            while len(batch) < limit:
                pulled = self._pull()
                if pulled is None:
                    break
                batch.append(pulled)
        else:
            if not self._primed:  # here rather than in start(): a broken source fails the caller of take_due
                self._lookahead = self._pull()
                self._primed = True
            elapsed = self.elapsed(now)
            while (
                len(batch) < limit
                and (trade := self._lookahead) is not None
                and self._offset(trade) <= elapsed
            ):
                batch.append(trade)
                self._lookahead = self._pull()
        for trade in batch:
            self._record(trade)
        return batch

    def _record(self, trade: ReplayTrade) -> None:
        history = self.history.get(trade.symbol)
        if history is None:
            history = self.history[trade.symbol] = SymbolHistory(max_size=self._max_history)
        history.add(trade)
        self.published += 1

    def wait_time(self, now: float) -> float | None:
        """Seconds until the next trade is due; ``None`` while nothing can be (not started,
        paused, done)."""
        if not self.running:
            return None
        if self.pace.asap:
            return 0.0
        if self.pace.rate is not None:
            return max(0.0, self.published / self.pace.rate - self.elapsed(now))
        if not self._primed:
            return 0.0
        if self._lookahead is None:
            return None
        return max(0.0, self._offset(self._lookahead) - self.elapsed(now))
