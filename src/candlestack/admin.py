"""Operator commands: ``db migrate``, ``db retention`` and ``status``."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from candlestack import db, logs
from candlestack.settings import DatabaseSettings

log = logging.getLogger(__name__)


def db_command(args: argparse.Namespace) -> int:
    settings = DatabaseSettings.from_env()
    logs.setup(settings.log)
    conn = db.connect(settings.postgres)
    try:
        if args.action == "migrate":
            # stdout lists what was applied and stays empty on a no-op run, so that
            # deployment tools can report "changed" honestly.
            for name in db.migrate(conn):
                print(f"applied {name}")
            return 0
        keep_days = args.keep_days or settings.retention_days
        cutoff = (datetime.now(UTC) - timedelta(days=keep_days)).date()
        with conn, conn.cursor() as cur:
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


STATUS_SQL = """
SELECT h.symbol, h.last_price, h.last_trade_time, h.trades_stored,
       h.trade_age_s, h.ingest_lag_s, h.last_candle_open, h.candle_lag_s
FROM pipeline_health h ORDER BY h.symbol
"""


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def status_command(args: argparse.Namespace) -> int:
    settings = DatabaseSettings.from_env()
    logs.setup(settings.log)
    conn = db.connect(settings.postgres)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(STATUS_SQL)
            columns = [d.name for d in cur.description]
            rows = [dict(zip(columns, map(_jsonable, row), strict=True)) for row in cur.fetchall()]
            cur.execute("SELECT count(*), max(received_at) FROM dead_letters")
            dead_count, dead_last = cur.fetchone()
            cur.execute("SELECT count(*), coalesce(sum(to_id - from_id + 1), 0) FROM ingest_gaps")
            gap_count, gap_trades = cur.fetchone()
            cur.execute("SELECT name, watermark_xid::text, ticks, updated_at FROM aggregator_state")
            aggregators = [dict(zip(("name", "watermark_xid", "ticks", "updated_at"), map(_jsonable, r), strict=True))
                           for r in cur.fetchall()]
    finally:
        conn.close()
    report = {
        "symbols": rows,
        "dead_letters": {"count": dead_count, "last_received_at": _jsonable(dead_last)},
        "gaps": {"count": gap_count, "missing_trades": int(gap_trades)},
        "aggregators": aggregators,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    header = f"{'symbol':<12} {'last price':>16} {'last trade (UTC)':<24} {'trades':>10} {'age s':>8} "
    header += f"{'ingest lag s':>12} {'candle lag s':>12}"
    print(header)
    for row in rows:
        print(f"{row['symbol']:<12} {row['last_price']:>16} {str(row['last_trade_time'])[:23]:<24} "
              f"{row['trades_stored']:>10} {_fmt(row['trade_age_s']):>8} {_fmt(row['ingest_lag_s']):>12} "
              f"{_fmt(row['candle_lag_s']):>12}")
    print(f"dead letters: {dead_count} (last {dead_last or '-'}); gaps: {gap_count} ({int(gap_trades)} trades missing)")
    for agg in aggregators:
        print(f"aggregator {agg['name']}: watermark xid {agg['watermark_xid']}, {agg['ticks']} ticks, "
              f"updated {agg['updated_at']}")
    return 0


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}"
