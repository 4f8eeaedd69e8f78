"""Tick latency: replay (synthetic, trade time = send time) -> producer -> broker -> consumer ->
row visible in PostgreSQL, against the bare broker's produce -> consume round trip at the
same rate, measured in the same run.

Pipeline: a poller queries PostgreSQL every ~5 ms for rows above the highest trade id seen per
symbol; a row's latency is the wall time just before the query whose snapshot first showed it
(an upper bound, resolution = the poll interval) minus its trade time (the synthetic trade
time is when the replay published it; ms precision).

Bare broker: a producer with our producer's own settings (idempotent, acks=all, lz4, linger 5)
sends messages of the same size stamped with the send time, paced in 5 ms ticks like the replay;
a consumer with our consumer's settings (its fetch.wait.max.ms, read_committed) polls them one by
one and stamps the receive time. Both sides run in this process, the producer in a thread.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer

from bench.common import Context, percentile, start_pipeline, wait_for
from bench.report import Report, Row
from candlestack.consumer.main import consumer_config
from candlestack.core.settings import ConsumerSettings, KafkaSettings
from candlestack.producer.publisher import producer_config

SYMBOLS = ("BTCUSDT", "ETHUSDT")
WARMUP_S = 3.0
DRAIN_S = 30.0
POLL_SQL = """
SELECT symbol, trade_id, (extract(epoch FROM trade_time) * 1000)::bigint,
       (extract(epoch FROM ingest_time) * 1000)::bigint, extract(epoch FROM stored_at)::float8 * 1000
FROM trades WHERE (symbol = %s AND trade_id > %s) OR (symbol = %s AND trade_id > %s)
"""
TARGET_ADDED_P99_MS = 20.0
RATES = (5000, 10000)


@dataclass
class Latencies:
    values_ms: list[float]
    expected: int
    poll_interval_ms: float = math.nan

    def p(self, q: float) -> float:
        return percentile(self.values_ms, q)


def bare_broker(ctx: Context, rate: int, seconds: float) -> Latencies:
    topic = ctx.topic(f"bare_{rate}")
    settings = ConsumerSettings.from_env({**ctx.pipeline_env("unused", topic), "CANDLESTACK_METRICS_PORT": "0"})
    config = consumer_config(settings)
    config.pop("logger", None)
    consumer = Consumer(config)
    assigned = threading.Event()
    consumer.subscribe([topic], on_assign=lambda _c, _p: assigned.set())
    wait_for(lambda: consumer.poll(0.2) is None and assigned.is_set(), timeout=60, interval=0.0,
             what="bare consumer assignment")
    producer = Producer(producer_config(KafkaSettings(ctx.broker.bootstrap, topic), buffer_max_messages=100_000))
    padding = "x" * 200  # our trade messages are about 270 bytes
    stop = threading.Event()
    sent = [0]

    def produce() -> None:
        began = time.monotonic()
        while not stop.is_set():
            elapsed = time.monotonic() - began
            if elapsed >= seconds:
                break
            due = math.floor(elapsed * rate) + 1 - sent[0]
            for _ in range(due):
                body = json.dumps({"sent_ns": time.time_ns(), "n": sent[0], "pad": padding}).encode()
                producer.produce(topic, key=SYMBOLS[sent[0] % 2].encode(), value=body)
                sent[0] += 1
            producer.poll(0)
            time.sleep(0.005)
        producer.flush(30)

    thread = threading.Thread(target=produce, name="bare-producer")
    start = time.time_ns()
    thread.start()
    latencies: list[float] = []
    received = 0
    deadline = time.monotonic() + seconds + 15
    while time.monotonic() < deadline:
        message = consumer.poll(0.1)
        if message is None:
            if not thread.is_alive() and received >= sent[0]:
                break
            continue
        if message.error() is not None:
            continue
        now = time.time_ns()
        received += 1
        sent_ns = json.loads(message.value())["sent_ns"]
        if sent_ns - start >= WARMUP_S * 1e9:
            latencies.append((now - sent_ns) / 1e6)
    stop.set()
    thread.join(30)
    consumer.close()
    return Latencies(latencies, sent[0])


def pipeline(ctx: Context, rate: int, seconds: float) -> tuple[Latencies, dict[str, Any]]:
    database, topic = ctx.database(f"latency_{rate}"), ctx.topic(f"latency_{rate}")
    env = ctx.pipeline_env(database, topic)
    conn = ctx.connect(database)
    pipe = start_pipeline(ctx, env, SYMBOLS, rate, seed=11)
    replay = pipe.replay
    last_id = dict.fromkeys(SYMBOLS, 0)
    # (trade time ms, first-seen wall ms, producer ingest_time ms, batch stored_at ms)
    seen: list[tuple[int, float, int, float]] = []
    polls = 0
    poll_s = math.nan
    try:
        began = time.monotonic()
        end = began + seconds
        published: int | None = None
        with conn.cursor() as cur:
            while True:
                now = time.monotonic()
                if published is not None and (sum(last_id.values()) >= published or now >= end + DRAIN_S):
                    break
                wall_ms = time.time_ns() / 1e6
                cur.execute(POLL_SQL, (SYMBOLS[0], last_id[SYMBOLS[0]], SYMBOLS[1], last_id[SYMBOLS[1]]))
                polls += 1
                for symbol, trade_id, trade_ms, ingest_ms, stored_ms in cur.fetchall():
                    last_id[symbol] = max(last_id[symbol], trade_id)
                    seen.append((trade_ms, wall_ms, ingest_ms, stored_ms))
                if now >= end and published is None:
                    replay.control("pause")  # then drain: poll until every published trade is seen
                    published = int(replay.status()["published"])
                time.sleep(0.003)
        poll_s = time.monotonic() - began
        status = replay.status()
    finally:
        conn.close()
        pipe.stop(ctx)
    first_trade = min(row[0] for row in seen) if seen else 0
    kept = [row for row in seen if row[0] - first_trade >= WARMUP_S * 1000]
    values = [wall - trade for trade, wall, _ingest, _stored in kept]
    # ids start at 1 per symbol, so the ids seen add up to the trades stored
    stages = {
        "replay_to_producer_ms": [ingest - trade for trade, _wall, ingest, _stored in kept],
        "producer_to_batch_write_ms": [stored - ingest for _trade, _wall, ingest, stored in kept],
        "batch_write_to_visible_ms": [wall - stored for _trade, wall, _ingest, stored in kept],
    }
    stage_summary = {name: {"p50": round(percentile(v, 50), 1), "p99": round(percentile(v, 99), 1)}
                     for name, v in stages.items()}
    return (Latencies(values, int(status.get("published", 0)), poll_s * 1000 / max(polls, 1)),
            {"published": status.get("published"), "stored_seen": len(seen), "polls": polls,
             "missing_after_drain": int(status.get("published", 0)) - len(seen), "stages": stage_summary})


def run(ctx: Context, report: Report) -> None:
    seconds = 10.0 if ctx.quick else 25.0
    details: dict[str, Any] = {}
    for rate in RATES:
        bare = bare_broker(ctx, rate, seconds)
        pipe, info = pipeline(ctx, rate, seconds)
        label = f"{rate // 1000}k/s"
        details[label] = {
            "pipeline": {"p50": pipe.p(50), "p99": pipe.p(99), "max": max(pipe.values_ms, default=math.nan),
                         "samples": len(pipe.values_ms), "poll_interval_ms": round(pipe.poll_interval_ms, 2), **info},
            "bare": {"p50": bare.p(50), "p99": bare.p(99), "max": max(bare.values_ms, default=math.nan),
                     "samples": len(bare.values_ms), "sent": bare.expected},
        }
        base = "bare broker round trip"
        report.add(Row("latency", f"pipeline p50 @{label}", pipe.p(50), "ms", bare.p(50), base,
                       note=f"{len(pipe.values_ms):,} trades, polled every {pipe.poll_interval_ms:.1f} ms"))
        stages = info["stages"]
        report.add(Row("latency", f"pipeline p99 @{label}", pipe.p(99), "ms", bare.p(99), base,
                       note=f"bare: {len(bare.values_ms):,} msgs; {info['missing_after_drain']} unseen after drain"))
        for stage, text in (("replay_to_producer_ms", "replay -> producer (ingest_time)"),
                            ("producer_to_batch_write_ms", "producer -> consumer batch write (stored_at)"),
                            ("batch_write_to_visible_ms", "batch write start -> row visible")):
            report.add(Row("latency", f"  stage {text} p50/p99 @{label}", stages[stage]["p50"], "ms",
                           note=f"p99 {stages[stage]['p99']:.0f} ms"))
        added50, added99 = pipe.p(50) - bare.p(50), pipe.p(99) - bare.p(99)
        report.add(Row("latency", f"added over bare broker p50 @{label}", added50, "ms"))
        report.add(Row("latency", f"added over bare broker p99 @{label}", added99, "ms",
                       target=f"≤ {TARGET_ADDED_P99_MS:.0f} ms", met=added99 <= TARGET_ADDED_P99_MS))
    report.details["latency"] = details
