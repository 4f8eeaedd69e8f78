"""Writing candles to PostgreSQL: idempotent upserts, Binance's zero-volume fillers, completeness."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extras import execute_values

from candlestack.aggregator.compute import CandleRow

STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS candles_stage (
    symbol text, timeframe text, open_ms bigint, interval_ms bigint,
    open numeric, high numeric, low numeric, close numeric, volume numeric, quote_volume numeric,
    trade_count bigint, first_trade_id bigint, last_trade_id bigint, id_count bigint,
    taker_buy_volume numeric, taker_buy_quote_volume numeric, first_raw_trade_id bigint,
    last_raw_trade_id bigint, price_sum numeric
) ON COMMIT DELETE ROWS
"""

# Changes a row only when a value differs, so a rerun over the same trades touches nothing
# (and the returned count is the number of candles really written).
#
# Freshness rule: trades are insert-only, so of two computations of one window the one that saw
# more distinct trades (id_count) saw a later state. A row is replaced only by one computed from
# at least as many trades, so a reconcile that read an older snapshot never overwrites a
# candle that `run` already built from later trades. Completeness is not set here: it depends
# on the neighbours and is recomputed by COMPLETENESS_SQL over the same regions as the fillers.
UPSERT_SQL = """
INSERT INTO candles AS c (symbol, timeframe, open_time, close_time, open, high, low, close,
                          volume, quote_volume, trade_count, first_trade_id, last_trade_id, id_count,
                          taker_buy_volume, taker_buy_quote_volume, first_raw_trade_id, last_raw_trade_id,
                          price_sum)
SELECT symbol, timeframe,
       timestamptz 'epoch' + open_ms * interval '1 millisecond',
       timestamptz 'epoch' + (open_ms + interval_ms) * interval '1 millisecond',
       trim_scale(open), trim_scale(high), trim_scale(low), trim_scale(close),
       trim_scale(volume), trim_scale(quote_volume), trade_count, first_trade_id, last_trade_id, id_count,
       trim_scale(taker_buy_volume), trim_scale(taker_buy_quote_volume), first_raw_trade_id, last_raw_trade_id,
       trim_scale(price_sum)
FROM candles_stage
-- Key order, so that two writers (run and a reconcile timer) lock rows in the same order.
ORDER BY symbol, timeframe, open_ms
ON CONFLICT (symbol, timeframe, open_time) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, quote_volume = EXCLUDED.quote_volume, trade_count = EXCLUDED.trade_count,
    first_trade_id = EXCLUDED.first_trade_id, last_trade_id = EXCLUDED.last_trade_id,
    id_count = EXCLUDED.id_count, taker_buy_volume = EXCLUDED.taker_buy_volume,
    taker_buy_quote_volume = EXCLUDED.taker_buy_quote_volume, first_raw_trade_id = EXCLUDED.first_raw_trade_id,
    last_raw_trade_id = EXCLUDED.last_raw_trade_id, price_sum = EXCLUDED.price_sum, updated_at = now()
WHERE EXCLUDED.id_count >= c.id_count
  AND (c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trade_count, c.first_trade_id,
       c.last_trade_id, c.id_count, c.taker_buy_volume, c.taker_buy_quote_volume, c.first_raw_trade_id,
       c.last_raw_trade_id, c.price_sum)
      IS DISTINCT FROM
      (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume, EXCLUDED.quote_volume,
       EXCLUDED.trade_count, EXCLUDED.first_trade_id, EXCLUDED.last_trade_id, EXCLUDED.id_count,
       EXCLUDED.taker_buy_volume, EXCLUDED.taker_buy_quote_volume, EXCLUDED.first_raw_trade_id,
       EXCLUDED.last_raw_trade_id, EXCLUDED.price_sum)
"""

# The region of a (symbol, timeframe) that fillers and completeness are recomputed over: from the
# last traded window before [lo, hi] to the first traded window after it, so a late trade that
# changes a close or an edge id also corrects the windows that depend on it.
_BOUNDS = sql.SQL("""
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
)""")

# Windows without trades between two traded windows get Binance's filler candle: volume, taker volumes 0, raw ids NULL,
# open = high = low = close = the previous traded window's close. Such a window is provably
# empty only when the last trade before it and the first trade after it have consecutive ids;
# otherwise trades may be missing (an outage), and the filler is written with complete = false.
FILLER_SQL = _BOUNDS + sql.SQL(""", slots AS (
    SELECT b.symbol, b.timeframe, b.step, slot AS open_time
    FROM bounds b,
         generate_series(coalesce(b.prev_traded, b.lo), coalesce(b.next_traded - b.step, b.last_traded), b.step) AS slot
), fillers AS (
    SELECT s.symbol, s.timeframe, s.open_time, s.open_time + s.step AS close_time, prev.close AS price,
           coalesce(prev.last_trade_id + 1 = next.first_trade_id, false) AS complete
    FROM slots s
    LEFT JOIN LATERAL (
        SELECT c.close, c.last_trade_id FROM candles c
        WHERE c.symbol = s.symbol AND c.timeframe = s.timeframe AND c.trade_count > 0 AND c.open_time < s.open_time
        ORDER BY c.open_time DESC LIMIT 1) prev ON true
    LEFT JOIN LATERAL (
        SELECT c.first_trade_id FROM candles c
        WHERE c.symbol = s.symbol AND c.timeframe = s.timeframe AND c.trade_count > 0 AND c.open_time > s.open_time
        ORDER BY c.open_time LIMIT 1) next ON true
    -- A lookup by primary key per slot. As NOT EXISTS, a table whose statistics are behind (the
    -- candles a backfill just wrote) got a nested loop over every candle of the symbol for each
    -- slot: a month's region took 20 s instead of 0.2 s.
    LEFT JOIN LATERAL (
        SELECT true AS traded FROM candles c
        WHERE c.symbol = s.symbol AND c.timeframe = s.timeframe AND c.open_time = s.open_time
          AND c.trade_count > 0) own ON true
    WHERE own.traded IS NULL
)
INSERT INTO candles AS c (symbol, timeframe, open_time, close_time, open, high, low, close,
                          volume, quote_volume, trade_count, first_trade_id, last_trade_id, complete,
                          taker_buy_volume, taker_buy_quote_volume, first_raw_trade_id, last_raw_trade_id,
                          price_sum)
SELECT symbol, timeframe, open_time, close_time, price, price, price, price, 0, 0, 0, NULL, NULL, complete,
       0, 0, NULL, NULL, 0
FROM fillers WHERE price IS NOT NULL
ON CONFLICT (symbol, timeframe, open_time) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    complete = EXCLUDED.complete, updated_at = now()
WHERE c.trade_count = 0 AND (c.open, c.high, c.low, c.close, c.complete) IS DISTINCT FROM
      (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.complete)
""")

# A traded candle is complete when its own ids are consecutive (last - first + 1 = id_count) and
# its edges join its traded neighbours' (previous last + 1 = its first; its last + 1 = next
# first). The first candle of a symbol has nothing stored before it, so its left edge counts as
# complete: we cannot know where a stream we never saw began. Likewise the newest candle's right
# edge, until a next one exists. Ids are assumed to grow with trade time, as Binance's do.
COMPLETENESS_SQL = _BOUNDS + sql.SQL(""", region AS (
    SELECT b.*, coalesce(b.prev_traded, b.lo) AS first_open, coalesce(b.next_traded, b.hi) AS last_open
    FROM bounds b
), reach AS (
    -- One traded candle more on each side, so that lag/lead see every neighbour that exists.
    SELECT r.*,
           coalesce((SELECT max(open_time) FROM candles c WHERE c.symbol = r.symbol AND c.timeframe = r.timeframe
                         AND c.trade_count > 0 AND c.open_time < r.first_open), r.first_open) AS from_open,
           coalesce((SELECT min(open_time) FROM candles c WHERE c.symbol = r.symbol AND c.timeframe = r.timeframe
                         AND c.trade_count > 0 AND c.open_time > r.last_open), r.last_open) AS to_open
    FROM region r
), traded AS MATERIALIZED (
    SELECT c.open_time, r.first_open, r.last_open, c.complete AS stored,
           c.last_trade_id - c.first_trade_id + 1 = c.id_count
           AND coalesce(lag(c.last_trade_id) OVER w + 1 = c.first_trade_id, true)
           AND coalesce(c.last_trade_id + 1 = lead(c.first_trade_id) OVER w, true) AS complete
    FROM reach r
    JOIN candles c ON c.symbol = r.symbol AND c.timeframe = r.timeframe AND c.trade_count > 0
                  AND c.open_time BETWEEN r.from_open AND r.to_open
    WINDOW w AS (ORDER BY c.open_time)
)
-- Keys as arrays (= ANY), so the planner looks the few changed rows up by primary key instead
-- of joining the whole region row by row.
UPDATE candles c SET complete = c.open_time = ANY (ARRAY(SELECT open_time FROM traded WHERE complete)),
                     updated_at = now()
WHERE c.symbol = %(symbol)s AND c.timeframe = %(timeframe)s
  AND c.open_time = ANY (ARRAY(SELECT open_time FROM traded
                               WHERE open_time BETWEEN first_open AND last_open AND complete <> stored))
""")


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


# The two per-region statements run once per (symbol, timeframe) a tick touched: 1,000 times a
# tick with 500 symbols and 1m + 5m. Planning them took about 70 % of their time (1.3 of 1.9 ms),
# so they are prepared once per connection (server-side PREPARE) and executed by name: 1,000
# regions went from 1.56 s to 0.40 s (python -m bench --only symbols has the tick figures).
_REGION_PARAMS = ("symbol", "timeframe", "step_ms", "lo_ms", "hi_ms")
_REGION_TYPES = "text, text, bigint, bigint, bigint"
PREPARED = {"candlestack_sink_filler": FILLER_SQL, "candlestack_sink_completeness": COMPLETENESS_SQL}


def _prepare(conn: psycopg2.extensions.connection, cur: psycopg2.extensions.cursor) -> None:
    """PREPARE the per-region statements on this connection unless it already has them."""
    cur.execute("SELECT name FROM pg_prepared_statements WHERE name = ANY (%s)", (list(PREPARED),))
    have = {row[0] for row in cur.fetchall()}
    for name, statement in PREPARED.items():
        if name in have:
            continue
        text = statement.as_string(conn)
        for position, param in enumerate(_REGION_PARAMS, start=1):
            text = text.replace(f"%({param})s", f"${position}")
        cur.execute(f"PREPARE {name} ({_REGION_TYPES}) AS {text}")


def write(conn: psycopg2.extensions.connection, rows: Sequence[CandleRow],
          extra_regions: Sequence[Region] = ()) -> int:
    """Upsert candles, refresh fillers and completeness in one transaction; returns rows changed."""
    changed = 0
    with conn, conn.cursor() as cur:
        cur.execute(STAGE_DDL)
        if rows:
            execute_values(cur, "INSERT INTO candles_stage VALUES %s", rows, page_size=5000)
            cur.execute(UPSERT_SQL)
            changed += cur.rowcount
        todo = [*regions(rows), *extra_regions]
        if todo:
            _prepare(conn, cur)
        for region in todo:
            params = (region.symbol, region.timeframe, region.step_ms, region.lo_ms, region.hi_ms)
            # Fillers first: a filler's completeness depends only on traded candles, and traded
            # candles are judged after every candle of the batch has been upserted.
            cur.execute("EXECUTE candlestack_sink_filler (%s, %s, %s, %s, %s)", params)
            changed += cur.rowcount
            cur.execute("EXECUTE candlestack_sink_completeness (%s, %s, %s, %s, %s)", params)
            changed += cur.rowcount
    return changed
