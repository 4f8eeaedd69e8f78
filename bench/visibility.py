"""When trades become visible in PostgreSQL, cheaply enough to follow 50,000 rows/s.

Fetching every new row (as ``bench.latency`` does at 5k/s) costs the poller more CPU than the
pipeline has to spare at tens of thousands of rows a second, and a per-symbol ``trade_id > last``
condition does not scale to 500 symbols (the key is (symbol, trade_time, trade_id)). Instead each
poll asks PostgreSQL for a histogram of the rows it has not counted yet, found the way the
aggregator finds its work: through ``ingest_xid`` (indexed), the inserting transaction.

- Watermark: the xmin of the poll's own snapshot. Every transaction below it has ended, so a row
  that becomes visible later has ``ingest_xid`` at or above it; rows at or above it already
  counted are skipped by their xid (the poller remembers those xids until the watermark passes).
- A row's lag is the wall time just before the query whose snapshot first showed it minus its
  trade time (1 ms buckets); the replay's synthetic trade time is when it published the trade.
  The producer's share, ``ingest_time - trade_time``, comes in the same histogram query.
- Only rows traded at or after ``since_ms`` enter the histograms (a warm-up is dropped); every
  row counts towards ``rows``, those already stored when the poller starts included (its first
  poll starts from xid 0).

The answer to one poll is a few hundred (xid, lag) groups whatever the rate or the number of
symbols, so a 20 ms poll stays cheap on both sides.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg2.extensions

POLL_SQL = """
SELECT pg_snapshot_xmin(pg_current_snapshot())::text, n.xid, n.lag_ms, n.producer_ms, n.rows
FROM (SELECT) AS one
LEFT JOIN (
    SELECT ingest_xid::text AS xid,
           CASE WHEN trade_time >= %(since)s::timestamptz
                THEN %(wall)s - (extract(epoch FROM trade_time) * 1000)::bigint END AS lag_ms,
           CASE WHEN trade_time >= %(since)s::timestamptz
                THEN (extract(epoch FROM ingest_time - trade_time) * 1000)::bigint END AS producer_ms,
           count(*) AS rows
    FROM trades
    WHERE ingest_xid >= %(mark)s::text::xid8 AND NOT ingest_xid = ANY (%(seen)s::text[]::xid8[])
    GROUP BY 1, 2, 3
) AS n ON true
"""


def hist_percentile(hist: Counter[int], q: float, *, unseen: int = 0) -> float:
    """Nearest-rank percentile of a histogram; ``unseen`` samples count as infinitely late."""
    total = sum(hist.values()) + unseen
    if not total:
        return math.nan
    rank = max(1, math.ceil(q / 100 * total))
    running = 0
    for value in sorted(hist):
        running += hist[value]
        if running >= rank:
            return float(value)
    return math.inf


@dataclass
class VisibilityPoller:
    """Counts rows of ``trades`` as they become visible; call :meth:`poll` in a loop."""

    conn: psycopg2.extensions.connection
    # Trades before this (Unix ms) stay out of the histograms; 0: none.
    since_ms: float = 0.0
    mark: int = 0
    rows: int = 0
    polls: int = 0
    lag_ms: Counter[int] = field(default_factory=Counter)
    producer_ms: Counter[int] = field(default_factory=Counter)
    # Per poll that found rows: (wall ms, rows, the largest lag among them in ms).
    timeline: list[tuple[int, int, int]] = field(default_factory=list)
    _seen: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        # One statement per transaction, and its snapshot is the one pg_current_snapshot() reports.
        self.conn.set_session(isolation_level="REPEATABLE READ", autocommit=True)
        # The rows already stored count too (so that ``rows`` can be compared with what the feed
        # published), once; they enter the histograms only if traded at or after ``since_ms``.
        self.poll()

    def poll(self) -> int:
        """One query; returns the rows newly visible."""
        since = datetime.fromtimestamp(self.since_ms / 1000, UTC) if self.since_ms else "-infinity"
        wall = time.time_ns() // 1_000_000
        with self.conn.cursor() as cur:
            cur.execute(POLL_SQL, {"since": since, "wall": wall, "mark": str(self.mark),
                                   "seen": [str(xid) for xid in self._seen]})
            answer = cur.fetchall()
        self.polls += 1
        new_mark = int(answer[0][0])
        fresh = 0
        worst = -1
        for _, xid, lag, producer, count in answer:
            if xid is None:
                continue
            self._seen.add(int(xid))
            fresh += int(count)
            if lag is not None:
                self.lag_ms[int(lag)] += int(count)
                self.producer_ms[int(producer)] += int(count)
                worst = max(worst, int(lag))
        self.rows += fresh
        if worst >= 0:
            self.timeline.append((wall, fresh, worst))
        self.mark = new_mark
        self._seen = {xid for xid in self._seen if xid >= new_mark}
        return fresh

    @property
    def samples(self) -> int:
        return sum(self.lag_ms.values())

    def worst_by_slice(self, seconds: float = 5.0) -> list[tuple[float, int]]:
        """The largest lag (ms) seen in each slice of ``seconds`` from the first poll with rows:
        when a p99 is bad, whether the lag built up steadily or in one stall."""
        if not self.timeline:
            return []
        start = self.timeline[0][0]
        worst: dict[int, int] = {}
        for wall, _rows, lag in self.timeline:
            index = int((wall - start) / 1000 // seconds)
            worst[index] = max(worst.get(index, 0), lag)
        return [(round(index * seconds, 1), lag) for index, lag in sorted(worst.items())]
