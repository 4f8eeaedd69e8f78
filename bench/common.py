"""Shared plumbing: a run context holding the services of one invocation (started by the test
harness, :mod:`tests.harness.services`), and small helpers for databases, topics, logs and
percentiles. Run from the repository's root (``python -m bench``), where ``tests`` is importable."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2.extensions

from bench.rss import RssTracker
from candlestack.core import db
from tests.harness.services import Broker, Postgres, SparkCluster, wait_for

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["Broker", "Context", "Postgres", "SparkCluster", "percentile", "wait_for"]


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
