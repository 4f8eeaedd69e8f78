"""``/api/v3/klines`` of the replay feed: Binance's own XRPETH klines, fillers, parameters, the fault switch."""

from __future__ import annotations

import csv
from decimal import Decimal
from typing import Any

import pytest

from candlestack.replay import rest
from candlestack.replay.faults import KlineFault, RestFaultError
from candlestack.replay.feed import Feed, Pace
from candlestack.replay.model import ReplayTrade
from candlestack.replay.sources import CsvSource
from tests.harness.services import AGG_TRADES_CSV, KLINES_CSV

MINUTE = 60_000


def _published(trades: list[ReplayTrade] | CsvSource, symbols: tuple[str, ...] = ("XRPETH",)) -> Feed:
    feed = Feed(trades, symbols=symbols, pace=Pace(speed=None))
    feed.start(0.0, 0)
    while not feed.done:
        feed.take_due(0.0, 100_000)
    return feed


@pytest.fixture(scope="module")
def xrpeth() -> Feed:
    return _published(CsvSource(AGG_TRADES_CSV, "XRPETH"))


def _get(feed: Feed, query: str) -> rest.RestResponse:
    return rest.handle(feed, "GET", f"/api/v3/klines?{query}", now_ms=0)


def _all_klines(feed: Feed, interval: str = "1m") -> list[list[Any]]:
    rows: list[list[Any]] = []
    start = 0
    while True:
        page = _get(feed, f"symbol=XRPETH&interval={interval}&startTime={start}&limit=1000").body
        rows += page
        if len(page) < 1000:
            return rows
        start = page[-1][0] + 1


def test_replay_klines_equal_binances_own_xrpeth_klines(xrpeth: Feed) -> None:
    """The 6 columns Binance's file has, every row, compared as decimals."""
    with open(KLINES_CSV, newline="") as handle:
        binance = {int(r["open_time_ms"]): tuple(Decimal(r[k]) for k in ("open", "high", "low", "close", "volume"))
                   for r in csv.DictReader(handle)}
    served = {row[0]: tuple(Decimal(v) for v in row[1:6]) for row in _all_klines(xrpeth)}
    assert len(served) == len(binance) == 3560
    assert served == binance


def test_rows_have_binances_shape_and_the_derived_fields_add_up(xrpeth: Feed) -> None:
    rows = _all_klines(xrpeth)
    trades = list(CsvSource(AGG_TRADES_CSV, "XRPETH"))
    for row in rows:
        assert len(row) == 12 and row[11] == "0"
        assert row[6] == row[0] + MINUTE - 1
        assert all(isinstance(row[i], str) for i in (1, 2, 3, 4, 5, 7, 9, 10)) and isinstance(row[8], int)
    assert sum(row[8] for row in rows) == sum(t.last_id - t.first_id + 1 for t in trades)
    assert sum(Decimal(row[9]) for row in rows) == sum(Decimal(t.qty) for t in trades if not t.is_buyer_maker)
    assert sum(Decimal(row[7]) for row in rows) == sum(Decimal(t.price) * Decimal(t.qty) for t in trades)
    fillers = [row for row in rows if row[8] == 0]
    assert fillers, "the XRPETH data has quiet minutes"
    by_open = {row[0]: row for row in rows}
    for row in fillers:
        previous = by_open[row[0] - MINUTE]
        assert row[1] == row[2] == row[3] == row[4] == previous[4]
        assert row[5] == row[7] == row[9] == row[10] == "0.00000000"


def test_five_minute_klines_roll_up_the_minutes(xrpeth: Feed) -> None:
    minutes = {row[0]: row for row in _all_klines(xrpeth)}
    for row in _all_klines(xrpeth, "5m"):
        parts = [minutes[row[0] + i * MINUTE] for i in range(5) if row[0] + i * MINUTE in minutes]
        assert Decimal(row[5]) == sum(Decimal(p[5]) for p in parts)
        assert row[8] == sum(p[8] for p in parts)
        assert row[6] == row[0] + 5 * MINUTE - 1


def _trade(trade_id: int, time_ms: int, price: str, qty: str = "1", maker: bool = False) -> ReplayTrade:
    return ReplayTrade(symbol="BTCUSDT", kind="trade", trade_id=trade_id, price=price, qty=qty, time=time_ms,
                       is_buyer_maker=maker, first_id=trade_id, last_id=trade_id)


def test_fillers_limits_and_the_open_kline() -> None:
    base = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE
    feed = _published([_trade(1, base + 5, "10"), _trade(2, base + 3 * MINUTE + 1, "12", maker=True),
                       _trade(3, base + 3 * MINUTE + 2, "11")], symbols=("BTCUSDT",))

    def opens(query: str) -> list[int]:
        body = rest.handle(feed, "GET", f"/api/v3/klines?symbol=BTCUSDT&interval=1m&{query}", now_ms=0).body
        return [(row[0] - base) // MINUTE for row in body]

    assert opens("") == [0, 1, 2, 3]  # the open kline (3) included, fillers between
    assert opens("limit=2") == [2, 3]  # the newest without a start
    assert opens(f"startTime={base + 1}&limit=2") == [1, 2]  # start rounds up to a window
    assert opens(f"startTime={base - 10 * MINUTE}&endTime={base + 2 * MINUTE}") == [0, 1, 2]
    assert opens(f"startTime={base + 9 * MINUTE}") == []
    last = rest.handle(feed, "GET", "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1", now_ms=0).body[0]
    assert last[1:6] == ["12.00000000", "12.00000000", "11.00000000", "11.00000000", "2.00000000"]
    assert last[8] == 2 and last[9] == "1.00000000" and last[10] == "11.00000000"
    filler = rest.handle(feed, "GET", f"/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime={base + MINUTE}&limit=1",
                         now_ms=0).body[0]
    assert filler[1:6] == ["10.00000000"] * 4 + ["0.00000000"] and filler[8] == 0


@pytest.mark.parametrize(("query", "status", "code"), [
    ("symbol=BTCUSDT", 400, -1102),
    ("symbol=BTCUSDT&interval=7m", 400, -1120),
    ("symbol=NOPE&interval=1m", 400, -1121),
    ("symbol=BTCUSDT&interval=1m&limit=1001", 400, -1130),
    ("symbol=BTCUSDT&interval=1m&startTime=5&endTime=4", 400, -1023),
])
def test_parameter_errors_use_binances_codes(query: str, status: int, code: int) -> None:
    feed = _published([_trade(1, 1_000, "1")], symbols=("BTCUSDT",))
    answer = rest.handle(feed, "GET", f"/api/v3/klines?{query}", now_ms=0)
    assert (answer.status, answer.body["code"]) == (status, code)


def test_kline_fault_corrupts_the_chosen_kline_field_only() -> None:
    rows: list[list[Any]] = [[0, "1.00000000", "2", "0.5", "1.50000000", "3", 59_999, "4", 7, "1", "1", "0"],
                             [60_000, "1.5", "2", "0.5", "1.40000000", "3", 119_999, "4", 7, "1", "1", "0"]]
    fault = KlineFault.parse({"field": "close", "symbol": "XRPETH", "interval": "1m", "open_time": "60000"})
    fault.apply("BTCUSDT", "1m", rows)
    fault.apply("XRPETH", "5m", rows)
    assert rows[1][4] == "1.40000000"
    fault.apply("XRPETH", "1m", rows)
    assert rows[0][4] == "1.50000000" and rows[1][4] == "1.40000001"
    nxt = KlineFault.parse({"field": "trade_count"})
    nxt.apply("ANY", "1m", rows)
    nxt.apply("ANY", "1m", rows)
    assert [rows[0][8], rows[1][8]] == [8, 7]  # the next served one, once
    with pytest.raises(RestFaultError):
        KlineFault.parse({"field": "colour"})
    assert KlineFault.parse({"field": "off"}).field is None
