"""Candle freshness, and the aggregator's CPU at rest.

A live pipeline (synthetic replay at 50 trades/s over 4 symbols -> producer -> broker ->
consumer) feeds PostgreSQL while ``candlestack aggregator run`` (subprocess, local[2], tick 2 s)
keeps candles current. It runs twice on the same live feed:

1. the baseline: every tick refreshes the open candles (``CANDLESTACK_AGGREGATOR_OPEN_REFRESH_S=0``),
   as before the rest mode;
2. the default settings (the rest mode): the open candles wait up to 30 s, closed ones do not.

For each, the CPU time of the aggregator's whole process tree (Python driver and its JVM, which
holds the local executor) is read from /proc after a warm-up (45 s after the first tick; the JVM
compiles Spark's code paths during its first jobs) and at the end, and divided by the wall time
between: percent of one core, as a long-running aggregator spends it.

Freshness, on the second run: every 250 ms one query compares, per (symbol, 1m window), the
number of stored trades with the candle's trade_count. A window is complete from the first poll
after its close from which the two stay equal to the end of the observation (a later trade that
breaks the equality starts the clock again). Windows counted: those closing after the aggregator
is running and at least 15 s before the end of the observation. The old system's 60-70 s is
quoted as the reference; the baseline run's figure is reported beside it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common import Context, CpuMeter, percentile, start_pipeline, wait_log
from bench.report import Report, Row
from tests.harness.services import Component, start_component

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "XRPUSDT")
RATE = 50
WINDOW_MS = 60_000
POLL_S = 0.25
SETTLE_S = 15.0
TARGET_P95_S = 2.5
TARGET_REST_CPU_PERCENT = 5.0

STATE_SQL = """
SELECT t.symbol, (extract(epoch FROM t.w) * 1000)::bigint, t.n, c.trade_count
FROM (SELECT symbol, date_bin(interval '1 minute', trade_time, timestamptz 'epoch') AS w, count(*) AS n
      FROM trades WHERE trade_time >= timestamptz 'epoch' + %s * interval '1 millisecond'
      GROUP BY 1, 2) AS t
LEFT JOIN candles c ON c.symbol = t.symbol AND c.timeframe = '1m' AND c.open_time = t.w
"""


def observe(ctx: Context, env: dict[str, str], database: str, *, seconds: float, open_refresh_s: str | None,
            label: str, warmup_s: float) -> dict[str, Any]:
    """Run the aggregator for ``seconds`` after its first tick; its CPU and the windows' freshness."""
    extra = {} if open_refresh_s is None else {"CANDLESTACK_AGGREGATOR_OPEN_REFRESH_S": open_refresh_s}
    launched = time.monotonic()
    aggregator: Component | None = start_component(f"aggregator-{label}", ["aggregator", "run"], {
        **env, "CANDLESTACK_SPARK_MASTER": "local[2]", "CANDLESTACK_AGGREGATOR_TICK_S": "2",
        "CANDLESTACK_LOG_FORMAT": "json", **extra}, ctx.logdir)
    assert aggregator is not None
    conn = ctx.connect(database)
    # (symbol, window start ms) -> wall ms since when trade_count == stored trades (None: not equal)
    equal_since: dict[tuple[str, int], float | None] = {}
    try:
        ctx.rss.watch("aggregator (driver + JVM)", aggregator.proc.pid)
        wait_log(aggregator.log_path, "aggregator running", timeout=180)
        startup_s = time.monotonic() - launched
        cpu = CpuMeter({"aggregator": aggregator.proc.pid})
        cpu_from = time.monotonic() + warmup_s
        ready_ms = time.time() * 1000
        since_ms = ready_ms - ready_ms % WINDOW_MS
        end = time.monotonic() + seconds
        with conn.cursor() as cur:
            while time.monotonic() < end:
                if cpu_from is not None and time.monotonic() >= cpu_from:
                    cpu.start()
                    cpu_from = None
                cur.execute(STATE_SQL, (int(since_ms),))
                now_ms = time.time() * 1000
                for symbol, window_ms, stored, counted in cur.fetchall():
                    if now_ms < window_ms + WINDOW_MS:
                        continue
                    key = (symbol, int(window_ms))
                    if counted == stored:
                        if equal_since.get(key) is None:
                            equal_since[key] = now_ms
                    else:
                        equal_since[key] = None
                time.sleep(POLL_S)
        cpu.stop()
        cpu_percent = cpu.percent["aggregator"]
        observed_until = time.time() * 1000
        ticks = _count_lines(aggregator.log_path, '"msg": "tick"')
    finally:
        conn.close()
        ctx.rss.unwatch(aggregator.proc.pid)
        aggregator.stop(timeout=60)
    delays: list[float] = []
    incomplete = 0
    per_window: dict[str, Any] = {}
    for (symbol, window_ms), since in sorted(equal_since.items()):
        close_ms = window_ms + WINDOW_MS
        if close_ms <= ready_ms or close_ms > observed_until - SETTLE_S * 1000:
            continue
        if since is None:
            incomplete += 1
            per_window[f"{symbol}@{window_ms}"] = None
        else:
            delays.append((since - close_ms) / 1000)
            per_window[f"{symbol}@{window_ms}"] = round((since - close_ms) / 1000, 2)
    return {"startup_s": round(startup_s, 1), "cpu_percent": round(cpu_percent, 2), "delays": delays,
            "incomplete": incomplete, "windows": per_window, "observed_s": seconds, "spark_jobs": ticks}


def _count_lines(path: Path, text: str) -> int:
    return sum(text in line for line in path.read_text(errors="replace").splitlines())


def run(ctx: Context, report: Report) -> None:
    baseline_s, observe_s = (50.0, 100.0) if ctx.quick else (120.0, 240.0)
    # The JVM compiles Spark's code paths during its first jobs: CPU is measured after this.
    warmup_s = 20.0 if ctx.quick else 45.0
    database, topic = ctx.database("freshness"), ctx.topic("freshness")
    env = ctx.pipeline_env(database, topic)
    pipeline = start_pipeline(ctx, env, SYMBOLS, RATE, seed=5)
    try:
        every_tick = observe(ctx, env, database, seconds=baseline_s, open_refresh_s="0", label="every-tick",
                             warmup_s=warmup_s)
        rest = observe(ctx, env, database, seconds=observe_s, open_refresh_s=None, label="rest", warmup_s=warmup_s)
    finally:
        pipeline.stop(ctx)
    delays, incomplete = rest["delays"], rest["incomplete"]
    p95 = percentile(delays, 95) if not incomplete else float("inf")
    base_p95 = percentile(every_tick["delays"], 95) if not every_tick["incomplete"] else float("inf")
    report.details["freshness"] = {"rest": {k: v for k, v in rest.items() if k != "delays"},
                                   "every_tick": {k: v for k, v in every_tick.items() if k != "delays"}}
    baseline = "every tick refreshes (open refresh 0)"
    report.add(Row("freshness", "1m candle complete after window close, p50", percentile(delays, 50), "s",
                   percentile(every_tick["delays"], 50), baseline,
                   note=f"{len(delays)} windows ({len(SYMBOLS)} symbols), {RATE} trades/s; old system 60-70 s"))
    report.add(Row("freshness", "1m candle complete after window close, p95", p95, "s", base_p95, baseline,
                   target=f"≤ {TARGET_P95_S} s", met=bool(delays) and p95 <= TARGET_P95_S,
                   note=f"max {max(delays, default=float('nan')):.1f} s; {incomplete} incomplete"))
    report.add(Row("freshness", f"aggregator CPU at rest ({RATE} trades/s), % of one core", rest["cpu_percent"],
                   "%", every_tick["cpu_percent"], baseline,
                   target=f"≤ {TARGET_REST_CPU_PERCENT:.0f} %", met=rest["cpu_percent"] <= TARGET_REST_CPU_PERCENT,
                   note=(f"driver + JVM tree (local[2]) over {observe_s - warmup_s:.0f} s after a {warmup_s:.0f} s "
                         f"warm-up; Spark jobs {rest['spark_jobs']} in {observe_s:.0f} s, "
                         f"baseline {every_tick['spark_jobs']} in {baseline_s:.0f} s")))
    report.add(Row("freshness", "aggregator start-up to first tick (Spark local[2])", rest["startup_s"], "s"))
