"""Operator commands: ``db migrate``, ``db retention``, ``db partitions`` and ``status``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from candlestack import status
from candlestack.core import db, logs
from candlestack.core.errors import DatabaseError, DatabasePermissionError, DatabaseUnavailableError
from candlestack.core.settings import DatabaseSettings, PostgresSettings, read_env_file

log = logging.getLogger(__name__)


# What each command's login needs; named in the one-line error when a privilege is missing.
_NEEDS = {
    "migrate": "the database owner",
    "retention": "a member of candlestack_prune",
    "partitions": "a member of candlestack_ingest",
    "status": "a member of candlestack_read",
}


@contextlib.contextmanager
def database_errors(settings: PostgresSettings, *, needs: str) -> Iterator[None]:
    """Turn psycopg2's exceptions into :class:`DatabaseError` subclasses naming server and user.

    An operator command then ends with one line and a distinct exit code (see ``cli.main``)
    instead of a traceback.
    """
    target = f"{settings.host}:{settings.port}/{settings.database}"
    try:
        yield
    except psycopg2.errors.InsufficientPrivilege as exc:
        raise DatabasePermissionError(target, settings.user, _reason(exc), needs=needs) from exc
    except psycopg2.Error as exc:
        if _is_unavailable(exc):
            raise DatabaseUnavailableError(target, settings.user, _reason(exc)) from exc
        reason = _reason(exc)
        if isinstance(exc, psycopg2.errors.UndefinedTable | psycopg2.errors.UndefinedColumn):
            reason += " (is the schema migrated? candlestack db migrate)"
        raise DatabaseError(target, settings.user, reason) from exc


def _is_unavailable(exc: psycopg2.Error) -> bool:
    """No server to talk to: libpq failed to connect (no SQLSTATE), the connection broke (08xxx),
    or the server is shutting down (57P01-57P03); a cancelled statement (57014) is not that."""
    code = exc.pgcode
    return isinstance(exc, psycopg2.OperationalError) and (
        code is None or code.startswith("08") or code in {"57P01", "57P02", "57P03"})


def _reason(exc: psycopg2.Error) -> str:
    """PostgreSQL's primary message, or the first line of libpq's (connection errors)."""
    primary = exc.diag.message_primary if exc.diag is not None else None
    if primary:
        return str(primary)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    # libpq: 'connection to server at "h" (1.2.3.4), port 5432 failed: FATAL:  password ...'
    first = first.split(" failed: ", 1)[-1]
    return first.removeprefix("FATAL:").strip()


def db_command(args: argparse.Namespace) -> int:
    """``db migrate|retention``; database errors become one line and an exit code."""
    settings = DatabaseSettings.from_env(_environ(args.env_file))
    logs.setup(settings.log)
    with database_errors(settings.postgres, needs=_NEEDS[args.action]):
        return _db_action(args, settings)


def _db_action(args: argparse.Namespace, settings: DatabaseSettings) -> int:
    conn = db.connect(settings.postgres)
    try:
        if args.action == "migrate":
            # stdout lists what was applied and stays empty on a no-op run, so that
            # deployment tools can report "changed" honestly.
            for name in db.migrate(conn):
                print(f"applied {name}")
            return 0
        if args.action == "partitions":
            ahead = settings.partitions_ahead_days if args.ahead is None else args.ahead
            return create_partitions(conn, ahead_days=ahead)
        keep_days: int = settings.retention_days if args.keep_days is None else args.keep_days
        with conn, conn.cursor() as cur:
            # The cutoff is taken from the database's clock in the dropping transaction: the function
            # checks it against the same now(), so a host clock ahead of the server's, or a run
            # across midnight, cannot turn an allowed --keep-days into a refused cutoff.
            cur.execute("SELECT (now() AT TIME ZONE 'UTC')::date - %s::integer", (keep_days,))
            row = cur.fetchone()
            assert row is not None
            cutoff: date = row[0]
            # The function keeps partitions the aggregator has not finished, and says why.
            cur.execute("SELECT partition_name, dropped, reason FROM drop_trade_partitions_before(%s)", (cutoff,))
            results = cur.fetchall()
        dropped = [name for name, was_dropped, _ in results if was_dropped]
        kept = {name: reason for name, was_dropped, reason in results if not was_dropped}
        for name in dropped:
            print(f"dropped {name}")
        log.info("retention done", extra={
            "keep_days": keep_days, "cutoff": cutoff.isoformat(), "dropped": len(dropped), "kept": len(kept),
            "kept_why": "; ".join(f"{name}: {reason}" for name, reason in kept.items()) or "-"})
        return 0
    finally:
        conn.close()


def create_partitions(conn: psycopg2.extensions.connection, *, ahead_days: int, attempts: int = 8) -> int:
    """Create today's partition and the next ``ahead_days`` days' (UTC), so that the consumer
    seldom has to take the parent table's lock itself.

    The SQL function gives up after its lock_timeout; that is retried with backoff here.
    """
    first = datetime.now(UTC).date()
    last = first + timedelta(days=ahead_days)
    created = db.retry_on_lock_timeout(lambda: _ensure_partitions(conn, first, last), attempts=attempts)
    # Like migrate: stdout stays empty when nothing changed.
    if created:
        print(f"created {created} partitions")
    log.info("partitions ensured",
             extra={"first_day": first.isoformat(), "last_day": last.isoformat(), "new_partitions": created})
    return 0


def _ensure_partitions(conn: psycopg2.extensions.connection, first: date, last: date) -> int:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT ensure_trade_partitions(%s, %s)", (first, last))
        row = cur.fetchone()
    return int(row[0]) if row else 0



def _environ(env_file: str | None) -> dict[str, str] | None:
    """The process environment overlaid with ``--env-file``'s variables (``-``: stdin), if given."""
    return {**os.environ, **read_env_file(env_file)} if env_file else None


def status_command(args: argparse.Namespace) -> int:
    """``status``: exit 0 when healthy, 1 when something needs attention (see ``status.attention``).

    With ``--env-file`` the file's variables take precedence over the process environment, so
    the deployed wrapper always uses the read-only credential it was installed with.
    """
    settings = DatabaseSettings.from_env(_environ(args.env_file))
    logs.setup(settings.log)
    with database_errors(settings.postgres, needs=_NEEDS["status"]):
        conn = db.connect(settings.postgres)
        try:
            with conn, conn.cursor() as cur:
                report = status.collect(cur, stale_after_s=args.stale_after)
        finally:
            conn.close()
    reasons = status.attention(report, stale_after_s=args.stale_after)
    if args.json:
        print(json.dumps({**report, "healthy": not reasons, "attention": reasons}, indent=2))
    else:
        lines = status.render_text(report)
        lines.append("healthy" if not reasons else "needs attention: " + "; ".join(reasons))
        print("\n".join(lines))
    return 1 if reasons else 0
