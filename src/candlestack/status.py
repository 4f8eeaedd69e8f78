"""What ``candlestack status`` reports: the queries, the health verdict and the text layout.

The report is a plain dict of JSON-ready values, so ``--json`` prints it as is and the text
table and the verdict are pure functions of it (testable without a database).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg2.extensions

Report = dict[str, Any]

# Lags are pipeline_health's (see migration 0005_health.sql): seconds, never negative.
SYMBOLS_SQL = """
SELECT symbol, last_price, last_trade_time, trades_stored,
       trade_age_s, ingest_lag_s, last_candle_open, candle_lag_s
FROM pipeline_health ORDER BY symbol
"""

GAPS_SQL = """
SELECT count(*) FILTER (WHERE resolved_at IS NULL),
       count(*) FILTER (WHERE resolved_at IS NULL AND pending),
       count(*) FILTER (WHERE resolved_at IS NOT NULL),
       coalesce(sum(to_id - from_id + 1) FILTER (WHERE resolved_at IS NULL), 0),
       max(resolved_at)
FROM ingest_gaps
"""

OPEN_GAPS_SQL = """
SELECT symbol, from_id, to_id, pending, reason, detected_at
FROM ingest_gaps WHERE resolved_at IS NULL
ORDER BY detected_at DESC, symbol, from_id LIMIT %s
"""

# Dead letters stay in the table for inspection; only recent ones call for attention.
DEAD_LETTERS_SQL = """
SELECT count(*), count(*) FILTER (WHERE received_at > now() - %s * interval '1 second')
FROM dead_letters
"""

LAST_DEAD_LETTER_SQL = """
SELECT received_at, topic, kafka_partition, kafka_offset, field, reason
FROM dead_letters ORDER BY received_at DESC, id DESC LIMIT 1
"""

TOP_REASONS_SQL = """
SELECT field, reason, count(*) FROM dead_letters
GROUP BY field, reason ORDER BY count(*) DESC, reason LIMIT %s
"""

HAS_COMPLETE_SQL = """
SELECT EXISTS (SELECT FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'candles' AND column_name = 'complete')
"""

# Only closed windows: an open window's candle is incomplete by nature. "Overdue" ones closed
# longer ago than the staleness threshold, so the aggregator has had its chance.
INCOMPLETE_SQL = """
SELECT count(*) FILTER (WHERE close_time <= now()),
       count(*) FILTER (WHERE close_time <= now() - %s * interval '1 second'),
       min(open_time) FILTER (WHERE close_time <= now())
FROM candles WHERE NOT complete
"""

AGGREGATORS_SQL = "SELECT name, watermark_xid::text, ticks, updated_at FROM aggregator_state ORDER BY name"


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _rows(cur: psycopg2.extensions.cursor, names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [dict(zip(names, map(jsonable, row), strict=True)) for row in cur.fetchall()]


def collect(cur: psycopg2.extensions.cursor, *, stale_after_s: float, recent_s: float = 86_400,
            list_limit: int = 5) -> Report:
    """Read everything ``status`` shows; needs only ``candlestack_read``."""
    cur.execute(SYMBOLS_SQL)
    symbols = _rows(cur, tuple(d.name for d in cur.description))
    return {
        "symbols": symbols,
        "gaps": _gaps(cur, list_limit),
        "dead_letters": _dead_letters(cur, recent_s, list_limit),
        "incomplete_candles": _incomplete(cur, stale_after_s),
        "aggregators": _aggregators(cur),
    }


def _gaps(cur: psycopg2.extensions.cursor, limit: int) -> dict[str, Any]:
    cur.execute(GAPS_SQL)
    open_, pending, resolved, missing, last_resolved = cur.fetchone()
    cur.execute(OPEN_GAPS_SQL, (limit,))
    return {
        "open": open_, "pending": pending, "resolved": resolved, "missing_trades": int(missing),
        "last_resolved_at": jsonable(last_resolved),
        "newest_open": _rows(cur, ("symbol", "from_id", "to_id", "pending", "reason", "detected_at")),
    }


def _dead_letters(cur: psycopg2.extensions.cursor, recent_s: float, limit: int) -> dict[str, Any]:
    cur.execute(DEAD_LETTERS_SQL, (recent_s,))
    count, recent = cur.fetchone()
    cur.execute(LAST_DEAD_LETTER_SQL)
    last = _rows(cur, ("received_at", "topic", "partition", "offset", "field", "reason"))
    cur.execute(TOP_REASONS_SQL, (limit,))
    return {
        "count": count, "recent": recent, "recent_window_s": recent_s,
        "last_received_at": last[0]["received_at"] if last else None,
        "last": last[0] if last else None,
        "top_reasons": _rows(cur, ("field", "reason", "count")),
    }


def _incomplete(cur: psycopg2.extensions.cursor, stale_after_s: float) -> dict[str, Any] | None:
    """Closed candles not marked complete, or None when the schema has no ``candles.complete``."""
    cur.execute(HAS_COMPLETE_SQL)
    if not cur.fetchone()[0]:
        return None
    cur.execute(INCOMPLETE_SQL, (stale_after_s,))
    count, overdue, oldest = cur.fetchone()
    return {"count": count, "overdue": overdue, "oldest_open_time": jsonable(oldest)}


def _aggregators(cur: psycopg2.extensions.cursor) -> list[dict[str, Any]]:
    cur.execute(AGGREGATORS_SQL)
    return _rows(cur, ("name", "watermark_xid", "ticks", "updated_at"))


def attention(report: Report, *, stale_after_s: float) -> list[str]:
    """Why the pipeline needs an operator's look; empty when it is healthy."""
    reasons = []
    for row in report["symbols"]:
        for key, what in (("trade_age_s", "no trade stored for"), ("ingest_lag_s", "ingest lag"),
                          ("candle_lag_s", "candle lag")):
            if row[key] is not None and float(row[key]) > stale_after_s:
                reasons.append(f"{row['symbol']}: {what} {float(row[key]):.0f} s")
    gaps = report["gaps"]
    if gaps["open"]:
        reasons.append(f"{gaps['open']} open gaps ({gaps['pending']} pending, {gaps['missing_trades']} trades)")
    dead = report["dead_letters"]
    if dead["recent"]:
        reasons.append(f"{dead['recent']} dead letters in the last {dead['recent_window_s'] / 3600:.0f} h")
    incomplete = report["incomplete_candles"]
    if incomplete and incomplete["overdue"]:
        reasons.append(f"{incomplete['overdue']} incomplete candles closed over {stale_after_s:.0f} s ago")
    return reasons


def render_text(report: Report) -> list[str]:
    """The report as the lines of a terminal table and a few summary lines."""
    lines = [f"{'symbol':<12} {'last price':>16} {'last trade (UTC)':<24} {'trades':>10} {'age s':>8} "
             f"{'ingest lag s':>12} {'candle lag s':>12}"]
    for row in report["symbols"]:
        lines.append(f"{row['symbol']:<12} {row['last_price']:>16} {str(row['last_trade_time'])[:23]:<24} "
                     f"{row['trades_stored']:>10} {_seconds(row['trade_age_s']):>8} "
                     f"{_seconds(row['ingest_lag_s']):>12} {_seconds(row['candle_lag_s']):>12}")
    lines += _gap_lines(report["gaps"]) + _dead_letter_lines(report["dead_letters"])
    incomplete = report["incomplete_candles"]
    lines.append("incomplete candles: -" if incomplete is None else
                 f"incomplete candles: {incomplete['count']} ({incomplete['overdue']} overdue, "
                 f"oldest {incomplete['oldest_open_time'] or '-'})")
    for agg in report["aggregators"]:
        lines.append(f"aggregator {agg['name']}: watermark xid {agg['watermark_xid']}, {agg['ticks']} ticks, "
                     f"updated {agg['updated_at']}")
    return lines


def _gap_lines(gaps: dict[str, Any]) -> list[str]:
    lines = [f"gaps: {gaps['open']} open ({gaps['pending']} pending, {gaps['missing_trades']} trades missing), "
             f"{gaps['resolved']} resolved (last {gaps['last_resolved_at'] or '-'})"]
    for gap in gaps["newest_open"]:
        state = "pending" if gap["pending"] else "open"
        lines.append(f"  {state} {gap['symbol']} {gap['from_id']}..{gap['to_id']} since {gap['detected_at']}: "
                     f"{gap['reason']}")
    return lines


def _dead_letter_lines(dead: dict[str, Any]) -> list[str]:
    lines = [f"dead letters: {dead['count']} ({dead['recent']} recent; last {dead['last_received_at'] or '-'})"]
    for top in dead["top_reasons"]:
        lines.append(f"  {top['count']} x {top['field'] or '-'}: {top['reason']}")
    return lines


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}"
