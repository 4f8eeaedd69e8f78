"""PostgreSQL connections and schema migrations."""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

import psycopg2
import psycopg2.extensions

from candlestack.core.settings import PostgresSettings

log = logging.getLogger(__name__)

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
