"""The real Binance data in tests/data and an independent candle computation to check against."""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from tests.harness.services import AGG_TRADES_CSV, KLINES_CSV

Candle = tuple[Decimal, Decimal, Decimal, Decimal, Decimal]  # open, high, low, close, volume


@dataclass(frozen=True)
class AggTrade:
    agg_id: int
    price: str
    qty: str
    first_id: int
    last_id: int
    time_ms: int
    buyer_is_maker: bool


def agg_trades(path: Path = AGG_TRADES_CSV) -> list[AggTrade]:
    with open(path, newline="") as handle:
        return [AggTrade(int(r[0]), r[1], r[2], int(r[3]), int(r[4]), int(r[5]), r[6] == "True")
                for r in csv.reader(handle)]


def binance_klines() -> dict[int, Candle]:
    with open(KLINES_CSV, newline="") as handle:
        return {int(r["open_time_ms"]): (Decimal(r["open"]), Decimal(r["high"]), Decimal(r["low"]),
                                         Decimal(r["close"]), Decimal(r["volume"]))
                for r in csv.DictReader(handle)}


def candles_from_trades(trades: list[AggTrade], step_ms: int) -> dict[int, Candle]:
    """Straightforward Python: sort by (time, id), group by window, then Binance's fillers."""
    windows: dict[int, list[AggTrade]] = defaultdict(list)
    for trade in sorted(trades, key=lambda t: (t.time_ms, t.agg_id)):
        windows[trade.time_ms - trade.time_ms % step_ms].append(trade)
    result: dict[int, Candle] = {}
    for start, group in windows.items():
        prices = [Decimal(t.price) for t in group]
        volume = sum((Decimal(t.qty) for t in group), Decimal(0))
        result[start] = (prices[0], max(prices), min(prices), prices[-1], volume)
    first, last = min(result), max(result)
    previous_close = result[first][3]
    for start in range(first, last + step_ms, step_ms):
        if start in result:
            previous_close = result[start][3]
        else:
            result[start] = (previous_close,) * 4 + (Decimal(0),)  # type: ignore[assignment]
    return result


def quote_volumes(trades: list[AggTrade], step_ms: int) -> dict[int, Decimal]:
    """Sum of price * qty per window with trades, exact."""
    result: dict[int, Decimal] = defaultdict(Decimal)
    for trade in trades:
        result[trade.time_ms - trade.time_ms % step_ms] += Decimal(trade.price) * Decimal(trade.qty)
    return dict(result)


# quote volume, trade count (raw trades), taker buy base volume, taker buy quote volume,
# first raw trade id, last raw trade id: Binance's kline fields beyond OHLCV.
KlineFields = tuple[Decimal, int, Decimal, Decimal, int | None, int | None]


def kline_fields(trades: list[AggTrade], step_ms: int) -> dict[int, KlineFields]:
    """Per window, from first to last traded, the kline fields beyond OHLCV, straight from the
    trades: the taker bought when the buyer is not the maker; an aggregate's raw trades are
    first_id..last_id. Fillers: zero volumes and counts, no ids."""
    result: dict[int, KlineFields] = {}
    for trade in sorted(trades, key=lambda t: (t.time_ms, t.agg_id)):
        start = trade.time_ms - trade.time_ms % step_ms
        quote, count, taker, taker_quote, first, _ = result.get(
            start, (Decimal(0), 0, Decimal(0), Decimal(0), None, None))
        price, qty = Decimal(trade.price), Decimal(trade.qty)
        if not trade.buyer_is_maker:
            taker += qty
            taker_quote += price * qty
        result[start] = (quote + price * qty, count + trade.last_id - trade.first_id + 1, taker, taker_quote,
                         trade.first_id if first is None else first, trade.last_id)
    for start in range(min(result), max(result) + step_ms, step_ms):
        result.setdefault(start, (Decimal(0), 0, Decimal(0), Decimal(0), None, None))
    return result


def mean_prices(trades: list[AggTrade], step_ms: int) -> dict[int, Decimal]:
    """The plain mean of the prices of each traded window's rows (aggregates), as the old system had it."""
    prices: dict[int, list[Decimal]] = defaultdict(list)
    for trade in trades:
        prices[trade.time_ms - trade.time_ms % step_ms].append(Decimal(trade.price))
    return {start: sum(values, Decimal(0)) / len(values) for start, values in prices.items()}
