"""Candle freshness: seconds from a 1m window's close to its candle row being complete.

A live pipeline (synthetic replay at 50 trades/s over 4 symbols -> producer -> broker ->
consumer) feeds PostgreSQL while ``candlestack aggregator run`` (subprocess, local[2], tick 2 s)
keeps candles current. Every 250 ms one query compares, per (symbol, 1m window), the number of
stored trades with the candle's trade_count. A window is complete from the first poll after its
close from which the two stay equal to the end of the observation (a later trade that breaks
the equality starts the clock again). Windows counted: those closing after the aggregator is
running and at least 15 s before the end of the observation.

There is no in-run baseline: the old system's 60-70 s is quoted as the reference.
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import Context, percentile, wait_log
from bench.report import Report, Row
from tests.harness.services import start_component, start_replay

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "XRPUSDT")
RATE = 50
WINDOW_MS = 60_000
POLL_S = 0.25
SETTLE_S = 15.0
TARGET_P95_S = 10.0

STATE_SQL = """
SELECT t.symbol, (extract(epoch FROM t.w) * 1000)::bigint, t.n, c.trade_count
FROM (SELECT symbol, date_bin(interval '1 minute', trade_time, timestamptz 'epoch') AS w, count(*) AS n
      FROM trades WHERE trade_time >= timestamptz 'epoch' + %s * interval '1 millisecond'
      GROUP BY 1, 2) AS t
LEFT JOIN candles c ON c.symbol = t.symbol AND c.timeframe = '1m' AND c.open_time = t.w
"""


def run(ctx: Context, report: Report) -> None:
    observe_s = 100.0 if ctx.quick else 240.0
    database, topic = ctx.database("freshness"), ctx.topic("freshness")
    env = ctx.pipeline_env(database, topic)
    consumer = start_component("consumer", ["consumer"], env, ctx.logdir)
    ctx.rss.watch("consumer", consumer.proc.pid)
    replay = start_replay(["--synthetic", ",".join(SYMBOLS), "--rate", str(RATE), "--seed", "5", "--start-id", "1",
                           "--progress-every", "0"], ctx.logdir)
    ctx.rss.watch("replay", replay.component.proc.pid)
    producer = aggregator = None
    conn = ctx.connect(database)
    # (symbol, window start ms) -> wall ms since when trade_count == stored trades (None: not equal)
    equal_since: dict[tuple[str, int], float | None] = {}
    try:
        wait_log(consumer.log_path, "partitions assigned", timeout=60)
        producer = start_component("producer", ["producer"], {
            **env, "CANDLESTACK_SYMBOLS": ",".join(SYMBOLS).lower(), "CANDLESTACK_STREAM": "trade",
            "CANDLESTACK_BINANCE_WS_URL": replay.ws_url, "CANDLESTACK_BINANCE_REST_URL": replay.rest_url}, ctx.logdir)
        ctx.rss.watch("producer", producer.proc.pid)
        launched = time.monotonic()
        aggregator = start_component("aggregator", ["aggregator", "run"], {
            **env, "CANDLESTACK_SPARK_MASTER": "local[2]", "CANDLESTACK_AGGREGATOR_TICK_S": "2",
            "CANDLESTACK_LOG_FORMAT": "json"}, ctx.logdir)
        ctx.rss.watch("aggregator (driver + JVM)", aggregator.proc.pid)
        wait_log(aggregator.log_path, "aggregator running", timeout=180)
        startup_s = time.monotonic() - launched
        ready_ms = time.time() * 1000
        since_ms = ready_ms - ready_ms % WINDOW_MS
        end = time.monotonic() + observe_s
        with conn.cursor() as cur:
            while time.monotonic() < end:
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
        observed_until = time.time() * 1000
    finally:
        conn.close()
        for component in (aggregator, producer):
            if component is not None:
                ctx.rss.unwatch(component.proc.pid)
                component.stop(timeout=60)
        ctx.rss.unwatch(replay.component.proc.pid)
        replay.component.stop()
        ctx.rss.unwatch(consumer.proc.pid)
        consumer.stop()
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
    p95 = percentile(delays, 95) if not incomplete else float("inf")
    report.details["freshness"] = {"aggregator_startup_s": round(startup_s, 1), "windows": per_window,
                                   "incomplete": incomplete, "observed_s": observe_s}
    reference = "old system 60-70 s (quoted, not run)"
    report.add(Row("freshness", "1m candle complete after window close, p50", percentile(delays, 50), "s",
                   baseline_label=reference, note=f"{len(delays)} windows ({len(SYMBOLS)} symbols), {RATE} trades/s"))
    report.add(Row("freshness", "1m candle complete after window close, p95", p95, "s", baseline_label=reference,
                   target=f"≤ {TARGET_P95_S:.0f} s", met=bool(delays) and p95 <= TARGET_P95_S,
                   note=f"max {max(delays, default=float('nan')):.1f} s; {incomplete} incomplete"))
    report.add(Row("freshness", "aggregator start-up to first tick (Spark local[2])", startup_s, "s"))
