"""`candlestack status` as an operator runs it: read-only credential, one-line errors, health exit code."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import psycopg2.extensions
import pytest

from candlestack import status
from tests.harness.pipeline import scalar
from tests.harness.services import Postgres, candlestack_command, free_port

READER = "status_test_reader"
OUTSIDER = "status_test_outsider"


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH passes through so that a worktree's src/ is what runs.
    inherited = {key: os.environ[key] for key in ("PYTHONPATH",) if key in os.environ}
    return subprocess.run(candlestack_command(*args), env={"PATH": "/usr/bin:/bin", **inherited, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def login(conn: psycopg2.extensions.connection, name: str, *groups: str) -> None:
    """A login role (roles are cluster-wide: created once, shared by the tests' databases)."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'x'")  # test names only
        for group in groups:
            cur.execute(f"GRANT {group} TO {name}")


def as_user(pg: Postgres, database: str, user: str) -> dict[str, str]:
    return {**pg.env(database), "CANDLESTACK_PG_USER": user, "CANDLESTACK_PG_PASSWORD": "x"}


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def seed(conn: psycopg2.extensions.connection) -> None:
    """BTCUSDT with a trade in the open minute and a candle for it (ahead of the last trade), a
    pending and a resolved gap, a dead letter and, when candles have `complete`, an incomplete candle."""
    with conn.cursor() as cur:
        cur.execute("SELECT ensure_trade_partitions(current_date - 1, current_date + 1)")
        cur.execute("""
            INSERT INTO trades (symbol, trade_id, stream, price, qty, trade_time, event_time, buyer_is_maker,
                                ingest_time, stored_at)
            SELECT 'BTCUSDT', 1, 'trade', 100, 1, t, t, true, t, t
            FROM (SELECT greatest(date_trunc('minute', now()), now() - interval '1 second') AS t) n""")
        cur.execute("""
            INSERT INTO symbol_state
            SELECT 'BTCUSDT', 1, 100, trade_time, stored_at - interval '2 seconds', 1 FROM trades""")
        cur.execute("""
            INSERT INTO candles (symbol, timeframe, open_time, close_time, open, high, low, close, volume,
                                 quote_volume, trade_count)
            SELECT 'BTCUSDT', '1m', date_trunc('minute', trade_time), date_trunc('minute', trade_time)
                   + interval '1 minute', 100, 100, 100, 100, 1, 100, 1 FROM trades""")
        cur.execute("""
            INSERT INTO ingest_gaps (symbol, stream, from_id, to_id, reason, detected_at, pending, resolved_at)
            VALUES ('BTCUSDT', 'trade', 10, 19, 'rest rate-limited', now(), true, NULL),
                   ('BTCUSDT', 'trade', 2, 3, 'reconnect', now() - interval '1 hour', false, now())""")
        cur.execute("""
            INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, payload, field, reason)
            VALUES ('candlestack.trades', 0, 42, 'not json', NULL, 'not JSON')""")
        if has_complete_column(conn):
            cur.execute("""
                INSERT INTO candles (symbol, timeframe, open_time, close_time, open, high, low, close, volume,
                                     quote_volume, trade_count, complete)
                VALUES ('BTCUSDT', '5m', date_trunc('hour', now()) - interval '1 hour',
                        date_trunc('hour', now()) - interval '55 minutes', 1, 1, 1, 1, 1, 1, 1, false)""")


def has_complete_column(conn: psycopg2.extensions.connection) -> bool:
    return bool(scalar(conn, "SELECT count(*) FROM information_schema.columns "
                             "WHERE table_name = 'candles' AND column_name = 'complete'"))


def test_reader_sees_gaps_dead_letters_and_incomplete_candles(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection, tmp_path: Path,
) -> None:
    if not has_complete_column(conn):
        # Stands in for migration 0003 (another branch) so that the check is exercised here too.
        conn.cursor().execute("ALTER TABLE candles ADD COLUMN complete boolean NOT NULL DEFAULT true")
    seed(conn)
    login(conn, READER, "candlestack_read")
    # The deployed wrapper's way: the credential comes from an environment file, quoted as
    # roles/systemd_service writes them; the process environment has a wrong user to override.
    env_file = tmp_path / "status.env"
    env_file.write_text("# managed\n" + "".join(
        f'{key}="{value}"\n' for key, value in as_user(pg, database, READER).items()))
    env = {**pg.env(database), "CANDLESTACK_PG_USER": OUTSIDER}

    report_run = run(env, "status", "--json", "--env-file", str(env_file))
    assert report_run.returncode == 1, report_run.stderr
    report = json.loads(report_run.stdout)
    assert report["gaps"] | {"newest_open": None, "last_resolved_at": None} == {
        "open": 1, "pending": 1, "resolved": 1, "missing_trades": 10, "newest_open": None, "last_resolved_at": None}
    assert report["gaps"]["newest_open"][0]["from_id"] == 10 and report["gaps"]["newest_open"][0]["pending"]
    assert report["dead_letters"]["count"] == report["dead_letters"]["recent"] == 1
    assert report["dead_letters"]["last"]["offset"] == 42
    assert report["dead_letters"]["top_reasons"] == [{"field": None, "reason": "not JSON", "count": 1}]
    assert report["incomplete_candles"]["count"] == report["incomplete_candles"]["overdue"] == 1
    assert not report["healthy"] and len(report["attention"]) == 3, report["attention"]
    [row] = report["symbols"]
    # The newest candle (the open minute's) is ahead of the last trade: nothing is waiting.
    assert (float(row["candle_lag_s"]), float(row["ingest_lag_s"])) == (0.0, 0.0)
    assert 0 <= float(row["trade_age_s"]) < 60

    text = run(env, "status", "--env-file", str(env_file))
    assert text.returncode == 1, text.stderr
    for expected in ("BTCUSDT", "gaps: 1 open (1 pending, 10 trades missing), 1 resolved",
                     "pending BTCUSDT 10..19", "dead letters: 1 (1 recent", "1 x -: not JSON",
                     "incomplete candles: 1 (1 overdue", "needs attention: 1 open gaps"):
        assert expected in text.stdout, text.stdout


def test_healthy_status_without_a_complete_column_shows_a_dash(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection,
) -> None:
    # As during an upgrade, before migration 0003 has run: status must still work.
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE candles DROP COLUMN complete CASCADE")
    assert not has_complete_column(conn)
    login(conn, READER, "candlestack_read")
    text = run(as_user(pg, database, READER), "status")
    assert text.returncode == 0, text.stderr
    assert "incomplete candles: -" in text.stdout and text.stdout.splitlines()[-1] == "healthy"
    report = json.loads(run(as_user(pg, database, READER), "status", "--json").stdout)
    assert report["incomplete_candles"] is None and report["healthy"]


def test_a_login_without_the_group_role_gets_one_line(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection,
) -> None:
    login(conn, OUTSIDER)
    denied = run(as_user(pg, database, OUTSIDER), "status")
    assert denied.returncode == 77
    assert one_line(denied) == (f"candlestack: permission denied for view pipeline_health (user {OUTSIDER} at "
                                f"127.0.0.1:{pg.port}/{database}; this command needs a member of candlestack_read)")
    retention = run(as_user(pg, database, OUTSIDER), "db", "retention")
    assert retention.returncode == 77
    assert "needs a member of candlestack_prune" in one_line(retention)


def test_an_unreachable_database_gets_one_line(pg: Postgres) -> None:
    port = free_port()
    env = {**pg.env("postgres"), "CANDLESTACK_PG_PORT": str(port)}
    for args in (["status"], ["db", "migrate"]):
        proc = run(env, *args)
        assert proc.returncode == 69, proc.stderr
        assert one_line(proc).startswith(f"candlestack: cannot connect to PostgreSQL at 127.0.0.1:{port}/postgres "
                                         "as postgres: "), proc.stderr


def test_an_unmigrated_database_gets_one_line(pg: Postgres) -> None:
    pg.create_database("status_unmigrated")
    proc = run(pg.env("status_unmigrated"), "status")
    assert proc.returncode == 70
    assert one_line(proc).endswith('relation "pipeline_health" does not exist '
                                   "(is the schema migrated? candlestack db migrate)")


def test_attention_names_each_stale_lag_and_nothing_when_healthy() -> None:
    row = {"symbol": "BTCUSDT", "trade_age_s": "301", "ingest_lag_s": "0.2", "candle_lag_s": None}
    report = {"symbols": [row], "gaps": {"open": 0}, "dead_letters": {"recent": 0}, "incomplete_candles": None}
    assert status.attention(report, stale_after_s=300) == ["BTCUSDT: no trade stored for 301 s"]
    assert status.attention(report, stale_after_s=400) == []


def test_an_unreadable_env_file_is_a_configuration_error(tmp_path: Path) -> None:
    proc = run({}, "status", "--env-file", str(tmp_path / "missing.env"))
    assert proc.returncode == 78
    assert one_line(proc).endswith("missing.env: cannot read: No such file or directory")


def health(conn: psycopg2.extensions.connection) -> tuple[float, float, float]:
    with conn.cursor() as cur:
        cur.execute("SELECT trade_age_s, ingest_lag_s, candle_lag_s FROM pipeline_health WHERE symbol = 'ETHUSDT'")
        row = cur.fetchone()
    assert row is not None
    return (float(row[0]), float(row[1]), float(row[2]))


def test_lags_are_never_negative_and_candle_lag_counts_closed_windows(conn: psycopg2.extensions.connection) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT ensure_trade_partitions(current_date - 1, current_date + 1)")
        # Binance's clock ahead of the database's: the trade is "in the future", stored "before" it happened.
        cur.execute("""INSERT INTO symbol_state VALUES ('ETHUSDT', 7, 1, now() + interval '5 seconds',
                                                        now(), 1)""")
        # A trade 3 minutes ago, stored at once, and no candle at all: the aggregator is behind.
        cur.execute("""
            INSERT INTO trades (symbol, trade_id, stream, price, qty, trade_time, event_time, buyer_is_maker,
                                ingest_time, stored_at)
            SELECT 'ETHUSDT', 7, 'trade', 1, 1, t, t, true, t, t
            FROM (SELECT now() - interval '3 minutes' AS t) n""")
    trade_age, ingest_lag, candle_lag = health(conn)
    assert (trade_age, ingest_lag) == (0.0, 0.0)
    due = scalar(conn, "SELECT extract(epoch FROM now() - (date_trunc('minute', trade_time) + interval '1 minute')) "
                       "FROM trades")
    assert candle_lag == pytest.approx(float(due), abs=1)  # type: ignore[arg-type]
    assert 60 <= candle_lag <= 180

    # Its candle exists now: nothing closed is waiting.
    with conn.cursor() as cur:
        cur.execute("""
            INSERT INTO candles (symbol, timeframe, open_time, close_time, open, high, low, close, volume,
                                 quote_volume, trade_count)
            SELECT symbol, '1m', date_trunc('minute', trade_time), date_trunc('minute', trade_time)
                   + interval '1 minute', 1, 1, 1, 1, 1, 1, 1 FROM trades""")
    assert health(conn)[2] == 0.0
