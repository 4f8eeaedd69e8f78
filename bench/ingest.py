"""Ingest throughput: our ``candlestack consumer`` against a one-INSERT-per-message baseline.

Both read messages pre-loaded into a topic of the same broker and write into the same
PostgreSQL cluster (each into its own database). The rate is messages / (time from the
consumer's partition assignment, i.e. before its first fetch, to the moment the group's
committed offsets reach the topic's end, polled every 20 ms) — rows durable and offsets
committed.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.common import Context, json_log_lines, scalar, wait_log
from bench.decode_cost import micro
from bench.profile import render, summarise
from bench.report import Report, Row
from candlestack.core.contract import Trade
from candlestack.core.settings import KafkaSettings
from candlestack.producer.publisher import producer_config
from tests.harness.services import start_component

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "XRPUSDT")
TARGET_RATE = 100_000
TARGET_RATIO = 30
TARGET_DECODE_US = 4.0


def messages(count: int, *, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """``count`` valid trade messages (the producer's own encoding), ids consecutive per symbol."""
    rng = random.Random(seed)
    now = int(time.time() * 1000) - 3_600_000
    next_id = dict.fromkeys(SYMBOLS, 1_000_000)
    price = dict.fromkeys(SYMBOLS, 3_000_000_000_000)
    out = []
    for n in range(count):
        symbol = SYMBOLS[n % len(SYMBOLS)]
        price[symbol] = max(1, price[symbol] + rng.randrange(-50_000_000, 50_000_001))
        qty = rng.randrange(100_000, 200_000_000)
        when = now + n // 100
        trade = Trade(symbol=symbol, stream="trade", trade_id=next_id[symbol],
                      price=f"{price[symbol] // 10**8}.{price[symbol] % 10**8:08d}",
                      qty=f"{qty // 10**8}.{qty % 10**8:08d}", trade_time=when, event_time=when,
                      buyer_is_maker=bool(n & 1), ingest_time=when + 3)
        next_id[symbol] += 1
        out.append((trade.key, trade.to_json()))
    return out


def preload(ctx: Context, topic: str, payloads: list[tuple[bytes, bytes]]) -> float:
    """Produce with the producer's own settings; returns seconds taken."""
    started = time.perf_counter()
    config = producer_config(KafkaSettings(bootstrap_servers=ctx.broker.bootstrap, topic=topic),
                             buffer_max_messages=200_000)
    producer = Producer(config)
    for key, value in payloads:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) != 0:
        raise RuntimeError("pre-load did not finish")
    return time.perf_counter() - started


def end_offsets(ctx: Context, topic: str) -> dict[int, int]:
    probe = Consumer({"bootstrap.servers": ctx.broker.bootstrap, "group.id": "bench-probe"})
    try:
        parts = probe.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        probe.close()


def wait_committed(ctx: Context, topic: str, group: str, ends: dict[int, int], *, timeout: float) -> float:
    """Poll the group's committed offsets every 20 ms; the wall time they first reach ``ends``."""
    probe = Consumer({"bootstrap.servers": ctx.broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    wanted = [TopicPartition(topic, p) for p in sorted(ends)]
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            committed = probe.committed(wanted, timeout=10)
            now = time.time()
            if all(tp.offset >= ends[tp.partition] for tp in committed):
                return now
            time.sleep(0.02)
    finally:
        probe.close()
    raise TimeoutError(f"offsets of {group} did not reach the end of {topic} in {timeout}s")


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class IngestRun:
    messages: int
    seconds: float
    first_store_lag_s: float
    extra: dict[str, Any]

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def run_ours(ctx: Context, count: int, payloads: list[tuple[bytes, bytes]], *,
             batch_max: int | None = None, profile: Path | None = None) -> IngestRun:
    database, topic = ctx.database("ingest"), ctx.topic("ingest")
    preload(ctx, topic, payloads[:count])
    ends = end_offsets(ctx, topic)
    env = {**ctx.pipeline_env(database, topic), "CANDLESTACK_LOG_FORMAT": "json"}
    if batch_max is not None:
        env["CANDLESTACK_CONSUMER_BATCH_MAX_MESSAGES"] = str(batch_max)
    consumer = start_component("consumer", ["consumer"], env, ctx.logdir)
    ctx.rss.watch("consumer", consumer.proc.pid)
    spy: subprocess.Popen[bytes] | None = None
    if profile is not None:
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(consumer.proc.pid),
                                "--format", "raw", "--idle", "--rate", "200", "--output", str(profile)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_log(consumer.log_path, "partitions assigned", timeout=60)
        done = wait_committed(ctx, topic, "group-" + topic, ends, timeout=600)
    finally:
        ctx.rss.unwatch(consumer.proc.pid)
        consumer.stop()
        if spy is not None:
            spy.wait(30)
    assigned = min(_ts(line["ts"]) for line in json_log_lines(consumer.log_path)
                   if line.get("msg") == "partitions assigned")
    conn = ctx.connect(database)
    try:
        stored = scalar(conn, "SELECT count(*) FROM trades")
        first_store = scalar(conn, "SELECT extract(epoch FROM min(stored_at))::float8 FROM trades")
    finally:
        conn.close()
    if stored != count:
        raise RuntimeError(f"our consumer stored {stored} of {count} trades")
    return IngestRun(count, done - assigned, first_store - assigned,
                     {"assigned_to_committed_s": round(done - assigned, 3),
                      "first_store_to_committed_s": round(done - first_store, 3)})


def run_baseline(ctx: Context, count: int, payloads: list[tuple[bytes, bytes]]) -> IngestRun:
    database, topic = ctx.database("ingest_baseline", migrate=False), ctx.topic("ingest_baseline")
    preload(ctx, topic, payloads[:count])
    dsn = f"host=127.0.0.1 port={ctx.pg.port} dbname={database} user=postgres password=x options='-c timezone=UTC'"
    proc = subprocess.Popen([sys.executable, "-m", "bench.baseline_consumer", "--bootstrap", ctx.broker.bootstrap,
                             "--topic", topic, "--group", "group-" + topic, "--dsn", dsn, "--count", str(count)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent)
    ctx.rss.watch("baseline consumer", proc.pid)
    out, err = proc.communicate(timeout=900)
    ctx.rss.unwatch(proc.pid)
    if proc.returncode != 0:
        raise RuntimeError(f"baseline consumer failed: {err.decode(errors='replace')[-2000:]}")
    timing = json.loads(out.decode().strip().splitlines()[-1])
    return IngestRun(count, timing["committed"] - timing["assigned"], timing["first_message"] - timing["assigned"],
                     {k: timing[k] for k in ("assigned", "first_message", "last_row", "committed")})


def run(ctx: Context, report: Report) -> None:
    ours_n, base_n = (150_000, 4_000) if ctx.quick else (500_000, 10_000)
    payloads = messages(ours_n)
    baseline = run_baseline(ctx, base_n, payloads)
    ours = run_ours(ctx, ours_n, payloads)
    report.details["ingest"] = {"ours": {"messages": ours.messages, "seconds": round(ours.seconds, 3), **ours.extra},
                                "baseline": {"messages": baseline.messages, "seconds": round(baseline.seconds, 3)}}
    report.add(Row("ingest", f"trades/s durable + offsets committed ({ours_n:,} msgs; baseline {base_n:,})",
                   ours.rate, "trades/s", baseline.rate, "1 INSERT+COMMIT per msg",
                   f"≥ {TARGET_RATE:,}/s and ≥ {TARGET_RATIO}x",
                   ours.rate >= TARGET_RATE and ours.rate >= TARGET_RATIO * baseline.rate,
                   f"{ours.seconds:.2f} s vs {baseline.seconds:.2f} s"))
    costs = micro([value for _key, value in payloads[:50_000]], rounds=5)
    report.details["ingest"]["decode_us_per_msg"] = {k: round(v, 2) for k, v in costs.items()}
    report.add(Row("ingest", "consumer CPU per msg, payload -> COPY line (bench/decode_cost.py)",
                   costs["current_us"], "µs", costs["json_loads_us"], "stdlib json.loads alone",
                   f"≤ {TARGET_DECODE_US:.0f} µs", costs["current_us"] <= TARGET_DECODE_US,
                   note=f"one core decodes at most {1e6 / costs['current_us']:,.0f} msgs/s before any I/O"))
    if ctx.profile:
        profile_run(ctx, report, payloads)


def profile_run(ctx: Context, report: Report, payloads: list[tuple[bytes, bytes]]) -> None:
    """One more run of our consumer with py-spy attached (not the measured run: sampling costs a little)."""
    out = ctx.workdir / "consumer.pyspy.txt"
    profiled = run_ours(ctx, len(payloads), payloads, profile=out)
    summary = summarise(out)
    report.details.setdefault("ingest", {})["profile"] = {"rate_under_py_spy": round(profiled.rate), **summary}
    print(f"py-spy profile of our consumer ({profiled.rate:,.0f} trades/s while sampled):\n{render(summary)}")
