"""The audit run: for each symbol and interval, Binance's klines of the recently closed windows
against our candles; mismatches and a run record stored in PostgreSQL."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import urllib.error
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg2.extensions

from candlestack.audit.client import KlinesClient
from candlestack.audit.compare import Mismatch, compare, parse_kline
from candlestack.core import db, logs
from candlestack.core.epoch import from_ms, to_ms
from candlestack.core.errors import ContractError
from candlestack.core.rest_weight import RestBudget, RestThrottled
from candlestack.core.settings import INTERVALS_MS, AuditSettings, read_env_file

log = logging.getLogger(__name__)

# Columns every candles table has; the taker volumes only from migration 0008 on.
BASE_FIELDS = ("open", "high", "low", "close", "volume", "quote_volume", "trade_count")
TAKER_FIELDS = ("taker_buy_volume", "taker_buy_quote_volume")
# Run records older than this are pruned by each run (the mismatches stay until resolved).
KEEP_RUNS = timedelta(days=30)
# Exit codes: 0 every candle equals its kline, 1 mismatches found, 69 Binance unreachable,
# throttled throughout, or refusing a symbol (the others are still compared), 76 Binance's
# answer is malformed (EX_PROTOCOL).
EXIT_MISMATCH, EXIT_UNAVAILABLE, EXIT_PROTOCOL = 1, 69, 76


@dataclass(slots=True)
class AuditResult:
    compared: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    skipped: int = 0
    # (symbol, interval) pairs Binance refused with a 4xx (e.g. -1121 Invalid symbol): not compared.
    refused: list[tuple[str, str]] = field(default_factory=list)

    @property
    def mismatched(self) -> int:
        """Klines with at least one differing field."""
        return len({(m.symbol, m.interval, m.open_time) for m in self.mismatches})


def closed_windows(interval: str, start_ms: int, end_ms: int) -> tuple[int, int] | None:
    """The first and last open time of the ``interval`` windows inside ``start_ms``..``end_ms``
    that have closed by ``end_ms``; None when there is none."""
    step = INTERVALS_MS[interval]
    first = start_ms + (-start_ms) % step
    last = end_ms - end_ms % step - step
    return (first, last) if first <= last else None


def candle_fields(cur: psycopg2.extensions.cursor) -> tuple[str, ...]:
    """The kline fields our candles table has (the taker volumes came with migration 0008)."""
    cur.execute("SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = 'candles' AND column_name = ANY(%s)",
                (list(TAKER_FIELDS),))
    present = {row[0] for row in cur.fetchall()}
    return BASE_FIELDS + tuple(name for name in TAKER_FIELDS if name in present)


def our_candles(cur: psycopg2.extensions.cursor, symbol: str, interval: str, window: tuple[int, int], *,
                fields: Sequence[str]) -> dict[int, dict[str, Decimal | None]]:
    columns = ", ".join(fields)  # names from BASE_FIELDS/TAKER_FIELDS only
    cur.execute(f"SELECT open_time, close_time, {columns} FROM candles "  # noqa: S608
                "WHERE symbol = %s AND timeframe = %s AND open_time BETWEEN %s AND %s",
                (symbol, interval, from_ms(window[0]), from_ms(window[1])))
    candles: dict[int, dict[str, Decimal | None]] = {}
    for open_time, close_time, *values in cur.fetchall():
        # Our close_time is the window's exclusive end; Binance's kline ends 1 ms before it.
        row: dict[str, Decimal | None] = {"close_time": Decimal(to_ms(close_time) - 1)}
        for name, value in zip(fields, values, strict=True):
            row[name] = None if value is None else Decimal(value)
        candles[to_ms(open_time)] = row
    return candles


def newest_candle_ms(cur: psycopg2.extensions.cursor, symbol: str, interval: str) -> int | None:
    cur.execute("SELECT max(open_time) FROM candles WHERE symbol = %s AND timeframe = %s", (symbol, interval))
    row = cur.fetchone()
    return to_ms(row[0]) if row and row[0] is not None else None


def audit(conn: psycopg2.extensions.connection, client: KlinesClient, *, symbols: Sequence[str],
          intervals: Sequence[str], start_ms: int, end_ms: int) -> AuditResult:
    """Compare the closed windows of ``start_ms``..``end_ms``; store mismatches and a run record.

    A kline with no candle of ours is a ``missing`` mismatch, except a zero-volume one after our
    newest candle: the aggregator adds fillers only between traded windows, so a quiet tail is
    not built yet (it is once a later trade arrives, and is compared then).
    """
    started = datetime.now(UTC)
    result = AuditResult()
    with conn, conn.cursor() as cur:
        fields = candle_fields(cur)
    compare_fields = (*fields, "close_time")
    for symbol in symbols:
        for interval in intervals:
            windows = closed_windows(interval, start_ms, end_ms)
            if windows is None:
                continue
            first, last = windows
            try:
                rows = client.klines(symbol, interval, first, last)
            except urllib.error.HTTPError as exc:
                if not 400 <= exc.code < 500:
                    raise
                # One bad symbol (delisted, mistyped) must not stop the others' audit.
                log.error("Binance refused the klines request", extra={
                    "symbol": symbol, "interval": interval, "status": exc.code, "body": _body(exc)})
                result.refused.append((symbol, interval))
                continue
            with conn, conn.cursor() as cur:
                ours = our_candles(cur, symbol, interval, windows, fields=fields)
                newest = newest_candle_ms(cur, symbol, interval)
            found: list[Mismatch] = []
            compared: list[int] = []
            for row in rows:
                theirs = parse_kline(row)
                open_time = int(theirs["open_time"])
                if not first <= open_time <= last:
                    continue
                mine = ours.get(open_time)
                if mine is None and theirs["trade_count"] == 0 and (newest is None or open_time > newest):
                    result.skipped += 1
                    continue
                compared.append(open_time)
                found += compare(symbol, interval, theirs, mine, fields=compare_fields)
            with conn, conn.cursor() as cur:
                store(cur, symbol, interval, compared, found)
            result.compared += len(compared)
            result.mismatches += found
            log.info("audited", extra={"symbol": symbol, "interval": interval, "compared": len(compared),
                                       "mismatches": len(found), "from": from_ms(first).isoformat(),
                                       "to": from_ms(last).isoformat()})
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO kline_audit_runs (started_at, window_from, window_to, compared, mismatched, fields) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    (started, from_ms(start_ms), from_ms(end_ms), result.compared, result.mismatched,
                     len(result.mismatches)))
        cur.execute("DELETE FROM kline_audit_runs WHERE finished_at < now() - %s", (KEEP_RUNS,))
    return result


def _body(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read(500).decode("utf-8", "replace")
    except OSError:
        return ""


def store(cur: psycopg2.extensions.cursor, symbol: str, interval: str, compared: Sequence[int],
          found: Sequence[Mismatch]) -> None:
    """Upsert ``found``; mark resolved the open mismatches of the ``compared`` klines not found again."""
    for m in found:
        cur.execute(
            "INSERT INTO kline_audit_mismatches AS k (symbol, timeframe, open_time, field, ours, theirs) "
            "VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (symbol, timeframe, open_time, field) DO UPDATE SET "
            "ours = excluded.ours, theirs = excluded.theirs, last_seen_at = now(), resolved_at = NULL",
            (m.symbol, m.interval, from_ms(m.open_time), m.field, m.ours, m.theirs))
    if not compared:
        return
    cur.execute("SELECT open_time, field FROM kline_audit_mismatches "
                "WHERE symbol = %s AND timeframe = %s AND open_time = ANY(%s) AND resolved_at IS NULL",
                (symbol, interval, [from_ms(ms) for ms in compared]))
    still = {(m.open_time, m.field) for m in found}
    for open_time, name in cur.fetchall():
        if (to_ms(open_time), name) not in still:
            cur.execute("UPDATE kline_audit_mismatches SET resolved_at = now() "
                        "WHERE symbol = %s AND timeframe = %s AND open_time = %s AND field = %s",
                        (symbol, interval, open_time, name))


def audit_command(args: argparse.Namespace) -> int:
    """``audit``: exit 0 when every compared candle equals Binance's kline, 1 when some differ."""
    from candlestack.admin import database_errors  # noqa: PLC0415 - the admin commands' error mapping

    environ = {**os.environ, **read_env_file(args.env_file)} if args.env_file else None
    settings = AuditSettings.from_env(environ)
    logs.setup(settings.log)
    now = time.time()
    end = args.end or datetime.fromtimestamp(now - settings.settle_s, UTC)
    start = args.start or end - timedelta(minutes=settings.lookback_minutes)
    symbols = tuple(s.strip().upper() for s in args.symbols.split(",")) if args.symbols else settings.symbols
    client = KlinesClient(settings.rest_url, budget=RestBudget(limit=settings.rest_weight_limit))
    with database_errors(settings.postgres, needs="a member of candlestack_aggregate"):
        conn = db.connect(settings.postgres)
        try:
            result = audit(conn, client, symbols=symbols, intervals=settings.intervals,
                           start_ms=to_ms(start), end_ms=to_ms(end))
        except (OSError, RestThrottled) as exc:
            print(f"candlestack: Binance klines at {settings.rest_url}: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        except ContractError as exc:
            print(f"candlestack: Binance klines at {settings.rest_url}: {exc}", file=sys.stderr)
            return EXIT_PROTOCOL
        finally:
            conn.close()
    for m in result.mismatches:
        print(f"{m.symbol} {m.interval} {from_ms(m.open_time).isoformat()} {m.field}: ours {m.ours} theirs {m.theirs}")
    print(f"compared {result.compared} klines from {start.isoformat()} to {end.isoformat()}: "
          f"{result.mismatched} mismatched ({len(result.mismatches)} fields)")
    for symbol, interval in result.refused:
        print(f"{symbol} {interval}: not compared, Binance refused the request (see the log)", file=sys.stderr)
    log.info("audit done", extra={"compared": result.compared, "mismatched": result.mismatched,
                                  "fields": len(result.mismatches), "skipped_unbuilt_fillers": result.skipped,
                                  "requests": client.requests, "throttled": client.throttled,
                                  "refused": len(result.refused)})
    if result.mismatches:
        return EXIT_MISMATCH
    return EXIT_UNAVAILABLE if result.refused else 0

