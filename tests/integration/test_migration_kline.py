"""Migration 0008 against a real PostgreSQL: it applies on a fresh database and on one that already
holds candles, and fills the new kline fields of those candles exactly as a recomputation from the
trades says (Python, below), leaving NULL where the trades are gone."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg2.extensions

from candlestack.core import db
from candlestack.core.settings import INTERVALS_MS
from tests.harness.services import Postgres

MIGRATION = "0008_kline_fields.sql"
START = datetime(2024, 3, 9, 23, 0, tzinfo=UTC)  # crosses a UTC day: two partitions
TIMEFRAMES = ("1m", "5m", "1h", "1d")


def migrate_until(conn: psycopg2.extensions.connection, before: int) -> None:
    """Apply the bundled migrations older than ``before`` as `db.migrate` would."""
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())")
        for version, name, text in db.available_migrations():
            if version < before:
                cur.execute(text)
                cur.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
    conn.commit()


def seed(conn: psycopg2.extensions.connection, stream: str) -> list[tuple[object, ...]]:
    """Trades over two hours across midnight, with a quiet stretch; returns them as inserted."""
    rng = random.Random(8)
    rows: list[tuple[object, ...]] = []
    agg_id, raw_id = 1000, 50_000
    at = START
    while at < START + timedelta(hours=2):
        at += timedelta(milliseconds=rng.randrange(200, 20_000))
        if START + timedelta(minutes=17) <= at < START + timedelta(minutes=29):
            continue  # quiet: fillers
        price = Decimal(rng.randrange(100_000, 200_000)) / Decimal(10**6)
        qty = Decimal(rng.randrange(1, 10**6)) / Decimal(10**4)
        if stream == "aggTrade":
            raws = rng.randrange(1, 5)
            first, last = raw_id, raw_id + raws - 1
            raw_id += raws + rng.randrange(0, 2)  # a raw id may be skipped (a trade of another pair)
            rows.append(("ABCUSDT", agg_id, stream, price, qty, first, last, at, rng.random() < 0.5))
            agg_id += 1
        else:
            rows.append(("ABCUSDT", raw_id, stream, price, qty, None, None, at, rng.random() < 0.5))
            raw_id += 1
    with conn.cursor() as cur:
        cur.execute("SELECT ensure_trade_partitions(%s, %s)", (START.date(), (START + timedelta(days=1)).date()))
        cur.executemany(
            "INSERT INTO trades (symbol, trade_id, stream, price, qty, first_trade_id, last_trade_id, trade_time,"
            " event_time, buyer_is_maker, ingest_time) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())",
            [(*row[:8], row[7], row[8]) for row in rows])
    return rows


def expected(rows: list[tuple[object, ...]]) -> dict[tuple[str, datetime], tuple[object, ...]]:
    """(timeframe, open time) -> (taker volume, taker quote volume, first raw id, last raw id, price sum, rows)."""
    out: dict[tuple[str, datetime], list[object]] = defaultdict(
        lambda: [Decimal(0), Decimal(0), None, None, Decimal(0), 0])
    for _, trade_id, _, price, qty, first, last, at, maker in rows:
        assert isinstance(price, Decimal) and isinstance(qty, Decimal) and isinstance(at, datetime)
        assert isinstance(trade_id, int)
        for timeframe in TIMEFRAMES:
            step = INTERVALS_MS[timeframe]
            ms = int(at.timestamp() * 1000)
            key = (timeframe, datetime.fromtimestamp((ms - ms % step) / 1000, UTC))
            acc = out[key]
            if not maker:
                acc[0] = Decimal(acc[0]) + qty  # type: ignore[arg-type]
                acc[1] = Decimal(acc[1]) + price * qty  # type: ignore[arg-type]
            lo = first if first is not None else trade_id
            hi = last if last is not None else trade_id
            acc[2] = lo if acc[2] is None else min(acc[2], lo)  # type: ignore[call-overload]
            acc[3] = hi if acc[3] is None else max(acc[3], hi)  # type: ignore[call-overload]
            acc[4] = Decimal(acc[4]) + price  # type: ignore[arg-type]
            acc[5] = int(acc[5]) + 1  # type: ignore[call-overload]
    return {key: tuple(value) for key, value in out.items()}


def seed_candles(conn: psycopg2.extensions.connection, want: dict[tuple[str, datetime], tuple[object, ...]]) -> None:
    """Candles for every traded window (base fields are placeholders: 0008 does not read them), a
    filler for every quiet 1m window, and one traded 1m candle an hour before the trades (gone)."""
    with conn.cursor() as cur:
        for (timeframe, open_time), values in want.items():
            step = timedelta(milliseconds=INTERVALS_MS[timeframe])
            cur.execute("INSERT INTO candles (symbol, timeframe, open_time, close_time, open, high, low, close,"
                        " volume, quote_volume, trade_count, id_count) VALUES ('ABCUSDT', %s, %s, %s,"
                        " 1, 1, 1, 1, 1, 1, %s, %s)", (timeframe, open_time, open_time + step, values[5], values[5]))
        for minute in range(17, 29):
            open_time = START + timedelta(minutes=minute)
            cur.execute("INSERT INTO candles (symbol, timeframe, open_time, close_time, open, high, low, close,"
                        " volume, quote_volume, trade_count) VALUES ('ABCUSDT', '1m', %s, %s, 1, 1, 1, 1, 0, 0, 0)",
                        (open_time, open_time + timedelta(minutes=1)))
        gone = START - timedelta(hours=1)
        cur.execute("INSERT INTO candles (symbol, timeframe, open_time, close_time, open, high, low, close,"
                    " volume, quote_volume, trade_count, id_count) VALUES ('ABCUSDT', '1m', %s, %s,"
                    " 1, 1, 1, 1, 5, 5, 7, 3)", (gone, gone + timedelta(minutes=1)))


def kline_fields(conn: psycopg2.extensions.connection) -> dict[tuple[str, datetime], tuple[object, ...]]:
    with conn.cursor() as cur:
        cur.execute("SELECT timeframe, open_time, taker_buy_volume, taker_buy_quote_volume, first_raw_trade_id,"
                    " last_raw_trade_id, price_sum, trade_count FROM candles")
        return {(row[0], row[1]): row[2:] for row in cur.fetchall()}


def test_0008_applies_to_a_fresh_database(pg: Postgres) -> None:
    pg.create_database("kline_fresh")
    conn = pg.connect("kline_fresh")
    try:
        assert MIGRATION in db.migrate(conn)
        assert db.migrate(conn) == []
    finally:
        conn.close()


def _fill(pg: Postgres, stream: str) -> None:
    name = f"kline_fill_{stream.lower()}"
    pg.create_database(name)
    conn = pg.connect(name)
    try:
        migrate_until(conn, 8)
        conn.autocommit = True
        rows = seed(conn, stream)
        want = expected(rows)
        seed_candles(conn, want)
        assert db.migrate(conn)[0] == MIGRATION  # the migrations after it leave candles alone
        got = kline_fields(conn)
    finally:
        conn.close()
    traded = {key: value for key, value in got.items() if value[5] > 0}  # type: ignore[operator]
    fillers = {key: value for key, value in got.items() if value[5] == 0}
    gone = ("1m", START - timedelta(hours=1))
    assert traded.pop(gone) == (None, None, None, None, None, 7)
    assert set(traded) == set(want)
    for key, (taker, taker_quote, first, last, price_sum, count) in want.items():
        assert traded[key][:5] == (taker, taker_quote, first, last, price_sum), key
        assert traded[key][5] == count
    assert len(fillers) == 12
    assert set(fillers.values()) == {(0, 0, None, None, 0, 0)}
    # Not vacuous: both sides traded, and aggregates cover several raw trades.
    assert sum(Decimal(value[0]) > 0 for value in want.values()) > len(want) // 2  # type: ignore[arg-type]
    if stream == "aggTrade":
        assert any(int(v[3]) - int(v[2]) + 1 > int(v[5]) for v in want.values())  # type: ignore[call-overload]


def test_0008_fills_aggtrade_candles_from_their_trades(pg: Postgres) -> None:
    _fill(pg, "aggTrade")


def test_0008_fills_trade_candles_from_their_trades(pg: Postgres) -> None:
    _fill(pg, "trade")
