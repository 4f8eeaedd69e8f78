"""Where replayed trades come from: data.binance.vision CSV files and a synthetic generator.

Every source is a re-iterable of :class:`~candlestack.replay.model.ReplayTrade` in trade-time order with
ids increasing per symbol; iterating it again starts over (``--loop`` relies on that). Nothing
here runs an event loop or touches a socket.
"""

from __future__ import annotations

import heapq
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

from candlestack.core.contract import StreamType, normalise_symbol
from candlestack.core.errors import ContractError
from candlestack.replay.model import ReplayTrade, SourceError

# Column counts of the two data.binance.vision spot layouts (no header):
#   aggTrades: aggId,price,qty,firstId,lastId,timestamp,isBuyerMaker,isBestMatch
#   trades:    id,price,qty,quoteQty,time,isBuyerMaker,isBestMatch
AGG_TRADES_COLUMNS = 8
TRADES_COLUMNS = 7

# Prices and quantities are served as the file's own strings inside JSON, so they must be plain
# decimals (this also keeps a stray quote or backslash out of the frames).
_DECIMAL = re.compile(r"^\d+(\.\d+)?$")
_BOOLS = {"true": True, "false": False}
# A trade time of 10**14 or more is not milliseconds: newer Binance files use microseconds.
_MS_CEILING = 10**14


def _to_ms(value: int) -> int:
    while value >= _MS_CEILING:
        value //= 1000
    return value


def symbol_from_path(path: Path) -> str:
    """``XRPETH-aggTrades-2019-10-11.csv`` -> ``XRPETH``: the file name up to the first '-'.

    Raises:
        SourceError: the prefix is not a symbol.
    """
    try:
        return normalise_symbol(path.name.split("-", 1)[0])
    except ContractError:
        raise SourceError(str(path), "cannot tell the symbol from the file name; use --csv PATH=SYMBOL") from None


def parse_csv_argument(text: str) -> tuple[Path, str]:
    """Split ``PATH=SYMBOL`` (or a bare ``PATH``, symbol from the file name).

    Raises:
        SourceError: the symbol is malformed or cannot be derived.
    """
    path_text, sep, symbol_text = text.rpartition("=")
    if sep:
        try:
            return Path(path_text), normalise_symbol(symbol_text)
        except ContractError as exc:
            raise SourceError(path_text, exc.reason) from None
    path = Path(text)
    return path, symbol_from_path(path)


@dataclass(frozen=True, slots=True)
class CsvSource:
    """A data.binance.vision trades or aggTrades file of one symbol, read lazily.

    The layout is told by the column count of the first row. One header line is tolerated (some
    newer files have one). Ids must increase through the file.
    """

    path: Path
    symbol: str

    def __iter__(self) -> Iterator[ReplayTrade]:
        name = str(self.path)
        columns: int | None = None
        previous_id: int | None = None
        try:
            handle = self.path.open(encoding="ascii", newline="")
        except OSError as exc:
            raise SourceError(name, exc.strerror or str(exc)) from None
        with handle:
            for number, line in enumerate(handle, start=1):
                fields = line.rstrip("\r\n").split(",")
                if fields == [""]:
                    continue
                if number == 1 and not fields[0].strip().isdigit():
                    continue  # a header
                if columns is None:
                    columns = len(fields)
                    if columns not in (AGG_TRADES_COLUMNS, TRADES_COLUMNS):
                        raise SourceError(name, f"{columns} columns: expected 8 (aggTrades) or 7 (trades)", line=number)
                elif len(fields) != columns:
                    raise SourceError(name, f"{len(fields)} columns where earlier rows have {columns}", line=number)
                trade = self._row(fields, name, number)
                if previous_id is not None and trade.trade_id <= previous_id:
                    raise SourceError(name, f"id {trade.trade_id} does not follow {previous_id}", line=number)
                previous_id = trade.trade_id
                yield trade

    def _row(self, fields: list[str], name: str, number: int) -> ReplayTrade:
        try:
            if len(fields) == AGG_TRADES_COLUMNS:
                agg_id, price, qty, first_id, last_id, when, maker, _best = fields
                kind: StreamType = "aggTrade"
                quote_qty = None
            else:
                agg_id, price, qty, quote_qty, when, maker, _best = fields
                first_id = last_id = agg_id
                kind = "trade"
            trade_id, first, last, time_ms = int(agg_id), int(first_id), int(last_id), _to_ms(int(when))
        except ValueError:
            raise SourceError(name, "an id or time is not a whole number", line=number) from None
        for label, value in (("price", price), ("qty", qty), ("quoteQty", quote_qty)):
            if value is not None and not _DECIMAL.match(value):
                raise SourceError(name, f"{label} {value!r} is not a plain decimal", line=number)
        buyer_is_maker = _BOOLS.get(maker.strip().lower())
        if buyer_is_maker is None:
            raise SourceError(name, f"isBuyerMaker {maker!r} is not True/False", line=number)
        if last < first:
            raise SourceError(name, f"lastId {last} is before firstId {first}", line=number)
        return ReplayTrade(
            symbol=self.symbol, kind=kind, trade_id=trade_id, price=price, qty=qty, time=time_ms,
            is_buyer_maker=buyer_is_maker, first_id=first, last_id=last, quote_qty=quote_qty,
        )

    def count(self) -> int:
        """The number of trades in the file (a quick line count, no parsing)."""
        rows = 0
        first: bytes | None = None
        try:
            with self.path.open("rb") as handle:
                for line in handle:
                    if first is None:
                        first = line
                    if line.strip():
                        rows += 1
        except OSError as exc:
            raise SourceError(str(self.path), exc.strerror or str(exc)) from None
        if first is not None and not first.split(b",", 1)[0].strip().isdigit():
            rows -= 1
        return rows


def _units(value: int) -> str:
    """An amount in 1e-8 units as Binance writes it: ``12345678900`` -> ``"123.45678900"``."""
    return f"{value // 100_000_000}.{value % 100_000_000:08d}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class SyntheticSource:
    """Raw trades for several symbols: random-walk prices, consecutive ids, trade time = now.

    Deterministic for a given ``seed`` except for the times, which come from ``clock`` when each
    trade is drawn; the feed draws a trade when it is due, so its time is its publication time.

    Args:
        symbols: which symbols to trade; each trade picks one at random.
        seed: seeds prices, quantities, sides and (unless ``start_id`` is set) the first ids.
        start_id: the first id of every symbol; ``None`` draws one per symbol from the seed.
        count: stop after this many trades in all; ``None`` means never.
        clock: the wall clock in ms.
    """

    symbols: tuple[str, ...]
    seed: int | None = None
    start_id: int | None = None
    count: int | None = None
    clock: Callable[[], int] = field(default=_now_ms, compare=False)

    def __iter__(self) -> Iterator[ReplayTrade]:
        rng = random.Random(self.seed)
        next_id: dict[str, int] = {}
        price: dict[str, int] = {}
        for symbol in self.symbols:
            next_id[symbol] = self.start_id if self.start_id is not None else rng.randrange(1_000_000, 1_000_000_000)
            # 1 .. 50,000 in 1e-8 units: any plausible quote currency.
            price[symbol] = rng.randrange(100_000_000, 5_000_000_000_000)
        last_time = 0
        produced = 0
        while self.count is None or produced < self.count:
            symbol = rng.choice(self.symbols)
            step = round(price[symbol] * rng.gauss(0.0, 0.0002))
            price[symbol] = max(1, price[symbol] + step)
            qty = rng.randrange(100_000, 200_000_000)  # 0.001 .. 2
            trade_id = next_id[symbol]
            next_id[symbol] = trade_id + 1
            last_time = max(last_time, self.clock())
            p, q = _units(price[symbol]), _units(qty)
            yield ReplayTrade(
                symbol=symbol, kind="trade", trade_id=trade_id, price=p, qty=q, time=last_time,
                is_buyer_maker=rng.random() < 0.5, first_id=trade_id, last_id=trade_id,
                quote_qty=_units(price[symbol] * qty // 100_000_000),
            )
            produced += 1


def quote_qty(trade: ReplayTrade) -> str:
    """``quoteQty`` of a REST row: the file's own value, else price * qty to 8 decimals."""
    if trade.quote_qty is not None:
        return trade.quote_qty
    return format((Decimal(trade.price) * Decimal(trade.qty)).quantize(Decimal("0.00000001")), "f")


@dataclass(frozen=True, slots=True)
class MergedSource:
    """Several sources merged in trade-time order (ties keep the order of ``sources``)."""

    sources: Sequence[Iterable[ReplayTrade]]

    def __iter__(self) -> Iterator[ReplayTrade]:
        if len(self.sources) == 1:
            return iter(self.sources[0])
        return heapq.merge(*self.sources, key=lambda trade: trade.time)


def looped(source: Iterable[ReplayTrade]) -> Iterator[ReplayTrade]:
    """Replay ``source`` forever, each round shifted forward so the market looks continuous.

    Round ``k`` adds ``k`` times the id span of each symbol to its ids (aggregate and raw ids
    separately) so ids stay consecutive, and ``k`` times the round's duration plus one average
    inter-trade gap to the times.
    """
    first: dict[str, tuple[int, int]] = {}  # symbol -> (first trade id, first raw id)
    last: dict[str, tuple[int, int]] = {}
    first_time: int | None = None
    last_time = 0
    count = 0
    for trade in source:
        if trade.symbol not in first:
            first[trade.symbol] = (trade.trade_id, trade.first_id)
        last[trade.symbol] = (trade.trade_id, trade.last_id)
        first_time = trade.time if first_time is None else first_time
        last_time = trade.time
        count += 1
        yield trade
    if first_time is None:
        return
    span = last_time - first_time
    time_shift = span + max(1, span // max(count - 1, 1))
    shifts = {
        symbol: (last[symbol][0] - first[symbol][0] + 1, last[symbol][1] - first[symbol][1] + 1) for symbol in first
    }
    round_number = 1
    while True:
        for trade in source:
            id_shift, raw_shift = shifts[trade.symbol]
            yield replace(
                trade,
                trade_id=trade.trade_id + round_number * id_shift,
                first_id=trade.first_id + round_number * raw_shift,
                last_id=trade.last_id + round_number * raw_shift,
                time=trade.time + round_number * time_shift,
            )
        round_number += 1
