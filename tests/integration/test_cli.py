"""The operator commands as systemd runs them: subprocesses with settings in the environment."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2.extensions
import pytest

from candlestack.core import db
from tests.harness.pipeline import candles, insert_trades, scalar
from tests.harness.reference import agg_trades, candles_from_trades
from tests.harness.services import Postgres, candlestack_command, start_component, wait_for


def env_of(pg: Postgres, database: str) -> dict[str, str]:
    # PYTHONPATH passes on, so that a work tree's own code is what runs.
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.environ.get("PYTHONPATH", ""), **pg.env(database)}


def run(pg: Postgres, database: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(candlestack_command(*args), env=env_of(pg, database), capture_output=True, text=True,
                          timeout=120, check=False)


def test_migrate_reports_what_it_applied_and_is_silent_when_current(pg: Postgres) -> None:
    pg.create_database("cli_migrate")
    first = run(pg, "cli_migrate", "db", "migrate")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"applied {name}" for _, name, _ in db.available_migrations()]
    # As the deployment runs it: the connection settings, password included, on stdin only.
    environ = env_of(pg, "cli_migrate")
    on_stdin = {key: environ.pop(key) for key in list(environ) if key.startswith("CANDLESTACK_PG_")}
    again = subprocess.run(candlestack_command("db", "--env-file", "-", "migrate"), env=environ, capture_output=True,
                           text=True, timeout=120, check=False,
                           input="".join(f'{key}="{value}"\n' for key, value in on_stdin.items()))
    assert (again.returncode, again.stdout) == (0, ""), again.stderr


def test_partitions_are_created_ahead_and_a_busy_lock_is_waited_out(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection,
) -> None:
    today = datetime.now(UTC).date()
    first = run(pg, database, "db", "partitions", "--ahead", "2")
    assert (first.returncode, first.stdout) == (0, "created 3 partitions\n"), first.stderr
    names = [(today + timedelta(days=n)).strftime("trades_%Y%m%d") for n in range(3)]
    assert scalar(conn, "SELECT count(*) FROM pg_class WHERE relname = ANY(%s)", (names,)) == 3
    # A long reader holds the table: the DDL gives up after its lock_timeout and tries again.
    blocker = pg.connect(database)
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLE trades IN ACCESS SHARE MODE")
            job = subprocess.Popen(candlestack_command("db", "partitions", "--ahead", "4"), env=env_of(pg, database),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(5)
            assert job.poll() is None
        blocker.rollback()
        out, err = job.communicate(timeout=60)
    finally:
        blocker.close()
    assert (job.returncode, out) == (0, "created 2 partitions\n"), err
    assert "partition lock busy; retrying" in err
    again = run(pg, database, "db", "partitions", "--ahead", "4")
    assert (again.returncode, again.stdout) == (0, "")


@pytest.mark.slow
def test_aggregator_run_in_local_mode_then_status_and_retention(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection, logdir: Path,
) -> None:
    trades = agg_trades()[:3000]
    insert_trades(conn, trades)
    env = {**pg.env(database), "CANDLESTACK_SPARK_MASTER": "local[2]", "CANDLESTACK_AGGREGATOR_TICK_S": "0.5"}
    aggregator = start_component("aggregator", ["aggregator", "run"], env, logdir)
    expected = candles_from_trades(trades, 60_000)
    try:
        wait_for(lambda: candles(conn, "1m") == expected, timeout=180, what="first candles from aggregator run")
        # A trade arriving while it runs is picked up by the next tick.
        late = agg_trades()[3000:3001]
        insert_trades(conn, late)
        wait_for(lambda: candles(conn, "1m") == candles_from_trades(trades + late, 60_000), timeout=60,
                 what="the next tick")
    finally:
        assert aggregator.stop() == 0, aggregator.log()
    assert "aggregator running" in aggregator.log() and "stopping" in aggregator.log()
    assert scalar(conn, "SELECT ticks FROM aggregator_state WHERE name = 'run'") >= 2  # type: ignore[operator]

    with conn.cursor() as cur:
        cur.execute("UPDATE symbol_state SET last_trade_time = %s, last_trade_id = %s", (
            "2019-10-11T00:00:00Z", late[0].agg_id))
    status = run(pg, database, "status", "--json")
    # 2019's trades are years old: healthy otherwise, but stale.
    assert status.returncode == 1, status.stderr
    report = json.loads(status.stdout)
    assert [row["symbol"] for row in report["symbols"]] == ["XRPETH"]
    assert report["dead_letters"]["count"] == 0 and report["aggregators"][0]["name"] == "run"
    assert report["attention"] and all(reason.startswith("XRPETH: ") for reason in report["attention"])
    table = run(pg, database, "status")
    assert "XRPETH" in table.stdout and "dead letters: 0" in table.stdout

    retention = run(pg, database, "db", "retention", "--keep-days", "2")
    assert retention.returncode == 0, retention.stderr
    assert "dropped trades_20191011" in retention.stdout.splitlines()
    assert scalar(conn, "SELECT count(*) FROM trades") == 0
    assert scalar(conn, "SELECT count(*) FROM candles") > 0  # candles outlive the raw trades


@pytest.mark.slow
def test_reconcile_exits_only_after_its_spark_jvm(pg: Postgres, database: str) -> None:
    """A oneshot unit's main process must be the last of its processes to exit.

    The Spark JVM would otherwise outlive the CLI and systemd would kill it mid-shutdown (or,
    in a container, wait TimeoutStopSec for a cgroup-empty event that never comes).
    """
    env = {"PATH": "/usr/bin:/bin", **pg.env(database), "CANDLESTACK_SPARK_MASTER": "local[1]"}
    proc = subprocess.Popen(candlestack_command("aggregator", "reconcile", "--hours", "1"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert "backfill done" in output
    # Nothing of the job is left, not even a zombie: the JVM and its children exited and were reaped.
    assert processes_in_group(proc.pid) == []


def processes_in_group(pgid: int) -> list[str]:
    """State and command line of each process in process group ``pgid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                cmdline = (stat.parent / "cmdline").read_text().replace("\0", " ")
                found.append(f"{stat.parent.name} {fields[0]} {cmdline[:200]}")
        except (OSError, IndexError, ValueError):
            continue  # the process went away while we looked
    return found
