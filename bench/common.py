"""Shared plumbing: a run context holding the services of one invocation (started by the test
harness, :mod:`tests.harness.services`), and small helpers for databases, topics, logs and
percentiles. Run from the repository's root (``python -m bench``), where ``tests`` is importable."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2.extensions

from bench.rss import RssTracker
from candlestack.core import db
from tests.harness.services import (
    Broker,
    Component,
    Postgres,
    Replay,
    SparkCluster,
    start_component,
    start_replay,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["Broker", "Context", "CpuMeter", "Postgres", "SparkCluster", "percentile", "wait_for"]


@dataclass
class Context:
    """Everything a benchmark needs: services started once per ``python -m bench`` run."""

    pg: Postgres
    broker: Broker
    workdir: Path
    rss: RssTracker
    quick: bool
    profile: bool = False
    # Trade counts for the backfill benchmark; empty: its own defaults for a full or quick run.
    backfill_sizes: tuple[int, ...] = ()
    spark: SparkCluster | None = None
    _names: set[str] = field(default_factory=set)

    @property
    def logdir(self) -> Path:
        path = self.workdir / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def unique(self, prefix: str) -> str:
        name = f"{prefix}_{time.monotonic_ns() % 10**9}"
        self._names.add(name)
        return name

    def database(self, prefix: str, *, migrate: bool = True) -> str:
        """A fresh database (migrated to the candlestack schema unless told otherwise)."""
        name = self.unique("b_" + prefix)
        self.pg.create_database(name)
        if migrate:
            conn = self.pg.connect(name)
            try:
                db.migrate(conn)
            finally:
                conn.close()
        return name

    def topic(self, prefix: str, partitions: int = 3) -> str:
        name = self.unique("bench." + prefix)
        self.broker.create_topic(name, partitions)
        return name

    def connect(self, database: str) -> psycopg2.extensions.connection:
        conn = self.pg.connect(database)
        conn.autocommit = True
        return conn

    def pipeline_env(self, database: str, topic: str) -> dict[str, str]:
        return {
            **self.pg.env(database),
            "CANDLESTACK_KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "CANDLESTACK_KAFKA_TOPIC": topic,
            "CANDLESTACK_KAFKA_GROUP_ID": "group-" + topic,
            # Every symbol any benchmark uses, so that the consumer stores them (it sets
            # other symbols aside); a benchmark's producer may stream fewer.
            "CANDLESTACK_SYMBOLS": "btcusdt,ethusdt,bnbusdt,xrpusdt",
        }


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def scalar(conn: psycopg2.extensions.connection, query: str, params: Sequence[Any] = ()) -> Any:
    with conn.cursor() as cur:
        cur.execute(query, tuple(params))
        row = cur.fetchone()
    return row[0] if row else None


def wait_log(path: Path, text: str, *, timeout: float) -> None:
    wait_for(lambda: text in path.read_text(errors="replace"), timeout=timeout, interval=0.1,
             what=f"{text!r} in {path.name}")


def json_log_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a component log written with CANDLESTACK_LOG_FORMAT=json."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return found


def _proc_stat(pid: int) -> list[str]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2:].split()  # the fields after the command name


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its live descendants, plus its children that have ended and
    been waited for (the kernel adds those to cutime/cstime): 0 once it is gone."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                children.setdefault(int(_proc_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    ticks, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            ticks += sum(int(value) for value in _proc_stat(current)[11:15])  # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Share of one core each named process tree used between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._start: dict[str, float] = {}
        self._began = 0.0
        self.percent: dict[str, float] = {}

    def start(self) -> None:
        self._began = time.monotonic()
        self._start = {name: tree_cpu_s(pid) for name, pid in self._pids.items()}

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._began, 1e-9)
        self.percent = {name: round(100 * (tree_cpu_s(pid) - self._start[name]) / wall, 1)
                        for name, pid in self._pids.items()}
        return self.percent

    def busiest(self) -> str:
        name, share = max(self.percent.items(), key=lambda item: item[1])
        return f"{name} {share:.0f} % of a core"


def postmaster_pid(pg: Postgres) -> int:
    return int((pg.datadir / "postmaster.pid").read_text().split()[0])


def py_spy_binary() -> str | None:
    """py-spy next to this Python (the venv), else on PATH; None when it is not installed."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Pipeline:
    """The live path's processes for one run."""

    consumer: Component
    replay: Replay
    producer: Component | None = None
    extra: list[Component] = field(default_factory=list)

    def pids(self, ctx: Context) -> dict[str, int]:
        assert self.producer is not None
        return {"replay": self.replay.component.proc.pid, "producer": self.producer.proc.pid,
                "broker": ctx.broker.proc.pid, "consumer": self.consumer.proc.pid,
                "postgres": postmaster_pid(ctx.pg)}

    def stop(self, ctx: Context) -> None:
        for component in (*self.extra, self.producer, self.replay.component, self.consumer):
            if component is not None:
                ctx.rss.unwatch(component.proc.pid)
                component.stop(timeout=60)


def start_pipeline(ctx: Context, env: dict[str, str], symbols: tuple[str, ...], rate: int, *,
                   seed: int) -> Pipeline:
    """Consumer first (its group joined), then the replay and the producer streaming ``symbols``."""
    consumer = start_component("consumer", ["consumer"], env, ctx.logdir)
    ctx.rss.watch("consumer", consumer.proc.pid)
    replay = start_replay(["--synthetic", ",".join(symbols), "--rate", str(rate), "--seed", str(seed),
                           "--start-id", "1", "--progress-every", "0"], ctx.logdir)
    ctx.rss.watch("replay", replay.component.proc.pid)
    pipeline = Pipeline(consumer, replay)
    try:
        wait_log(consumer.log_path, "partitions assigned", timeout=60)
        pipeline.producer = start_component("producer", ["producer"], {
            **env, "CANDLESTACK_SYMBOLS": ",".join(symbols).lower(), "CANDLESTACK_STREAM": "trade",
            "CANDLESTACK_BINANCE_WS_URL": replay.ws_url, "CANDLESTACK_BINANCE_REST_URL": replay.rest_url}, ctx.logdir)
        ctx.rss.watch("producer", pipeline.producer.proc.pid)
        wait_for(lambda: replay.status().get("published", 0) > 0, timeout=30, interval=0.05, what="replay clock")
    except BaseException:
        pipeline.stop(ctx)
        raise
    return pipeline
