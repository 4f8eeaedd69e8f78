"""Backfill: ``candlestack aggregator backfill`` (1m + 5m) on the Spark standalone cluster against
one plain SQL statement computing the same candles in PostgreSQL, on the same generated trades,
at several sizes (1M, 10M and 30M trades by default) so that the growth of time and memory shows.

For each size, trades are generated into a database of their own with one INSERT ... SELECT over
generate_series: 2 symbols over one month, consecutive ids, 8-decimal prices, pairs of trades
sharing a timestamp (so open/close depend on the (trade_time, trade_id) tie-break). The backfill
runs as the CLI subprocess: its wall time includes JVM/Spark start-up, its own "backfill done"
log line gives the backfill alone. Peak RSS is sampled for the driver (Python + JVM), the worker
with its executor, and the PostgreSQL backend running the SQL statement. Both results are
compared value by value, and the database is dropped before the next size.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import Context, json_log_lines, scalar
from bench.profile import render, summarise
from bench.report import Report, Row
from tests.harness.services import start_component

SYMBOLS = ("BTCUSDT", "ETHUSDT")
START = datetime(2026, 1, 5, tzinfo=UTC)
DAYS = 30
TARGET_RATIO = 2.0
FULL_SIZES = (1_000_000, 10_000_000, 30_000_000)
QUICK_SIZES = (300_000,)

GENERATE_SQL = """
INSERT INTO trades (symbol, trade_id, stream, price, qty, first_trade_id, last_trade_id,
                    trade_time, event_time, buyer_is_maker, ingest_time)
SELECT s.symbol, 1000000 + g, 'trade',
       round((s.base * (1 + 0.05 * sin(g / 5000.0)) + random())::numeric, 8),
       round((0.001 + random() * 2)::numeric, 8),
       NULL, NULL,
       %(start)s::timestamptz + (g / 2)::bigint * %(pair_ms)s * interval '1 millisecond',
       %(start)s::timestamptz + (g / 2)::bigint * %(pair_ms)s * interval '1 millisecond',
       g %% 3 = 0,
       %(start)s::timestamptz + (g / 2)::bigint * %(pair_ms)s * interval '1 millisecond'
FROM (VALUES ('BTCUSDT', 30000.0), ('ETHUSDT', 2000.0)) AS s(symbol, base),
     generate_series(0, %(per_symbol)s - 1) AS g
"""

# One statement: 1m and 5m candles, open/close/first/last by (trade_time, trade_id).
SQL_CANDLES = """
CREATE TABLE sql_candles AS
SELECT t.symbol, tf.name AS timeframe,
       date_bin(tf.step, t.trade_time, timestamptz 'epoch') AS open_time,
       date_bin(tf.step, t.trade_time, timestamptz 'epoch') + tf.step AS close_time,
       (array_agg(t.price ORDER BY t.trade_time, t.trade_id))[1] AS open,
       max(t.price) AS high, min(t.price) AS low,
       (array_agg(t.price ORDER BY t.trade_time DESC, t.trade_id DESC))[1] AS close,
       sum(t.qty) AS volume, sum(t.price * t.qty) AS quote_volume,
       sum(coalesce(t.last_trade_id - t.first_trade_id + 1, 1)) AS trade_count,
       (array_agg(t.trade_id ORDER BY t.trade_time, t.trade_id))[1] AS first_trade_id,
       (array_agg(t.trade_id ORDER BY t.trade_time DESC, t.trade_id DESC))[1] AS last_trade_id,
       coalesce(sum(t.qty) FILTER (WHERE NOT t.buyer_is_maker), 0) AS taker_buy_volume,
       coalesce(sum(t.price * t.qty) FILTER (WHERE NOT t.buyer_is_maker), 0) AS taker_buy_quote_volume,
       min(coalesce(t.first_trade_id, t.trade_id)) AS first_raw_trade_id,
       max(coalesce(t.last_trade_id, t.trade_id)) AS last_raw_trade_id
FROM trades t
CROSS JOIN (VALUES ('1m', interval '1 minute'), ('5m', interval '5 minutes')) AS tf(name, step)
WHERE t.symbol = ANY(%(symbols)s) AND t.trade_time >= %(lo)s AND t.trade_time < %(hi)s
GROUP BY t.symbol, tf.name, tf.step, 3
"""

COLUMNS = ("symbol, timeframe, open_time, close_time, open, high, low, close, volume, quote_volume, "
           "trade_count, first_trade_id, last_trade_id, taker_buy_volume, taker_buy_quote_volume, "
           "first_raw_trade_id, last_raw_trade_id")
DIFF_SQL = f"""
SELECT count(*) FROM (
    (SELECT {COLUMNS} FROM candles WHERE trade_count > 0 EXCEPT ALL SELECT {COLUMNS} FROM sql_candles)
    UNION ALL
    (SELECT {COLUMNS} FROM sql_candles EXCEPT ALL SELECT {COLUMNS} FROM candles WHERE trade_count > 0)
) AS d
"""


VALUE_COLUMNS = ("close_time", "open", "high", "low", "close", "volume", "quote_volume", "trade_count",
                 "first_trade_id", "last_trade_id", "taker_buy_volume", "taker_buy_quote_volume",
                 "first_raw_trade_id", "last_raw_trade_id")
# Which columns differ, on candles matched by key (a constant column list, no user input).
COLUMN_DIFF_SQL = "SELECT " + ", ".join(
    f"count(*) FILTER (WHERE c.{name} IS DISTINCT FROM s.{name})" for name in VALUE_COLUMNS
) + (" FROM candles c JOIN sql_candles s USING (symbol, timeframe, open_time) WHERE c.trade_count > 0")
SAMPLE_DIFF_SQL = """
SELECT c.symbol, c.timeframe, c.open_time, c.quote_volume, s.quote_volume, c.volume, s.volume
FROM candles c JOIN sql_candles s USING (symbol, timeframe, open_time)
WHERE c.quote_volume IS DISTINCT FROM s.quote_volume OR c.volume IS DISTINCT FROM s.volume LIMIT 3
"""


def generate(ctx: Context, database: str, count: int) -> float:
    conn = ctx.connect(database)
    began = time.perf_counter()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT ensure_trade_partitions(%s, %s)", (START.date(), (START + timedelta(days=DAYS)).date()))
            cur.execute("SELECT setseed(0.42)")
            per_symbol = count // len(SYMBOLS)
            pair_ms = 2 * DAYS * 86_400_000 // per_symbol
            cur.execute(GENERATE_SQL, {"start": START, "pair_ms": pair_ms, "per_symbol": per_symbol})
            cur.execute("ANALYZE trades")
    finally:
        conn.close()
    return time.perf_counter() - began


def label(count: int) -> str:
    """1M, 10M, 300k: the size as the tables print it."""
    return f"{count // 1_000_000}M" if count % 1_000_000 == 0 else f"{count // 1000}k"


def rss_names(size: str) -> dict[str, str]:
    """The RSS tracker's component names for one size (its peaks are kept per name)."""
    return {"driver": f"backfill {size}: aggregator (driver + JVM)",
            "worker": f"backfill {size}: spark worker + executor",
            "sql": f"backfill {size}: PostgreSQL backend of the SQL statement"}


def sql_baseline(ctx: Context, database: str, lo: datetime, hi: datetime, rss_name: str) -> float:
    conn = ctx.connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS sql_candles")
            cur.execute("SELECT pg_backend_pid()")
            backend = (cur.fetchone() or (0,))[0]
            ctx.rss.watch(rss_name, backend)
            began = time.perf_counter()
            try:
                cur.execute(SQL_CANDLES, {"symbols": list(SYMBOLS), "lo": lo, "hi": hi})
            finally:
                ctx.rss.unwatch(backend)
            return time.perf_counter() - began
    finally:
        conn.close()


def spark_backfill(ctx: Context, database: str, lo: datetime, hi: datetime,
                   names: dict[str, str]) -> tuple[float, float, dict[str, Any]]:
    """(wall seconds of the CLI, backfill seconds from its log, details)."""
    assert ctx.spark is not None
    env = {**ctx.pg.env(database), "CANDLESTACK_SPARK_MASTER": ctx.spark.master_url, "CANDLESTACK_LOG_FORMAT": "json"}
    began = time.perf_counter()
    worker = ctx.spark.procs[-1]
    ctx.rss.watch(names["worker"], worker.pid)
    args = ["aggregator", "backfill", "--from", lo.isoformat(), "--to", hi.isoformat(), "--symbols", ",".join(SYMBOLS)]
    cli = start_component("aggregator-backfill", args, env, ctx.logdir)
    ctx.rss.watch(names["driver"], cli.proc.pid)
    spy = None
    if ctx.profile:  # where the driver waits: wall-clock samples of the Python side, lines kept for aggregator/
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(cli.proc.pid),
                                "--format", "raw", "--idle", "--rate", "20", "--output",
                                str(ctx.workdir / "backfill.pyspy.txt")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        code = cli.proc.wait(3600)
    finally:
        if spy is not None:
            spy.wait(30)
        ctx.rss.unwatch(cli.proc.pid)
        ctx.rss.unwatch(worker.pid)
        cli.stop()
    wall = time.perf_counter() - began
    if code != 0:
        raise RuntimeError(f"backfill exited {code}: {cli.log()[-3000:]}")
    lines = json_log_lines(cli.log_path)
    done = next(line for line in lines if line.get("msg") == "backfill done")
    chunks = [{"chunk": line["chunk"], "trades": line["trades"], "chunk_s": line["chunk_s"]}
              for line in lines if line.get("msg") == "backfill progress"]
    info: dict[str, Any] = {"chunks": chunks, "trades": done["trades"], "candles_changed": done["candles_changed"]}
    if spy is not None:
        summary = summarise(ctx.workdir / "backfill.pyspy.txt", top=25, keep_lines=("aggregator/",))
        info["profile"] = summary
        print(f"py-spy (wall clock) of the backfill driver:\n{render(summary)}")
    return wall, float(done["seconds"]), info


def run(ctx: Context, report: Report) -> None:
    sizes = ctx.backfill_sizes or (QUICK_SIZES if ctx.quick else FULL_SIZES)
    for count in sizes:
        run_size(ctx, report, count)


def run_size(ctx: Context, report: Report, count: int) -> None:
    size = label(count)
    names = rss_names(size)
    database = ctx.database("backfill")
    print(f"backfill {size}: generating {count:,} trades", flush=True)
    generated_s = generate(ctx, database, count)
    lo, hi = START, START + timedelta(days=DAYS)
    print(f"backfill {size}: {generated_s:.0f} s to generate; the SQL statement", flush=True)
    sql_s = sql_baseline(ctx, database, lo, hi, names["sql"])
    print(f"backfill {size}: SQL statement {sql_s:.1f} s; the Spark backfill", flush=True)
    wall_s, backfill_s, info = spark_backfill(ctx, database, lo, hi, names)
    conn = ctx.connect(database)
    try:
        differences = scalar(conn, DIFF_SQL)
        spark_rows = scalar(conn, "SELECT count(*) FROM candles WHERE trade_count > 0")
        fillers = scalar(conn, "SELECT count(*) FROM candles WHERE trade_count = 0")
        sql_rows = scalar(conn, "SELECT count(*) FROM sql_candles")
        with conn.cursor() as cur:
            cur.execute(COLUMN_DIFF_SQL)
            per_column = dict(zip(VALUE_COLUMNS, cur.fetchone() or (), strict=False))
            cur.execute(SAMPLE_DIFF_SQL)
            samples = [[str(v) for v in row] for row in cur.fetchall()]
    finally:
        conn.close()
    ctx.pg.drop_database(database)
    peaks = {role: ctx.rss.peaks[name].tree_rss_mib for role, name in names.items()}
    report.details.setdefault("backfill", {})[size] = {
        "trades": count, "generate_s": round(generated_s, 2), "sql_s": round(sql_s, 3),
        "cli_wall_s": round(wall_s, 2), "backfill_s": backfill_s, **info, "peak_rss_mib": peaks,
        "spark_candles": spark_rows, "sql_candles": sql_rows, "fillers": fillers,
        "differing_by_column": per_column, "difference_samples": samples}
    differing = ", ".join(f"{name} {n}" for name, n in per_column.items() if n) or "none"
    sql_label = "one SQL statement in PostgreSQL"
    report.add(Row("backfill", f"{size}: backfill alone, 1m+5m over {count:,} trades", backfill_s, "s", sql_s,
                   sql_label, target=f"≤ {TARGET_RATIO:.0f}x", met=backfill_s <= TARGET_RATIO * sql_s,
                   note=f"{len(info['chunks'])} chunks, {count / backfill_s:,.0f} trades/s"))
    report.add(Row("backfill", f"{size}: CLI wall time incl. Spark start-up", wall_s, "s", sql_s, sql_label,
                   note=f"start-up + teardown ≈ {wall_s - backfill_s:.1f} s"))
    report.add(Row("backfill", f"{size}: peak RSS, driver (Python + JVM)", peaks["driver"], "MiB", peaks["sql"],
                   "the SQL statement's backend", note="process tree, sampled every 200 ms"))
    report.add(Row("backfill", f"{size}: peak RSS, worker + executor", peaks["worker"], "MiB", peaks["sql"],
                   "the SQL statement's backend"))
    report.add(Row("backfill", f"{size}: candle rows differing (Spark vs SQL)", float(differences), "rows",
                   target="0", met=differences == 0 and spark_rows == sql_rows,
                   note=f"{spark_rows:,} vs {sql_rows:,} candles; {fillers} fillers; columns differing: {differing}"))
