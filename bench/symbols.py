"""500 symbols: the live path and the aggregator with many markets at 5,000 trades/s in total.

Live part: a synthetic replay of 500 symbols (S000USDT..S499USDT) at 5,000 trades/s -> our
producer (one combined stream of 500 ``@trade`` streams) -> broker -> consumer -> PostgreSQL,
with ``candlestack aggregator run`` (subprocess, local[2], tick 2 s, the default rest mode;
started first, on the empty database) building candles; observed for 3 minutes (``--quick``
75 s) once the feed runs.

- Producer keeps up: after pausing the feed and draining, rows stored == trades published, ids
  1..n per symbol, no slow-reader drop, and the feed kept its pace (published against rate x
  seconds); the producer's own share of the lag (``ingest_time - trade_time``) p99 in the note.
- Ingest lag p99: trade time -> row visible, by :class:`bench.visibility.VisibilityPoller`
  (histograms through the ``ingest_xid`` index: cheap whatever the number of symbols).
- 1m candle freshness: the measure of ``bench.freshness`` (seconds from a window's close to the
  first poll from which its candle's trade_count equals the trades stored for it, and stays so),
  obtained differently: freshness.py's STATE_SQL groups every trade since the start at each
  250 ms poll, about 900k rows here. Instead each poll reads only the 1m candles of windows closed
  in the last 3 minutes (500 rows a window) and remembers when each trade_count value was first
  seen; after the drain, one query counts the trades per (symbol, window). trade_count only grows
  (a candle is replaced only by one computed from at least as many trades), so the candle is
  complete from the first poll after the close that showed the final count. Windows counted: as
  in freshness.py, those closing after the aggregator is running and >= 15 s before the end.

Tick cost part: the aggregator's cost per tick against the number of symbols, at the same trades
touched. In this process, an ``Aggregator`` on a Spark local[2] session with
CANDLESTACK_AGGREGATOR_OPEN_REFRESH_S=0 (no tick deferred) and the default intervals (1m, 5m),
on a fresh database per symbol count (5, 50, 500): each repetition inserts K trades (5,000;
``--quick`` 2,000) spread evenly over the N symbols and over one closed minute (the next minute
each time, from a 5-minute boundary two hours ago: every symbol trades every minute, so no
fillers), then times ``tick()``. The first tick of each N is a warm-up; the median of the others
is reported, split into the Spark job (JDBC read + reduce + collect) and the candle write (upsert,
fillers and completeness). The trades read are those of the minute touched: the 5m candles roll up
the stored 1m candles of the window's other minutes.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench.common import Context, CpuMeter, json_log_lines, percentile, start_pipeline, wait_log
from bench.live import drain_check
from bench.report import Report, Row
from bench.visibility import VisibilityPoller, hist_percentile
from tests.harness.services import start_component

SYMBOLS = tuple(f"S{n:03d}USDT" for n in range(500))
RATE = 5000
WINDOW_MS = 60_000
VISIBLE_POLL_S = 0.05
CANDLE_POLL_S = 0.25
SETTLE_S = 15.0
TARGET_LAG_P99_MS = 100.0
TARGET_FRESH_P95_S = 2.5
TICK_SYMBOLS = (5, 50, 500)
TARGET_TICK_RATIO = 2.0

CANDLES_SQL = """
SELECT symbol, (extract(epoch FROM open_time) * 1000)::bigint, trade_count FROM candles
WHERE timeframe = '1m' AND open_time >= timestamptz 'epoch' + %(lo)s * interval '1 millisecond'
  AND open_time <= timestamptz 'epoch' + %(closed)s * interval '1 millisecond'
"""
COUNTS_SQL = """
SELECT symbol, (extract(epoch FROM date_bin(interval '1 minute', trade_time, timestamptz 'epoch')) * 1000)::bigint,
       count(*)
FROM trades WHERE trade_time >= timestamptz 'epoch' + %s * interval '1 millisecond' GROUP BY 1, 2
"""


def live(ctx: Context, report: Report) -> None:
    observe_s = 75.0 if ctx.quick else 180.0
    database, topic = ctx.database("symbols"), ctx.topic("symbols")
    env = {**ctx.pipeline_env(database, topic), "CANDLESTACK_SYMBOLS": ",".join(SYMBOLS).lower()}
    # The aggregator first, on the empty database: its start-up builds nothing then, and its first
    # tick sees only what the pipeline stored since.
    launched = time.monotonic()
    aggregator = start_component("aggregator", ["aggregator", "run"], {
        **env, "CANDLESTACK_SPARK_MASTER": "local[2]", "CANDLESTACK_AGGREGATOR_TICK_S": "2",
        "CANDLESTACK_LOG_FORMAT": "json"}, ctx.logdir)
    ctx.rss.watch("aggregator (driver + JVM)", aggregator.proc.pid)
    try:
        wait_log(aggregator.log_path, "aggregator running", timeout=180)
        startup_s = time.monotonic() - launched
        pipeline = start_pipeline(ctx, env, SYMBOLS, RATE, seed=17)
    except BaseException:
        ctx.rss.unwatch(aggregator.proc.pid)
        aggregator.stop(timeout=60)
        raise
    pipeline.extra.append(aggregator)
    replay = pipeline.replay
    conn = ctx.connect(database)
    candle_conn = ctx.connect(database)
    # (symbol, window ms) -> {trade_count: wall ms of the first poll after the close showing it}
    first_seen: dict[tuple[str, int], dict[int, float]] = {}
    try:
        ready_ms = time.time() * 1000
        since_ms = ready_ms - ready_ms % WINDOW_MS
        poller = VisibilityPoller(conn, since_ms=ready_ms + 2000)
        meter = CpuMeter({**pipeline.pids(ctx), "aggregator": aggregator.proc.pid})
        first = replay.status()
        began = time.monotonic()
        meter.start()
        end = began + observe_s
        next_candles = began
        with candle_conn.cursor() as cur:
            while time.monotonic() < end:
                poller.poll()
                if time.monotonic() >= next_candles:
                    next_candles += CANDLE_POLL_S
                    now_ms = time.time() * 1000
                    closed = now_ms - now_ms % WINDOW_MS - WINDOW_MS  # newest window that has closed
                    cur.execute(CANDLES_SQL, {"lo": max(since_ms, closed - 2 * WINDOW_MS), "closed": closed})
                    for symbol, window_ms, count in cur.fetchall():
                        seen = first_seen.setdefault((symbol, int(window_ms)), {})
                        seen.setdefault(int(count), now_ms)
                time.sleep(VISIBLE_POLL_S)
        cpu = meter.stop()
        load = os.getloadavg()[0]
        last = replay.status()
        counted_s = time.monotonic() - began
        observed_until = time.time() * 1000
        replay.control("pause")
        paused = replay.status()
        published = int(paused["published"])
        drain_end = time.monotonic() + 20
        while poller.rows < published and time.monotonic() < drain_end:
            poller.poll()
            time.sleep(VISIBLE_POLL_S)
        check = drain_check(conn, {s: int(v["published"]) for s, v in paused["symbols"].items()})
        with conn.cursor() as cur:
            cur.execute(COUNTS_SQL, (int(since_ms),))
            stored = {(symbol, int(window_ms)): int(n) for symbol, window_ms, n in cur.fetchall()}
        ticks = [line for line in json_log_lines(aggregator.log_path) if line.get("msg") == "tick"]
    finally:
        conn.close()
        candle_conn.close()
        pipeline.stop(ctx)
        ctx.pg.drop_database(database)  # about 1M trades
    unseen = max(0, published - poller.rows)
    lag_p99 = hist_percentile(poller.lag_ms, 99, unseen=unseen)
    producer_p99 = hist_percentile(poller.producer_ms, 99)
    delivered = int(last["published"]) - int(first["published"])
    pace = delivered / (RATE * counted_s)
    dropped = int(paused.get("slow_consumers_dropped", 0))

    delays: list[float] = []
    incomplete = 0
    for (symbol, window_ms), count in sorted(stored.items()):
        close_ms = window_ms + WINDOW_MS
        if close_ms <= ready_ms or close_ms > observed_until - SETTLE_S * 1000:
            continue
        since = first_seen.get((symbol, window_ms), {}).get(count)
        if since is None:
            incomplete += 1
        else:
            delays.append((since - close_ms) / 1000)
    fresh_p95 = percentile(delays, 95) if not incomplete else math.inf
    tick_s = [float(line.get("seconds", math.nan)) for line in ticks]
    tick_trades = [int(line.get("trades", 0)) for line in ticks]
    report.details["symbols"] = {
        "symbols": len(SYMBOLS), "rate": RATE, "observed_s": observe_s, "aggregator_startup_s": round(startup_s, 1),
        "lag_p50_ms": hist_percentile(poller.lag_ms, 50, unseen=unseen), "lag_p99_ms": lag_p99,
        "producer_p99_ms": producer_p99, "samples": poller.samples, "unseen_after_drain": unseen,
        "feed_pace": round(pace, 3), "slow_reader_dropped": dropped, "cpu_percent": cpu,
        "load_average_1m": round(load, 1), "worst_lag_ms_by_5s": poller.worst_by_slice(), **check,
        "freshness": {"windows": len(delays) + incomplete, "incomplete": incomplete,
                      "p50_s": percentile(delays, 50), "p95_s": fresh_p95, "max_s": max(delays, default=math.nan)},
        "aggregator_ticks": {"with_work": len(ticks), "seconds_p50": percentile(tick_s, 50),
                             "seconds_max": max(tick_s, default=math.nan),
                             "trades_read_p50": percentile([float(t) for t in tick_trades], 50),
                             "trades_read_max": max(tick_trades, default=0)},
    }
    busiest = max(cpu.items(), key=lambda item: item[1])
    cpu_note = ", ".join(f"{name} {share:.0f}%" for name, share in cpu.items())
    kept_up = check["exact"] and not dropped and pace >= 0.95
    report.add(Row("symbols", f"producer keeps up: stored / published, {len(SYMBOLS)} symbols @{RATE:,}/s",
                   check["stored"] / max(check["published"], 1), "ratio", target="1.00, ids 1..n, feed pace ≥ 0.95",
                   met=kept_up, note=(f"{check['stored']:,} of {check['published']:,}; feed pace {pace:.2f}; "
                                      f"slow-reader drops {dropped}; producer lag p99 {producer_p99:.0f} ms")))
    report.add(Row("symbols", f"ingest lag p99 (trade -> visible), {len(SYMBOLS)} symbols @{RATE:,}/s", lag_p99, "ms",
                   target=f"≤ {TARGET_LAG_P99_MS:.0f} ms", met=lag_p99 <= TARGET_LAG_P99_MS,
                   note=(f"{poller.samples:,} trades; CPU (% of a core) {cpu_note}; busiest {busiest[0]}; "
                         f"load average {load:.1f} on {os.cpu_count()} cores")))
    report.add(Row("symbols", f"1m candle complete after window close, p95, {len(SYMBOLS)} symbols", fresh_p95, "s",
                   target=f"≤ {TARGET_FRESH_P95_S} s", met=bool(delays) and fresh_p95 <= TARGET_FRESH_P95_S,
                   note=(f"{len(delays)} windows, {incomplete} incomplete; p50 {percentile(delays, 50):.2f} s, "
                         f"max {max(delays, default=math.nan):.1f} s; aggregator ticks with work: {len(ticks)}, "
                         f"p50 {percentile(tick_s, 50):.2f} s, max {max(tick_s, default=math.nan):.1f} s, "
                         f"reading up to {max(tick_trades, default=0):,} trades (the 1m windows touched)")))


@contextlib.contextmanager
def _timing(module: Any, name: str, into: list[float]) -> Iterator[None]:
    """Time every call of ``module.name`` while inside (the aggregator calls it through the module)."""
    original: Callable[..., Any] = getattr(module, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - began)

    setattr(module, name, timed)
    try:
        yield
    finally:
        setattr(module, name, original)


def _insert(conn: Any, symbols: list[str], next_id: dict[str, int], minute_ms: int, count: int,
            rng: random.Random) -> None:
    rows = []
    for n in range(count):
        symbol = symbols[n % len(symbols)]
        trade_id = next_id[symbol]
        next_id[symbol] = trade_id + 1
        at = minute_ms + n * WINDOW_MS // count  # in time order, so ids grow with time per symbol
        rows.append((symbol, trade_id, f"{rng.uniform(1, 50_000):.8f}", f"{rng.uniform(0.001, 2):.8f}", at, at,
                     rng.random() < 0.5))
    from psycopg2.extras import execute_values  # noqa: PLC0415

    with conn, conn.cursor() as cur:
        day = time.strftime("%Y-%m-%d", time.gmtime(minute_ms / 1000))
        cur.execute("SELECT ensure_trade_partitions(%s, %s)", (day, day))
        execute_values(cur, "INSERT INTO trades (symbol, trade_id, stream, price, qty, trade_time, event_time, "
                            "buyer_is_maker, ingest_time) VALUES %s", rows,
                       template="(%s, %s, 'trade', %s::numeric, %s::numeric, "
                                "timestamptz 'epoch' + %s * interval '1 millisecond', "
                                "timestamptz 'epoch' + %s * interval '1 millisecond', %s, now())",
                       page_size=5000)


def tick_cost(ctx: Context, report: Report) -> None:
    from candlestack.aggregator import compute, sink  # noqa: PLC0415 - loads pyspark
    from candlestack.aggregator.jobs import Aggregator  # noqa: PLC0415
    from candlestack.aggregator.session import build_session  # noqa: PLC0415
    from candlestack.core import db  # noqa: PLC0415
    from tests.harness.settings import aggregator_settings  # noqa: PLC0415

    trades = 2000 if ctx.quick else 5000
    repeats = 2 if ctx.quick else 4  # timed ticks per N after the warm-up: all in one 5m window
    extra = {"CANDLESTACK_AGGREGATOR_OPEN_REFRESH_S": "0"}
    spark = build_session(aggregator_settings(ctx.pg, "postgres", "local[2]", **extra), app_name="bench-ticks")
    results: dict[int, dict[str, Any]] = {}
    try:
        for count in TICK_SYMBOLS:
            database = ctx.database(f"ticks_{count}")
            settings = aggregator_settings(ctx.pg, database, "local[2]", **extra)
            conn = db.connect(settings.postgres)
            aggregator = Aggregator(settings, spark, conn)
            symbols = [f"S{n:03d}USDT" for n in range(count)]
            next_id = dict.fromkeys(symbols, 1)
            rng = random.Random(count)
            now_ms = int(time.time() * 1000) - 2 * 3600 * 1000
            base = now_ms - now_ms % 300_000
            totals: list[float] = []
            spark_s: list[float] = []
            write_s: list[float] = []
            read: list[int] = []
            try:
                watermark = aggregator.current_xmin()
                for rep in range(repeats + 1):
                    _insert(conn, symbols, next_id, base + rep * WINDOW_MS, trades, rng)
                    jobs: list[float] = []
                    writes: list[float] = []
                    with _timing(compute, "compute", jobs), _timing(sink, "write", writes):
                        began = time.perf_counter()
                        watermark, outcome = aggregator.tick(watermark)
                        elapsed = time.perf_counter() - began
                    if outcome is None or outcome.trades < trades:
                        raise AssertionError(f"tick at {count} symbols did not build the new trades: {outcome}")
                    if rep:  # the first is a warm-up
                        totals.append(elapsed)
                        spark_s.append(sum(jobs))
                        write_s.append(sum(writes))
                        read.append(outcome.trades)
            finally:
                conn.close()
                ctx.pg.drop_database(database)
            results[count] = {"tick_s": statistics.median(totals), "spark_job_s": statistics.median(spark_s),
                              "candle_write_s": statistics.median(write_s), "ticks_s": [round(t, 3) for t in totals],
                              "trades_read": read}
            got = results[count]
            print(f"symbols: tick at {count} symbols, {trades:,} trades touched: median {got['tick_s']:.2f} s "
                  f"(Spark job {got['spark_job_s']:.2f} s, candle write {got['candle_write_s']:.2f} s)", flush=True)
    finally:
        _stop_spark(spark)
    report.details.setdefault("symbols", {})["tick_cost"] = {"trades_touched": trades, "repeats": repeats,
                                                             "by_symbols": results}
    base_s = results[TICK_SYMBOLS[0]]["tick_s"]
    for count in TICK_SYMBOLS:
        result = results[count]
        last = count == TICK_SYMBOLS[-1]
        report.add(Row(
            "symbols", f"aggregator tick, {count} symbols, {trades:,} trades touched", result["tick_s"], "s",
            base_s, f"{TICK_SYMBOLS[0]} symbols, same trades",
            target=f"≤ {TARGET_TICK_RATIO:.0f}x the {TICK_SYMBOLS[0]}-symbol tick" if last else "",
            met=(result["tick_s"] <= TARGET_TICK_RATIO * base_s) if last else None,
            note=(f"median of {repeats}; Spark job {result['spark_job_s']:.2f} s, candle write "
                  f"{result['candle_write_s']:.2f} s; trades read {min(result['trades_read']):,}-"
                  f"{max(result['trades_read']):,} (the minute touched)")))


def _stop_spark(spark: Any) -> None:
    """Stop the session and its JVM; not session.stop_session, which also waits for every child of
    this process to exit (the broker is one)."""
    from pyspark import SparkContext  # noqa: PLC0415

    spark.stop()
    gateway = SparkContext._gateway
    proc = getattr(gateway, "proc", None)
    if gateway is not None:
        with contextlib.suppress(Exception):
            gateway.shutdown()
    if proc is not None:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except Exception:
            proc.kill()
    SparkContext._gateway = None
    SparkContext._jvm = None


def run(ctx: Context, report: Report) -> None:
    live(ctx, report)
    tick_cost(ctx, report)
