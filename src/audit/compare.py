"""A Binance kline against our candle, field by field. Pure: no database, no network.

Amounts compare as decimals ("1482.0" equals "1482.00000000"). Our close_time is the window's
exclusive end; Binance's is its last millisecond, so ours is compared minus 1 ms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from candlestack.core.errors import ContractError

# Binance's kline row: the position of each field we compare (the names are our columns').
KLINE_POSITIONS: dict[str, int] = {
    "open": 1, "high": 2, "low": 3, "close": 4, "volume": 5, "close_time": 6, "quote_volume": 7,
    "trade_count": 8, "taker_buy_volume": 9, "taker_buy_quote_volume": 10,
}
# Stored as the field of a kline we have no candle for.
MISSING = "missing"
KLINE_ROW_LENGTH = 12


@dataclass(frozen=True, slots=True)
class Mismatch:
    """``field`` of the candle ``symbol``/``interval`` opening at ``open_time`` (ms) differs."""

    symbol: str
    interval: str
    open_time: int
    field: str
    ours: str | None
    theirs: str | None


def parse_kline(row: object) -> dict[str, Decimal]:
    """The fields of one ``/api/v3/klines`` row, plus ``open_time``, as decimals.

    Raises:
        ContractError: not a 12-element array of numbers.
    """
    if not isinstance(row, list) or len(row) != KLINE_ROW_LENGTH:
        raise ContractError("kline", f"expected a {KLINE_ROW_LENGTH}-element array, got {str(row)[:80]}")
    try:
        fields = {name: Decimal(str(row[position])) for name, position in KLINE_POSITIONS.items()}
        fields["open_time"] = Decimal(str(row[0]))
    except (InvalidOperation, TypeError):
        raise ContractError("kline", f"a field is not a number: {str(row)[:80]}") from None
    return fields


def compare(symbol: str, interval: str, theirs: Mapping[str, Decimal], ours: Mapping[str, Decimal | None] | None,
            *, fields: Sequence[str]) -> list[Mismatch]:
    """The fields of ``fields`` in which our candle differs from Binance's kline.

    Args:
        theirs: :func:`parse_kline`'s fields.
        ours: our candle's columns by kline field name, ``close_time`` already in Binance's
            convention (ms, inclusive); None when we have no candle (one ``missing`` mismatch).
            A None value is a column we could not fill (e.g. taker volumes of candles built
            before they were stored): it differs from any value Binance has.
        fields: the fields to compare (those our schema has).
    """
    open_time = int(theirs["open_time"])
    if ours is None:
        return [Mismatch(symbol, interval, open_time, MISSING, None, "kline")]
    found = []
    for name in fields:
        mine, other = ours.get(name), theirs[name]
        if mine is None or mine != other:
            found.append(Mismatch(symbol, interval, open_time, name, _text(mine), _text(other)))
    return found


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize() if value == value.to_integral() else value, "f")
