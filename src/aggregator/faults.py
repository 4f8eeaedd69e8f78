"""What `aggregator run` does when a tick fails (pure: no Spark, no SQL).

Every failure is retried: trades are insert-only and candles are rebuilt idempotently, so
trying the same windows again is always safe, and exiting would gain nothing (systemd's
restart would meet the same windows). What differs is what must be renewed first.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import psycopg2
from py4j.protocol import Py4JNetworkError  # type: ignore[import-untyped]

from candlestack.aggregator.windows import Span
from candlestack.core.epoch import from_ms
from candlestack.core.errors import CandlestackError

# After this many failed ticks in a row the Spark session is rebuilt, whatever the errors were:
# a session whose application the master no longer knows (a master restart without recovery)
# fails every job without saying so in any way we could classify.
REBUILD_SESSION_AFTER = 5


class Recovery(enum.Enum):
    """What to renew before the next attempt."""

    RETRY = "retry"
    RECONNECT = "reconnect"
    NEW_SESSION = "new_session"


class TickError(CandlestackError):
    """Recomputing ``spans`` failed (in a tick or a backfill chunk); ``__cause__`` is the error."""

    def __init__(self, spans: Sequence[Span]) -> None:
        super().__init__(f"recomputing {describe(spans)} failed")
        self.spans = tuple(spans)


class JobTimeoutError(CandlestackError):
    """A Spark job ran longer than ``timeout_s`` and was cancelled."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the Spark job was cancelled after {timeout_s} s")
        self.timeout_s = timeout_s


def recovery_for(exc: BaseException) -> Recovery:
    """The renewal a tick's error calls for."""
    cause = exc.__cause__ if isinstance(exc, TickError) and exc.__cause__ is not None else exc
    # OperationalError: PostgreSQL restarted, or the network dropped the connection.
    # InterfaceError: the connection object is already closed.
    if isinstance(cause, psycopg2.OperationalError | psycopg2.InterfaceError):
        return Recovery.RECONNECT
    # The driver's JVM is gone (killed, out of memory): py4j cannot reach it any more.
    if isinstance(cause, Py4JNetworkError | ConnectionError):
        return Recovery.NEW_SESSION
    # A job that never finished: most likely its application lost the master (a restarted
    # master forgets it and it gets no executors); waiting for the next one would hang as well.
    if isinstance(cause, JobTimeoutError):
        return Recovery.NEW_SESSION
    # Anything else, e.g. a Spark job that failed (lost executors, a JDBC error, a cancelled job)
    # or a SQL error rolled back with its transaction: the same session can try again.
    return Recovery.RETRY


def needs_new_session(recovery: Recovery, consecutive_failures: int,
                      *, rebuild_after: int = REBUILD_SESSION_AFTER) -> bool:
    """Whether to rebuild the Spark session before the next attempt."""
    return recovery is Recovery.NEW_SESSION or consecutive_failures % rebuild_after == 0


def describe(spans: Sequence[Span], *, limit: int = 10) -> str:
    """Spans as ``SYMBOL start..end`` in UTC, for logs; at most ``limit`` of them, then a count."""
    if not spans:
        return "no windows"
    shown = [f"{s.symbol} {from_ms(s.start_ms).isoformat()}..{from_ms(s.end_ms).isoformat()}" for s in spans[:limit]]
    more = len(spans) - limit
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
