"""The promise, checked on a deployed host: every trade the feed published is stored exactly
once or recorded as a gap, and the candles equal a recomputation from the stored trades."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tests.deployed.host import DeployedHost, deadline_wait

# One timeframe's candles recomputed from the stored trades and compared both ways; the
# Molecule verify playbook runs the same file.
RECOMPUTE_SQL = (Path(__file__).with_name("candles_vs_trades.sql")).read_text()

# Zero-volume fillers claim that nobody traded: true only where the traded candles on either
# side join without a missing id. Fillers marked incomplete (complete = false) claim nothing.
FALSE_FILLERS_SQL = """
SELECT count(*) FROM candles f
CROSS JOIN LATERAL (SELECT last_trade_id FROM candles p
                    WHERE p.symbol = f.symbol AND p.timeframe = f.timeframe AND p.trade_count > 0
                      AND p.open_time < f.open_time ORDER BY p.open_time DESC LIMIT 1) prev
CROSS JOIN LATERAL (SELECT first_trade_id FROM candles n
                    WHERE n.symbol = f.symbol AND n.timeframe = f.timeframe AND n.trade_count > 0
                      AND n.open_time > f.open_time ORDER BY n.open_time LIMIT 1) next
WHERE f.timeframe = :'timeframe' AND f.trade_count = 0 AND {complete_filter}
      prev.last_trade_id + 1 <> next.first_trade_id
"""

TIMEFRAMES = {"1m": 60, "5m": 300}


@dataclass
class IdReport:
    published: int = 0
    stored: int = 0
    missing: int = 0
    in_gaps: int = 0
    unexplained: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unexplained


def open_gaps(host: DeployedHost, symbol: str) -> list[tuple[int, int]]:
    """The symbol's open gap ranges (inclusive), which may be far larger than what was published."""
    return [(int(a), int(b)) for a, b in host.sql(
        "SELECT from_id, to_id FROM ingest_gaps WHERE symbol = :'symbol' AND resolved_at IS NULL ORDER BY from_id",
        symbol=symbol)]


def in_any(trade_id: int, ranges: list[tuple[int, int]]) -> bool:
    return any(low <= trade_id <= high for low, high in ranges)


def compare_ids(host: DeployedHost, *, since: dict[str, int] | None = None) -> IdReport:
    """Feed's published ids against stored ids (per symbol), from the oldest id the feed still
    remembers (a restarted feed starts a new history) or from ``since``, whichever is later."""
    report = IdReport()
    history = host.replay("/_replay/status", method="GET")["symbols"]
    for symbol in sorted(history):
        floor = max(int(history[symbol]["first_id"] or 0), (since or {}).get(symbol, 0))
        published = {i for i in host.published_ids(symbol) if i >= floor}
        stored = {int(r[0]) for r in host.sql(
            "SELECT trade_id FROM trades WHERE symbol = :'symbol' AND trade_id >= :floor", symbol=symbol, floor=floor)}
        gaps = open_gaps(host, symbol)
        missing = published - stored
        unexplained = {i for i in missing if not in_any(i, gaps)}
        report.published += len(published)
        report.stored += len(stored & published)
        report.missing += len(missing)
        report.in_gaps += len(missing) - len(unexplained)
        if unexplained:
            report.unexplained.append(f"{symbol}: {len(unexplained)} published ids neither stored nor in a gap, "
                                      f"e.g. {sorted(unexplained)[:10]}")
        stored_in_gaps = [i for i in stored if in_any(i, gaps)]
        if stored_in_gaps:
            report.unexplained.append(f"{symbol}: {len(stored_in_gaps)} ids in open gaps are stored")
        if stored - published:
            report.unexplained.append(f"{symbol}: {len(stored - published)} stored ids the feed never published, "
                                      f"e.g. {sorted(stored - published)[:10]}")
    return report


def duplicates(host: DeployedHost) -> int:
    return int(host.scalar("SELECT count(*) - count(DISTINCT (symbol, trade_id)) FROM trades"))


def has_complete_column(host: DeployedHost) -> bool:
    return host.scalar("SELECT count(*) FROM information_schema.columns "
                       "WHERE table_name = 'candles' AND column_name = 'complete'") == "1"


def candle_mismatches(host: DeployedHost) -> tuple[int, list[str]]:
    """(candles checked, problems): traded candles against the recomputation, both ways, and
    fillers over missing ids."""
    problems: list[str] = []
    checked = 0
    complete_filter = "f.complete AND" if has_complete_column(host) else ""
    for timeframe, step in TIMEFRAMES.items():
        missing, extra, total = (int(v) for v in host.sql(RECOMPUTE_SQL, step=step, timeframe=timeframe)[0])
        checked += total
        if missing or extra:
            problems.append(f"{timeframe}: {missing} recomputed candles not stored, {extra} stored not recomputed")
        false_fillers = int(host.scalar(FALSE_FILLERS_SQL.format(complete_filter=complete_filter),
                                        timeframe=timeframe))
        if false_fillers:
            problems.append(f"{timeframe}: {false_fillers} zero-volume fillers over missing trade ids")
    return checked, problems


def wait_for_candles(host: DeployedHost, *, timeout: float = 240) -> int:
    """Wait until the candles equal the recomputation (the aggregator ticks every few seconds)."""
    outcome: dict[str, object] = {}

    def settled() -> bool:
        checked, problems = candle_mismatches(host)
        outcome.update(checked=checked, problems=problems)
        return not problems

    try:
        deadline_wait(settled, timeout=timeout, interval=3, what="candles equal to a recomputation")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {outcome.get('problems')}") from None
    return int(outcome["checked"])  # type: ignore[call-overload]
