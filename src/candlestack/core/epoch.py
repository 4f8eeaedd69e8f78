"""Epoch milliseconds, the unit of Binance's times, and UTC datetimes: exact, in integers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def to_ms(value: datetime) -> int:
    """Whole milliseconds since the epoch (a sub-millisecond part is dropped, toward the past)."""
    return (value - EPOCH) // MS


def from_ms(value: int) -> datetime:
    return EPOCH + value * MS
