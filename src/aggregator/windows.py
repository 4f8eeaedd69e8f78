"""Window arithmetic in integer milliseconds since the Unix epoch (pure; no Spark, no SQL).

Binance's kline windows for every interval we support start at multiples of the interval
length since the epoch, in UTC.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from candlestack.core.settings import INTERVALS_MS


def floor_to(ms: int, step: int) -> int:
    return ms - ms % step


def ceil_to(ms: int, step: int) -> int:
    return -floor_to(-ms, step)


@dataclass(frozen=True, slots=True, order=True)
class Span:
    """Trades of ``symbol`` with ``start_ms <= trade time < end_ms``."""

    symbol: str
    start_ms: int
    end_ms: int


def merge_windows(symbol: str, window_starts: Iterable[int], step: int) -> list[Span]:
    """Coalesce window starts (any order, repeats allowed) into contiguous spans."""
    spans: list[Span] = []
    for start in sorted(set(window_starts)):
        if spans and spans[-1].end_ms == start:
            spans[-1] = Span(symbol, spans[-1].start_ms, start + step)
        else:
            spans.append(Span(symbol, start, start + step))
    return spans


def covering_step(intervals: Iterable[str]) -> int:
    """The largest interval: its windows contain the windows of every smaller one."""
    return max(INTERVALS_MS[name] for name in intervals)


def chunks(start_ms: int, end_ms: int, chunk_ms: int, step: int) -> Iterator[tuple[int, int]]:
    """Split [start, end) into pieces of about ``chunk_ms``, each aligned to ``step``."""
    chunk_ms = max(step, floor_to(chunk_ms, step))
    lo = floor_to(start_ms, step)
    hi = ceil_to(end_ms, step)
    while lo < hi:
        yield lo, min(lo + chunk_ms, hi)
        lo += chunk_ms


def slices(start_ms: int, end_ms: int, parts: int) -> list[tuple[int, int]]:
    """[start, end) cut into ``parts`` nearly equal pieces, for parallel JDBC reads."""
    parts = max(1, min(parts, end_ms - start_ms))
    width = -(-(end_ms - start_ms) // parts)
    return [(lo, min(lo + width, end_ms)) for lo in range(start_ms, end_ms, width)]


def uncovered(spans: Iterable[Span], step: int) -> list[Span]:
    """The parts of the ``step``-aligned windows around ``spans`` that no span covers.

    ``spans`` are disjoint; what is returned is disjoint from them and, with them, tiles every
    ``step`` window any of them reaches into.
    """
    by_symbol: dict[str, list[Span]] = {}
    for span in spans:
        by_symbol.setdefault(span.symbol, []).append(span)
    found: list[Span] = []
    for symbol, own in sorted(by_symbol.items()):
        own.sort()
        starts = {window for span in own for window in range(floor_to(span.start_ms, step), span.end_ms, step)}
        for outer in merge_windows(symbol, starts, step):
            cursor = outer.start_ms
            for span in own:
                if span.end_ms <= outer.start_ms or span.start_ms >= outer.end_ms:
                    continue
                if span.start_ms > cursor:
                    found.append(Span(symbol, cursor, span.start_ms))
                cursor = max(cursor, span.end_ms)
            if cursor < outer.end_ms:
                found.append(Span(symbol, cursor, outer.end_ms))
    return found


def pause_before_tick(tick_s: float, elapsed_s: float, now_ms: int, step_ms: int, settle_s: float) -> float:
    """Seconds to wait before the next tick: the tick interval after the last tick began, or
    ``settle_s`` after the next window of ``step_ms`` closes, whichever comes first.

    Without the second, a window closing just after a tick waits a whole interval for its
    candle; with it, every closed candle is built about ``settle_s`` after its close (the
    settle lets the window's last trades reach the database first).
    """
    to_close_s = (step_ms - now_ms % step_ms) / 1000 + settle_s
    return max(0.0, min(tick_s - elapsed_s, to_close_s))
