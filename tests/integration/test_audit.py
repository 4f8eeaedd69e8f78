"""`candlestack audit` against the replay feed's /api/v3/klines: all equal, then a corrupted kline found.

Our side: candles written straight from an independent computation over the XRPETH trades (this
test's own, like tests/harness/reference.py), not by running the pipeline: the pipeline's
candles are checked against that computation by the reference tests, and running Kafka and Spark
here would add minutes without testing the audit more.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import psycopg2.extensions
import pytest

from tests.harness.pipeline import scalar
from tests.harness.reference import AggTrade, agg_trades
from tests.harness.services import AGG_TRADES_CSV, Postgres, Replay, candlestack_command, start_replay, wait_for

pytestmark = pytest.mark.slow

STEPS = {"1m": 60_000, "5m": 300_000}
TAKER = ("taker_buy_volume", "taker_buy_quote_volume")


def reference_candles(trades: list[AggTrade], step: int) -> dict[int, dict[str, Decimal | int]]:
    """Every kline field of each window, fillers (at the previous close) between traded windows."""
    windows: dict[int, list[AggTrade]] = defaultdict(list)
    for trade in sorted(trades, key=lambda t: (t.time_ms, t.agg_id)):
        windows[trade.time_ms - trade.time_ms % step].append(trade)
    result: dict[int, dict[str, Decimal | int]] = {}
    close = Decimal(0)
    for start in range(min(windows), max(windows) + step, step):
        group = windows.get(start, [])
        prices = [Decimal(t.price) for t in group]
        takers = [t for t in group if not t.buyer_is_maker]
        if prices:
            close = prices[-1]
        result[start] = {
            "open": prices[0] if prices else close, "high": max(prices, default=close),
            "low": min(prices, default=close), "close": close,
            "volume": sum((Decimal(t.qty) for t in group), Decimal(0)),
            "quote_volume": sum((Decimal(t.price) * Decimal(t.qty) for t in group), Decimal(0)),
            "trade_count": sum(t.last_id - t.first_id + 1 for t in group),
            "taker_buy_volume": sum((Decimal(t.qty) for t in takers), Decimal(0)),
            "taker_buy_quote_volume": sum((Decimal(t.price) * Decimal(t.qty) for t in takers), Decimal(0)),
        }
    return result


def write_candles(conn: psycopg2.extensions.connection) -> None:
    trades = agg_trades()
    with conn.cursor() as cur:
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'candles'")
        columns = {row[0] for row in cur.fetchall()}
        extra = [name for name in TAKER if name in columns]
        for interval, step in STEPS.items():
            for start, c in reference_candles(trades, step).items():
                names = ["open", "high", "low", "close", "volume", "quote_volume", "trade_count", *extra]
                cur.execute(
                    f"INSERT INTO candles (symbol, timeframe, open_time, close_time, {', '.join(names)}) "
                    f"VALUES ('XRPETH', %s, to_timestamp(%s / 1000.0), to_timestamp(%s / 1000.0), "
                    f"{', '.join(['%s'] * len(names))})",
                    (interval, start, start + step, *(c[name] for name in names)))


@pytest.fixture
def replay(logdir: Path) -> Replay:
    feed = start_replay(["--csv", f"{AGG_TRADES_CSV}=XRPETH", "--as-fast-as-possible", "--start", "immediately"],
                        logdir)
    wait_for(lambda: feed.status()["done"], timeout=60, what="every XRPETH trade published")
    yield feed  # type: ignore[misc]
    feed.component.stop()


def audit(pg: Postgres, database: str, replay: Replay, symbols: str = "XRPETH") -> subprocess.CompletedProcess[str]:
    inherited = {key: os.environ[key] for key in ("PYTHONPATH",) if key in os.environ}
    env = {"PATH": "/usr/bin:/bin", **inherited, **pg.env(database), "CANDLESTACK_SYMBOLS": symbols,
           "CANDLESTACK_INTERVALS": "1m,5m", "CANDLESTACK_BINANCE_REST_URL": replay.rest_url}
    return subprocess.run(candlestack_command("audit", "--from", "2019-10-11T00:00", "--to", "2019-10-14T00:00"),
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def kline_fault(replay: Replay, query: str) -> dict[str, object]:
    request = urllib.request.Request(f"{replay.rest_url}/_replay/kline-fault?{query}", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=5) as response:
        return dict(json.load(response))


def open_mismatches(conn: psycopg2.extensions.connection) -> list[tuple[object, ...]]:
    with conn.cursor() as cur:
        cur.execute("SELECT symbol, timeframe, (extract(epoch FROM open_time) * 1000)::bigint, field, ours, theirs "
                    "FROM kline_audit_mismatches WHERE resolved_at IS NULL ORDER BY 1, 2, 3, 4")
        return cur.fetchall()


def test_audit_finds_nothing_then_exactly_the_corrupted_kline(
        pg: Postgres, database: str, conn: psycopg2.extensions.connection, replay: Replay) -> None:
    write_candles(conn)
    minutes = scalar(conn, "SELECT count(*) FROM candles WHERE timeframe = '1m'")
    assert minutes == 3560

    clean = audit(pg, database, replay)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "compared 4272 klines" in clean.stdout and ": 0 mismatched (0 fields)" in clean.stdout, clean.stdout
    assert open_mismatches(conn) == []

    # A symbol Binance does not know (-1121) is reported and skipped; XRPETH is still compared.
    unknown = audit(pg, database, replay, symbols="NOPEUSDT,XRPETH")
    assert unknown.returncode == 69, unknown.stdout + unknown.stderr
    assert "compared 4272 klines" in unknown.stdout and "NOPEUSDT 1m: not compared" in unknown.stderr

    # One field of one kline, every time it is served: the close of 2019-10-12 00:00.
    corrupted = 1570838400000
    ours_close = scalar(conn, "SELECT close FROM candles WHERE timeframe = '1m' AND open_time = to_timestamp(%s)",
                        (corrupted // 1000,))
    kline_fault(replay, f"field=close&symbol=XRPETH&interval=1m&open_time={corrupted}")
    found = audit(pg, database, replay)
    assert found.returncode == 1, found.stdout + found.stderr
    assert ": 1 mismatched (1 fields)" in found.stdout, found.stdout
    expected_theirs = format(Decimal(str(ours_close)).quantize(Decimal("0.00000001")) + Decimal("0.00000001"), "f")
    assert open_mismatches(conn) == [("XRPETH", "1m", corrupted, "close", format(Decimal(str(ours_close)), "f"),
                                      expected_theirs)]

    # A rerun does not double the row; a candle we lack is a `missing` mismatch.
    conn.cursor().execute("DELETE FROM candles WHERE timeframe = '5m' AND open_time = to_timestamp(%s)",
                          (corrupted // 1000,))
    again = audit(pg, database, replay)
    assert again.returncode == 1
    rows = open_mismatches(conn)
    assert [(r[1], r[3]) for r in rows] == [("1m", "close"), ("5m", "missing")]
    assert scalar(conn, "SELECT count(*) FROM kline_audit_mismatches") == 2

    # Fixed at the source: the next run marks both resolved, and the run records say what each found.
    kline_fault(replay, "field=off")
    write_back = reference_candles(agg_trades(), STEPS["5m"])[corrupted]
    conn.cursor().execute(
        "INSERT INTO candles (symbol, timeframe, open_time, close_time, open, high, low, close, volume, quote_volume, "
        "trade_count) VALUES ('XRPETH', '5m', to_timestamp(%s), to_timestamp(%s), %s, %s, %s, %s, %s, %s, %s)",
        (corrupted // 1000, corrupted // 1000 + 300, *(write_back[k] for k in
         ("open", "high", "low", "close", "volume", "quote_volume", "trade_count"))))
    taker = [name for name in TAKER if scalar(conn, "SELECT count(*) FROM information_schema.columns WHERE "
                                                    "table_name = 'candles' AND column_name = %s", (name,))]
    for name in taker:
        conn.cursor().execute(f"UPDATE candles SET {name} = %s WHERE timeframe = '5m' AND open_time = to_timestamp(%s)",
                              (write_back[name], corrupted // 1000))
    final = audit(pg, database, replay)
    assert final.returncode == 0, final.stdout + final.stderr
    assert open_mismatches(conn) == []
    assert scalar(conn, "SELECT count(*) FROM kline_audit_mismatches WHERE resolved_at IS NOT NULL") == 2

    # "The next served kline": the first 5m kline of the next audit, in a taker field (migration 0008).
    assert taker == list(TAKER), "the kline branch's taker columns are compared too"
    kline_fault(replay, "field=taker_buy_volume&interval=5m")
    taker_run = audit(pg, database, replay)
    assert taker_run.returncode == 1
    first_5m = min(reference_candles(agg_trades(), STEPS["5m"]))
    assert [(r[1], r[2], r[3]) for r in open_mismatches(conn)] == [("5m", first_5m, "taker_buy_volume")]
    with conn.cursor() as cur:
        cur.execute("SELECT compared, mismatched, fields FROM kline_audit_runs ORDER BY id")
        assert cur.fetchall() == [(4272, 0, 0), (4272, 0, 0), (4272, 1, 1), (4272, 2, 2), (4272, 0, 0),
                                  (4272, 1, 1)]
