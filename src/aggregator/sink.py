"""Writing candles to PostgreSQL: idempotent upserts, then Binance's zero-volume fillers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg2.extensions
from psycopg2.extras import execute_values

from aggregator.compute import CandleRow

STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS candles_stage (
    symbol text, timeframe text, open_ms bigint, interval_ms bigint,
    open numeric, high numeric, low numeric, close numeric, volume numeric, quote_volume numeric,
    trade_count bigint, first_trade_id bigint, last_trade_id bigint
) ON COMMIT DELETE ROWS
"""

# Changes a row only when a value differs, so a rerun over the same trades touches nothing
# (and the returned count is the number of candles really written).
UPSERT_SQL = """
INSERT INTO candles AS c (symbol, timeframe, open_time, close_time, open, high, low, close,
                          volume, quote_volume, trade_count, first_trade_id, last_trade_id)
SELECT symbol, timeframe,
       timestamptz 'epoch' + open_ms * interval '1 millisecond',
       timestamptz 'epoch' + (open_ms + interval_ms) * interval '1 millisecond',
       trim_scale(open), trim_scale(high), trim_scale(low), trim_scale(close),
       trim_scale(volume), trim_scale(quote_volume), trade_count, first_trade_id, last_trade_id
FROM candles_stage
-- Key order, so that two writers (run and a reconcile timer) lock rows in the same order.
ORDER BY symbol, timeframe, open_ms
ON CONFLICT (symbol, timeframe, open_time) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, quote_volume = EXCLUDED.quote_volume, trade_count = EXCLUDED.trade_count,
    first_trade_id = EXCLUDED.first_trade_id, last_trade_id = EXCLUDED.last_trade_id, updated_at = now()
WHERE (c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trade_count, c.first_trade_id, c.last_trade_id)
      IS DISTINCT FROM
      (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume, EXCLUDED.quote_volume,
       EXCLUDED.trade_count, EXCLUDED.first_trade_id, EXCLUDED.last_trade_id)
"""

# Windows without trades between two traded windows get Binance's filler candle: volume 0 and
# open = high = low = close = the previous traded window's close. The region runs from the last
# traded window before [lo, hi] to the first traded window after it, so a late trade that
# changes a close also corrects the fillers that follow it.
FILLER_SQL = """
WITH params AS (
    SELECT %(symbol)s::text AS symbol, %(timeframe)s::text AS timeframe,
           %(step_ms)s * interval '1 millisecond' AS step,
           timestamptz 'epoch' + %(lo_ms)s * interval '1 millisecond' AS lo,
           timestamptz 'epoch' + %(hi_ms)s * interval '1 millisecond' AS hi
), bounds AS (
    SELECT p.*,
           (SELECT max(open_time) FROM candles c WHERE c.symbol = p.symbol AND c.timeframe = p.timeframe
                AND c.trade_count > 0 AND c.open_time < p.lo) AS prev_traded,
           (SELECT min(open_time) FROM candles c WHERE c.symbol = p.symbol AND c.timeframe = p.timeframe
                AND c.trade_count > 0 AND c.open_time > p.hi) AS next_traded,
           (SELECT max(open_time) FROM candles c WHERE c.symbol = p.symbol AND c.timeframe = p.timeframe
                AND c.trade_count > 0 AND c.open_time <= p.hi) AS last_traded
    FROM params p
), slots AS (
    SELECT b.symbol, b.timeframe, b.step, slot AS open_time
    FROM bounds b,
         generate_series(coalesce(b.prev_traded, b.lo), coalesce(b.next_traded - b.step, b.last_traded), b.step) AS slot
), fillers AS (
    SELECT s.symbol, s.timeframe, s.open_time, s.open_time + s.step AS close_time,
           (SELECT c.close FROM candles c
             WHERE c.symbol = s.symbol AND c.timeframe = s.timeframe AND c.trade_count > 0
               AND c.open_time < s.open_time
             ORDER BY c.open_time DESC LIMIT 1) AS price
    FROM slots s
    WHERE NOT EXISTS (SELECT 1 FROM candles c WHERE c.symbol = s.symbol AND c.timeframe = s.timeframe
                        AND c.open_time = s.open_time AND c.trade_count > 0)
)
INSERT INTO candles AS c (symbol, timeframe, open_time, close_time, open, high, low, close,
                          volume, quote_volume, trade_count, first_trade_id, last_trade_id)
SELECT symbol, timeframe, open_time, close_time, price, price, price, price, 0, 0, 0, NULL, NULL
FROM fillers WHERE price IS NOT NULL
ON CONFLICT (symbol, timeframe, open_time) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close, updated_at = now()
WHERE c.trade_count = 0 AND (c.open, c.high, c.low, c.close) IS DISTINCT FROM
      (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close)
"""


@dataclass(frozen=True, slots=True)
class Region:
    """Windows ``lo_ms``..``hi_ms`` (window starts, inclusive) of one symbol and timeframe."""

    symbol: str
    timeframe: str
    step_ms: int
    lo_ms: int
    hi_ms: int


def regions(rows: Iterable[CandleRow]) -> list[Region]:
    """The span of windows each (symbol, timeframe) got candles for."""
    bounds: dict[tuple[str, str], tuple[int, int, int]] = {}
    for row in rows:
        symbol, timeframe, open_ms, step = row[0], row[1], row[2], row[3]
        lo, hi, _ = bounds.get((symbol, timeframe), (open_ms, open_ms, step))
        bounds[(symbol, timeframe)] = (min(lo, open_ms), max(hi, open_ms), step)
    return [Region(symbol, timeframe, step, lo, hi) for (symbol, timeframe), (lo, hi, step) in sorted(bounds.items())]


def write(conn: psycopg2.extensions.connection, rows: Sequence[CandleRow],
          extra_regions: Sequence[Region] = ()) -> int:
    """Upsert candles and refresh fillers in one transaction; returns rows changed."""
    changed = 0
    with conn, conn.cursor() as cur:
        cur.execute(STAGE_DDL)
        if rows:
            execute_values(cur, "INSERT INTO candles_stage VALUES %s", rows, page_size=5000)
            cur.execute(UPSERT_SQL)
            changed += cur.rowcount
        for region in [*regions(rows), *extra_regions]:
            cur.execute(FILLER_SQL, {"symbol": region.symbol, "timeframe": region.timeframe,
                                     "step_ms": region.step_ms, "lo_ms": region.lo_ms, "hi_ms": region.hi_ms})
            changed += cur.rowcount
    return changed
