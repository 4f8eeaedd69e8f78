"""The retention role against a real PostgreSQL: it may drop old, aggregated partitions through
drop_trade_partitions_before and do nothing else; the function, not the caller, enforces the
minimum age; the aggregator may no longer drop anything."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import date, timedelta

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest

from candlestack.core import db
from candlestack.core.setting_table import RETENTION_MIN_DAYS
from tests.harness.pipeline import scalar
from tests.harness.services import Postgres, candlestack_command

RETENTION = "retention_test_login"
AGGREGATOR = "retention_test_aggregator"
OLDEST = 10  # days before today of the oldest partition seeded


def login(conn: psycopg2.extensions.connection, name: str, group: str) -> None:
    """A login role in ``group`` (roles are cluster-wide: created once, shared by the tests' databases)."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'x'")  # test names only
        cur.execute(f"GRANT {group} TO {name}")


def connect_as(pg: Postgres, database: str, user: str) -> psycopg2.extensions.connection:
    return psycopg2.connect(host="127.0.0.1", port=pg.port, user=user, password="x", dbname=database,
                            options="-c timezone=UTC")


def run_as(pg: Postgres, database: str, user: str, *args: str,
           extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH passes on, so that a work tree's own code is what runs.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.environ.get("PYTHONPATH", ""), **pg.env(database),
           "CANDLESTACK_PG_USER": user, "CANDLESTACK_PG_PASSWORD": "x", **(extra or {})}
    return subprocess.run(candlestack_command(*args), env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def today(conn: psycopg2.extensions.connection) -> date:
    value = scalar(conn, "SELECT (now() AT TIME ZONE 'UTC')::date")
    assert isinstance(value, date)
    return value


def partitions(conn: psycopg2.extensions.connection) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'trades'::regclass ORDER BY 1")
        return [row[0] for row in cur.fetchall()]


def name_of(day: date) -> str:
    return day.strftime("trades_%Y%m%d")


@pytest.fixture
def seeded(pg: Postgres, database: str, conn: psycopg2.extensions.connection) -> Iterator[date]:
    """A partition per day from OLDEST days ago to today, a trade in each, all aggregated
    (the watermark is taken after the inserts); the logins of both roles. Yields today (UTC)."""
    with conn.cursor() as cur:
        cur.execute("SELECT ensure_trade_partitions(current_date - %s, current_date)", (OLDEST,))
        cur.execute("""
            INSERT INTO trades (symbol, trade_id, stream, price, qty, trade_time, event_time, buyer_is_maker,
                                ingest_time)
            SELECT 'BTCUSDT', n, 'trade', 100, 1, t, t, true, t
            FROM generate_series(0, %s) n,
                 LATERAL (SELECT date_trunc('day', now()) - n * interval '1 day' AS t) d""", (OLDEST,))
        cur.execute("INSERT INTO aggregator_state (name, watermark_xid) VALUES ('run', pg_current_xact_id())")
    login(conn, RETENTION, "candlestack_prune")
    login(conn, AGGREGATOR, "candlestack_aggregate")
    yield today(conn)


def test_the_retention_role_drops_old_aggregated_partitions_and_keeps_the_minimum(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection, seeded: date,
) -> None:
    proc = run_as(pg, database, RETENTION, "db", "retention", "--keep-days", str(RETENTION_MIN_DAYS))
    assert proc.returncode == 0, proc.stderr
    cutoff = seeded - timedelta(days=RETENTION_MIN_DAYS)
    older = [seeded - timedelta(days=n) for n in range(OLDEST, RETENTION_MIN_DAYS, -1)]
    assert proc.stdout.splitlines() == [f"dropped {name_of(day)}" for day in older]
    assert f"cutoff={cutoff.isoformat()}" in proc.stderr and "kept=0" in proc.stderr
    # Today's and the RETENTION_MIN_DAYS days' before stay, with their trades.
    kept = [name_of(seeded - timedelta(days=n)) for n in range(RETENTION_MIN_DAYS, -1, -1)]
    assert partitions(conn) == kept
    assert scalar(conn, "SELECT count(*) FROM trades") == RETENTION_MIN_DAYS + 1


def test_the_setting_decides_when_keep_days_is_not_given(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection, seeded: date,
) -> None:
    proc = run_as(pg, database, RETENTION, "db", "retention", extra={"CANDLESTACK_RETENTION_DAYS": "8"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"dropped {name_of(seeded - timedelta(days=n))}" for n in (10, 9)]
    too_young = run_as(pg, database, RETENTION, "db", "retention", extra={"CANDLESTACK_RETENTION_DAYS": "1"})
    assert too_young.returncode == 78
    assert "CANDLESTACK_RETENTION_DAYS: 1 is outside 2..inf" in too_young.stderr
    usage = run_as(pg, database, RETENTION, "db", "retention", "--keep-days", "0")
    assert usage.returncode == 2
    assert "argument --keep-days: 0 is too few" in usage.stderr
    assert len(partitions(conn)) == OLDEST - 1


@pytest.mark.parametrize("user", [RETENTION, "postgres"])
def test_the_function_refuses_a_cutoff_younger_than_the_minimum_whoever_calls_it(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection, seeded: date, user: str,
) -> None:
    before = partitions(conn)
    caller = connect_as(pg, database, user)
    try:
        for offset in (RETENTION_MIN_DAYS - 1, 0, -365):
            with pytest.raises(psycopg2.errors.InvalidParameterValue) as refused, caller, caller.cursor() as cur:
                # The date is computed in the call's own transaction: no midnight between the two.
                cur.execute("SELECT * FROM drop_trade_partitions_before((now() AT TIME ZONE 'UTC')::date - %s)",
                            (offset,))
            assert refused.value.pgcode == "22023"
            assert refused.value.diag.message_primary is not None
            assert f"would drop trades younger than {RETENTION_MIN_DAYS} days" in refused.value.diag.message_primary
        with pytest.raises(psycopg2.errors.InvalidParameterValue), caller, caller.cursor() as cur:
            cur.execute("SELECT * FROM drop_trade_partitions_before(NULL)")
        assert partitions(conn) == before
        # Exactly the minimum is allowed: the SQL constant and RETENTION_MIN_DAYS agree.
        with caller, caller.cursor() as cur:
            cur.execute("SELECT partition_name FROM drop_trade_partitions_before("
                        "(now() AT TIME ZONE 'UTC')::date - %s) WHERE dropped", (RETENTION_MIN_DAYS,))
            assert len(cur.fetchall()) == OLDEST - RETENTION_MIN_DAYS
    finally:
        caller.close()


def test_the_retention_role_can_do_nothing_but_call_the_function(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection, seeded: date,
) -> None:
    old = name_of(seeded - timedelta(days=OLDEST))
    caller = connect_as(pg, database, RETENTION)
    try:
        for statement in ("SELECT count(*) FROM trades", f"SELECT count(*) FROM {old}",
                          "DELETE FROM trades", f"DELETE FROM {old}", f"TRUNCATE {old}", f"DROP TABLE {old}",
                          f"ALTER TABLE trades DETACH PARTITION {old}", "SELECT count(*) FROM candles",
                          "UPDATE aggregator_state SET watermark_xid = '0'",
                          "SELECT ensure_trade_partitions(current_date, current_date)",
                          "SELECT * FROM real_time_prices"):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege), caller, caller.cursor() as cur:
                cur.execute(statement)
    finally:
        caller.close()
    assert len(partitions(conn)) == OLDEST + 1
    assert scalar(conn, "SELECT count(*) FROM trades") == OLDEST + 1
    # The group role itself: no login, no table or column privilege, one function.
    assert scalar(conn, "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'candlestack_prune'") is False
    assert scalar(conn, "SELECT count(*) FROM information_schema.role_table_grants "
                        "WHERE grantee = 'candlestack_prune'") == 0
    assert scalar(conn, "SELECT count(*) FROM information_schema.column_privileges "
                        "WHERE grantee = 'candlestack_prune'") == 0
    with conn.cursor() as cur:
        cur.execute("""SELECT p.oid::regprocedure::text FROM pg_proc p
                       WHERE p.pronamespace = 'public'::regnamespace
                         AND has_function_privilege('candlestack_prune', p.oid, 'EXECUTE')""")
        assert [row[0] for row in cur.fetchall()] == ["drop_trade_partitions_before(date)"]


def test_the_aggregator_can_no_longer_drop_partitions(
    pg: Postgres, database: str, conn: psycopg2.extensions.connection, seeded: date,
) -> None:
    caller = connect_as(pg, database, AGGREGATOR)
    try:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege), caller, caller.cursor() as cur:
            cur.execute("SELECT * FROM drop_trade_partitions_before('2000-01-01')")
    finally:
        caller.close()
    proc = run_as(pg, database, AGGREGATOR, "db", "retention")
    assert proc.returncode == 77, proc.stderr
    assert proc.stderr.strip().endswith("this command needs a member of candlestack_prune)"), proc.stderr
    assert len(partitions(conn)) == OLDEST + 1


def test_an_owner_without_createrole_migrates_once_the_group_role_exists(pg: Postgres) -> None:
    """As deployed: roles/postgresql pre-creates candlestack_prune, the owner (no CREATEROLE)
    migrates, and the grant moves from the aggregator to retention."""
    admin_conn = pg.connect()
    admin_conn.autocommit = True
    try:
        with admin_conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = 'candlestack_prune'")
            if cur.fetchone() is None:
                cur.execute("CREATE ROLE candlestack_prune NOLOGIN")
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = 'retention_test_owner'")
            if cur.fetchone() is None:
                cur.execute("CREATE ROLE retention_test_owner LOGIN NOCREATEROLE PASSWORD 'x'")
            cur.execute('DROP DATABASE IF EXISTS "retention_owner" WITH (FORCE)')
            cur.execute('CREATE DATABASE "retention_owner" OWNER retention_test_owner')
    finally:
        admin_conn.close()
    owner = connect_as(pg, "retention_owner", "retention_test_owner")
    try:
        assert "0007_retention_role.sql" in db.migrate(owner)
        owner.autocommit = True
        granted = {role: scalar(owner, "SELECT has_function_privilege(%s, "
                                       "'drop_trade_partitions_before(date)', 'EXECUTE')", (role,))
                   for role in ("candlestack_prune", "candlestack_aggregate", "public")}
    finally:
        owner.close()
    assert granted == {"candlestack_prune": True, "candlestack_aggregate": False, "public": False}
