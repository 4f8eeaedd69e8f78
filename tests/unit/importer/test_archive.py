"""Archive names, the daily/monthly plan, the layout sniffing and the block reader."""

from __future__ import annotations

import io
from datetime import date

import pytest

from candlestack.core.errors import ArchiveError
from candlestack.importer.archive import ArchiveFile, blocks, parse_checksum, parse_name, plan, sniff


def test_names_round_trip_and_say_symbol_kind_and_period() -> None:
    daily = parse_name("XRPETH-aggTrades-2019-10-11.zip")
    assert daily == ArchiveFile("XRPETH", "aggTrades", date(2019, 10, 11), monthly=False)
    assert daily.url_path == "data/spot/daily/aggTrades/XRPETH/XRPETH-aggTrades-2019-10-11.zip"
    monthly = parse_name("BTCUSDT-trades-2024-02.csv")
    assert monthly is not None and monthly.monthly and monthly.stream == "trade"
    assert (monthly.first_day, monthly.last_day) == (date(2024, 2, 1), date(2024, 2, 29))
    assert monthly.url_path == "data/spot/monthly/trades/BTCUSDT/BTCUSDT-trades-2024-02.csv"
    assert parse_name("XRPETH-aggTrades-2019-13-01.zip") is None
    assert parse_name("XRPETH-klines-2019-10-11.zip") is None


def test_whole_past_months_come_monthly_and_the_rest_daily() -> None:
    files = plan(["XRPETH"], "aggTrades", date(2024, 1, 30), date(2024, 3, 2), today=date(2024, 3, 10))
    assert [f.name for f in files] == [
        "XRPETH-aggTrades-2024-01-30.zip", "XRPETH-aggTrades-2024-01-31.zip", "XRPETH-aggTrades-2024-02.zip",
        "XRPETH-aggTrades-2024-03-01.zip", "XRPETH-aggTrades-2024-03-02.zip"]
    # The current month has no monthly file yet: days, even when the range covers it.
    current = plan(["A1"], "trades", date(2024, 3, 1), date(2024, 3, 31), today=date(2024, 3, 10))
    assert len(current) == 31 and not any(f.monthly for f in current)
    assert [f.name for f in files[2].daily_files()][:2] == ["XRPETH-aggTrades-2024-02-01.zip",
                                                             "XRPETH-aggTrades-2024-02-02.zip"]


def test_checksum_lines() -> None:
    sha = "a" * 64
    assert parse_checksum(f"{sha}  XRPETH-aggTrades-2019-10-11.zip\n", "x") == sha
    with pytest.raises(ArchiveError):
        parse_checksum("<html>not found</html>", "x")


def test_sniff_tells_header_and_time_unit_per_file() -> None:
    ms = b"13519807,0.00141342,23.00000000,15373518,15373518,1570752011620,True,True\n"
    assert (sniff(ms, "aggTrades", "f").header, sniff(ms, "aggTrades", "f").micros) == (False, False)
    us = b"id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n1,0.1,2,0.2,1735689600000000,true,true\n"
    assert (sniff(us, "trades", "f").header, sniff(us, "trades", "f").micros) == (True, True)
    with pytest.raises(ArchiveError, match="aggTrades layout"):
        sniff(us, "aggTrades", "f")


def test_blocks_end_on_whole_lines_and_lose_nothing() -> None:
    text = b"".join(b"%d,line\n" % n for n in range(1000)) + b"1000,last-without-newline"
    parts = list(blocks(io.BytesIO(text), 97))
    assert all(part.endswith(b"\n") for part in parts)
    assert b"".join(parts) == text + b"\n"
