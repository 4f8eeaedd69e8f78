"""PostgreSQL connections and schema migrations."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from candlestack.core.backoff import Backoff
from candlestack.core.settings import PostgresSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

# Any lock id works as long as every migrator uses the same one.
MIGRATION_LOCK_ID = 0x63616E646C65


def connect(settings: PostgresSettings, **extra: Any) -> psycopg2.extensions.connection:
    """Open a connection with UTC as the session time zone."""
    conn = psycopg2.connect(**settings.connect_kwargs(), options="-c timezone=UTC", **extra)
    return conn


def available_migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every bundled migration, in order."""
    found = []
    for entry in resources.files("candlestack.core.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(conn: psycopg2.extensions.connection) -> list[str]:
    """Apply the migrations not applied yet, each in its own transaction; safe to re-run.

    Returns the names of the migrations applied by this call.
    """
    applied: list[str] = []
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.commit()
            cur.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in cur.fetchall()}
            for version, name, sql in available_migrations():
                if version in done:
                    continue
                log.info("applying migration %s", name)
                cur.execute(sql)
                cur.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
                conn.commit()
                applied.append(name)
        except Exception:
            conn.rollback()
            raise
        finally:
            cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
            conn.commit()
    return applied


def retry_on_lock_timeout(action: Callable[[], T], *, attempts: int) -> T:
    """Run ``action`` again while it fails on its lock_timeout, backing off, ``attempts`` times at most.

    The partition functions give up after their lock_timeout when a long reader holds the table;
    the reader ends, so a later try succeeds.
    """
    backoff = Backoff(0.5, 15.0)
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except psycopg2.errors.LockNotAvailable:
            if attempt == attempts:
                raise
            delay = backoff.next_delay()
            log.warning("partition lock busy; retrying", extra={"attempt": attempt, "retry_in_s": round(delay, 2)})
            time.sleep(delay)
    raise AssertionError("unreachable")
