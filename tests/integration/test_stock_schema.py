"""The old system's queries, unchanged, through a login granted only candlestack_read (as the
deployment grants its readers): the `stock` views answer them with the stored trades and the
aggregator's candles, field for field against the independent computation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import psycopg2
import psycopg2.extensions
import pytest
from pyspark.sql import SparkSession

from candlestack.aggregator.jobs import Aggregator
from candlestack.core import db
from tests.harness.pipeline import insert_trades
from tests.harness.reference import AggTrade, agg_trades, candles_from_trades, kline_fields, mean_prices
from tests.harness.services import ROOT, SYNTHETIC_CSV, Postgres
from tests.harness.settings import aggregator_settings

pytestmark = pytest.mark.slow

READER = "stock_test_reader"
# Verbatim from issue 15: the old system's own checks.
OLD_TRADES_QUERY = "SELECT symbol, price, event_time FROM stock.real_time_prices ORDER BY event_time DESC LIMIT 5"
OLD_CANDLES_QUERY = ("SELECT symbol, window_start, open_price, close_price FROM stock.aggregated_prices_1min "
                     "ORDER BY window_start DESC LIMIT 5")


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@pytest.fixture
def reader(pg: Postgres, database: str) -> Iterator[psycopg2.extensions.connection]:
    admin = pg.connect()
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (READER,))
        if cur.fetchone() is None:
            cur.execute(f"CREATE ROLE {READER} LOGIN PASSWORD 'x'")  # test name only
        cur.execute(f"GRANT candlestack_read TO {READER}")
        cur.execute("SELECT array_agg(b.rolname::text) FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid "
                    "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = %s", (READER,))
        row = cur.fetchone()
        assert row is not None and row[0] == ["candlestack_read"]
    admin.close()
    conn = psycopg2.connect(host="127.0.0.1", port=pg.port, user=READER, password="x", dbname=database,
                            options="-c timezone=UTC")
    conn.autocommit = True
    yield conn
    conn.close()


def fetch(conn: psycopg2.extensions.connection, query: str) -> list[tuple[object, ...]]:
    with conn.cursor() as cur:
        cur.execute(query)
        return list(cur.fetchall())


def test_the_old_queries_run_unchanged_as_a_reader(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection, spark: SparkSession,
    reader: psycopg2.extensions.connection,
) -> None:
    trades: dict[str, list[AggTrade]] = {"XRPETH": agg_trades(), "BTCUSDT": agg_trades(SYNTHETIC_CSV)}
    for symbol, source in trades.items():
        insert_trades(conn, source, symbol)
    settings = aggregator_settings(pg, database, spark.sparkContext.master)
    work = db.connect(settings.postgres)
    try:
        everything = [t for source in trades.values() for t in source]
        Aggregator(settings, spark, work).backfill(min(t.time_ms for t in everything),
                                                  max(t.time_ms for t in everything) + 1)
    finally:
        work.close()

    # The deployed tests' recomputation (every kline field) agrees with the aggregator here too.
    recompute = (ROOT / "tests" / "deployed" / "candles_vs_trades.sql").read_text()
    for timeframe, seconds in (("1m", 60), ("5m", 300)):
        missing, extra, total = fetch(conn, recompute.replace(":step", str(seconds))
                                      .replace(":'timeframe'", f"'{timeframe}'"))[0]
        assert (missing, extra) == (0, 0) and int(str(total)) > 100, timeframe

    # Every trade, every column; "timestamp" is epoch ms, event_time the same instant.
    assert sorted(fetch(reader, 'SELECT symbol, price, "timestamp", event_time, volume FROM stock.real_time_prices'),
                  key=repr) == sorted(
        [(symbol, Decimal(t.price), t.time_ms, at(t.time_ms), Decimal(t.qty))
         for symbol, source in trades.items() for t in source], key=repr)
    newest = fetch(reader, OLD_TRADES_QUERY)
    rows = {(symbol, Decimal(t.price), at(t.time_ms)) for symbol, source in trades.items() for t in source}
    assert len(newest) == 5 and set(newest) <= rows
    assert [row[2] for row in newest] == sorted((row[2] for row in rows), reverse=True)[:5]

    for view, step in (("stock.aggregated_prices_1min", 60_000), ("stock.aggregated_prices_5min", 300_000)):
        got = {(row[0], row[1]): row[2:] for row in fetch(
            reader, "SELECT symbol, window_start, window_end, open_price, close_price, high_price, low_price, "
                    f"avg_price, total_volume, trade_count FROM {view}")}
        want: dict[tuple[object, ...], tuple[object, ...]] = {}
        for symbol, source in trades.items():
            ohlcv, fields = candles_from_trades(source, step), kline_fields(source, step)
            for start, mean in mean_prices(source, step).items():
                o, h, low, c, volume = ohlcv[start]
                want[(symbol, at(start))] = (at(start + step), o, c, h, low, mean, volume, fields[start][1])
        assert set(got) == set(want), view  # traded windows only, as the old system had them
        for key, row in want.items():
            stored = got[key]
            avg, mean = stored[5], row[5]
            assert isinstance(avg, Decimal) and isinstance(mean, Decimal)
            assert abs(avg - mean) <= mean * Decimal("1e-14"), (view, key, avg, mean)
            assert stored[:5] + stored[6:] == row[:5] + row[6:], (view, key)

    # The synthetic symbol ends on the first day: the five newest traded minutes are XRPETH's.
    xrpeth = candles_from_trades(trades["XRPETH"], 60_000)
    traded = sorted(mean_prices(trades["XRPETH"], 60_000), reverse=True)[:5]
    assert fetch(reader, OLD_CANDLES_QUERY) == [("XRPETH", at(start), xrpeth[start][0], xrpeth[start][3])
                                                for start in traded]
