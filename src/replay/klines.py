"""``/api/v3/klines`` rows computed from the trades the feed has published, as Binance serves them.

A row is Binance's 12-element array: open time, open, high, low, close, volume, close time
(open time + interval - 1 ms), quote asset volume, number of trades, taker buy base volume,
taker buy quote volume, and an unused ``"0"``. Windows without a trade between traded ones are
zero-volume fillers at the previous close, and the window of the newest published trade (still
open) is served too, as Binance serves the current kline. Pure: no clock, no socket.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from candlestack.core.settings import INTERVALS_MS
from candlestack.replay.model import ReplayTrade

# Binance's kline intervals (spot API docs). The feed serves those of fixed length that divide a
# day or are one (the windows it can align to the epoch): all of candlestack's intervals and 8h.
KLINE_INTERVALS_MS: dict[str, int] = {**INTERVALS_MS, "8h": 28_800_000}
# Binance writes kline prices and amounts with 8 decimals.
_PLACES = Decimal("0.00000001")
# Positions of the fields in a kline row, by the names the audit and the fault switch use.
KLINE_FIELDS: dict[str, int] = {
    "open": 1, "high": 2, "low": 3, "close": 4, "volume": 5, "close_time": 6, "quote_volume": 7,
    "trade_count": 8, "taker_buy_volume": 9, "taker_buy_quote_volume": 10,
}


def _text(value: Decimal) -> str:
    """Binance's way: 8 decimals (more only where an exact sum needs them, which it never rounds)."""
    quantized = value.quantize(_PLACES)
    return format(quantized if quantized == value else value, "f")


@dataclass(slots=True)
class _Window:
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote: Decimal
    trades: int
    taker_base: Decimal
    taker_quote: Decimal

    @classmethod
    def filler(cls, price: Decimal) -> _Window:
        zero = Decimal(0)
        return cls(price, price, price, price, zero, zero, 0, zero, zero)

    def add(self, trade: ReplayTrade) -> None:
        price, qty = Decimal(trade.price), Decimal(trade.qty)
        quote = price * qty
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.volume += qty
        self.quote += quote
        # An aggregate trade stands for last_id - first_id + 1 raw trades; Binance counts those.
        self.trades += trade.last_id - trade.first_id + 1
        if not trade.is_buyer_maker:  # the buyer took the offer: a taker buy
            self.taker_base += qty
            self.taker_quote += quote


def open_times(first_ms: int, last_ms: int, step_ms: int, *, start_ms: int | None, end_ms: int | None,
               limit: int) -> range:
    """The open times Binance answers for a symbol traded from ``first_ms`` to ``last_ms``.

    Open times from ``start_ms`` (rounded up to a window) to ``end_ms``, within the windows of the
    first and the newest trade; the first ``limit`` of them, or the newest ``limit`` without a
    ``start_ms``.
    """
    low = first_ms - first_ms % step_ms
    high = last_ms - last_ms % step_ms
    if start_ms is not None:
        low = max(low, start_ms + (-start_ms) % step_ms)
    if end_ms is not None:
        high = min(high, end_ms - end_ms % step_ms)
    if low > high:
        return range(0)
    opens = range(low, high + step_ms, step_ms)
    return opens[:limit] if start_ms is not None else opens[-limit:]


def kline_rows(trades: Sequence[ReplayTrade], opens: range, previous_close: str | None) -> list[list[object]]:
    """The kline rows of the windows ``opens`` from their ``trades`` (in time order).

    ``previous_close`` is the price of the newest trade before the first window: a window
    without trades is a zero-volume filler at the close before it.
    """
    if not opens:
        return []
    step_ms = opens.step
    windows: dict[int, _Window] = {}
    for trade in trades:
        start = trade.time - trade.time % step_ms
        if start not in opens:
            continue
        window = windows.get(start)
        if window is None:
            window = windows[start] = _Window.filler(Decimal(trade.price))
        window.add(trade)
    previous = Decimal(previous_close) if previous_close is not None else None
    rows: list[list[object]] = []
    for start in opens:
        window = windows.get(start)
        if window is None:
            if previous is None:  # not served: open_times starts at the first traded window
                continue
            window = _Window.filler(previous)
        previous = window.close
        rows.append([
            start, _text(window.open), _text(window.high), _text(window.low), _text(window.close),
            _text(window.volume), start + step_ms - 1, _text(window.quote), window.trades,
            _text(window.taker_base), _text(window.taker_quote), "0",
        ])
    return rows
