"""``candlestack aggregator run|backfill|reconcile``."""

from __future__ import annotations

import argparse
import logging
import threading
import time
from functools import partial

import psycopg2
import psycopg2.extensions

from candlestack.aggregator.jobs import BACKFILL_CHUNK_RETRIES, RETRY_MAX_S, Aggregator
from candlestack.aggregator.session import build_session, renew_session, stop_session
from candlestack.core import db, logs
from candlestack.core import metrics as metrics_endpoint
from candlestack.core.backoff import Backoff
from candlestack.core.contract import normalise_symbol
from candlestack.core.epoch import to_ms
from candlestack.core.errors import ContractError, SettingsError, first_line
from candlestack.core.lifecycle import stop_on_signals
from candlestack.core.settings import AggregatorSettings

log = logging.getLogger(__name__)


def connect_when_up(settings: AggregatorSettings, stop: threading.Event) -> psycopg2.extensions.connection:
    """The database connection, waiting (about a minute at most) for a PostgreSQL that restarts:
    a timer's reconcile may start just then."""
    backoff = Backoff(1.0, RETRY_MAX_S)
    for attempt in range(BACKFILL_CHUNK_RETRIES + 1):
        try:
            return db.connect(settings.postgres)
        except psycopg2.OperationalError as exc:
            if attempt == BACKFILL_CHUNK_RETRIES or stop.is_set():
                raise
            delay = backoff.next_delay()
            log.warning("database unreachable; retrying", extra={
                "error": first_line(exc), "retry_in_s": round(delay, 1)})
            stop.wait(delay)
    raise AssertionError("unreachable")


def main(args: argparse.Namespace) -> int:
    settings = AggregatorSettings.from_env()
    logs.setup(settings.log)
    stop = stop_on_signals(log)
    symbols = None
    if getattr(args, "symbols", None):
        try:
            symbols = [normalise_symbol(s) for s in args.symbols.split(",") if s.strip()]
        except ContractError as exc:
            raise SettingsError("--symbols", exc.reason) from None
    if args.mode == "run":
        metrics_endpoint.serve(settings.metrics)
    conn = connect_when_up(settings, stop)
    # Only the long-running mode rebuilds a failing session; the one-shot modes fail and exit.
    renew = partial(renew_session, settings=settings) if args.mode == "run" else None
    aggregator = Aggregator(settings, build_session(settings), conn, session_factory=renew)
    try:
        if args.mode == "run":
            aggregator.run(stop)
        elif args.mode == "backfill":
            if args.end <= args.start:
                raise SettingsError("--to", "must be after --from")
            aggregator.backfill(to_ms(args.start), to_ms(args.end), symbols, stop=stop)
        else:
            now = int(time.time() * 1000)
            aggregator.backfill(now - int(args.hours * 3_600_000), now, stop=stop)
    finally:
        stop_session(aggregator.spark)  # the newest session, after any rebuild
        conn.close()
    return 0
