-- candlestack schema, version 8: every field of a Binance kline, and the old system's `stock` schema.
--
-- taker_buy_volume, taker_buy_quote_volume: sums of qty and of price * qty over the trades with
--     buyer_is_maker = false (the taker bought), as Binance's kline fields 9 and 10.
-- first_raw_trade_id, last_raw_trade_id: raw Binance trade ids, as in the kline's trade count
--     range. For the trade stream that is trade_id; for aggTrade the first_trade_id of the
--     window's first aggregate and the last_trade_id of its last. first_trade_id/last_trade_id
--     keep their meaning: ids of the stream's own rows (aggregate ids for aggTrade), which the
--     completeness checks compare.
-- price_sum: the sum of the prices of the window's rows of `trades` (id_count of them), so that
--     stock.aggregated_prices_*.avg_price = price_sum / id_count is the plain mean of the prices
--     the old system received, exact, and still there after retention has dropped the trades.
-- Fillers (trade_count = 0) have taker volumes 0, price_sum 0 and raw ids NULL. All five are
-- NULL for a traded candle whose trades are gone (retention) when this migration runs.
ALTER TABLE candles
    ADD COLUMN taker_buy_volume       numeric,
    ADD COLUMN taker_buy_quote_volume numeric,
    ADD COLUMN first_raw_trade_id     bigint,
    ADD COLUMN last_raw_trade_id      bigint,
    ADD COLUMN price_sum              numeric;

-- Existing candles, recomputed from the trades still stored. Trades are reduced once, to 1-minute
-- partials; every timeframe (candlestack.core.settings.INTERVALS_MS: 1m to 1d, all whole numbers of
-- minutes counted from the Unix epoch) is then the exact combination of those partials: sums of
-- numerics, min and max of ids. Raw ids grow with aggregate ids (an aggregate covers the raw trades
-- after the previous one's), so the window's smallest first_trade_id is its first aggregate's.
-- Retention drops whole UTC days and no window crosses a day, so a window's trades are either
-- all present or all gone.
WITH steps (timeframe, step) AS (
    VALUES ('1m', interval '1 minute'), ('3m', interval '3 minutes'), ('5m', interval '5 minutes'),
           ('15m', interval '15 minutes'), ('30m', interval '30 minutes'), ('1h', interval '1 hour'),
           ('2h', interval '2 hours'), ('4h', interval '4 hours'), ('6h', interval '6 hours'),
           ('12h', interval '12 hours'), ('1d', interval '1 day')
), minutes AS (
    SELECT symbol,
           date_bin(interval '1 minute', trade_time, timestamptz 'epoch') AS minute,
           sum(qty) FILTER (WHERE NOT buyer_is_maker) AS taker_volume,
           sum(price * qty) FILTER (WHERE NOT buyer_is_maker) AS taker_quote,
           min(coalesce(first_trade_id, trade_id)) AS first_raw,
           max(coalesce(last_trade_id, trade_id)) AS last_raw,
           sum(price) AS price_sum
    FROM trades
    GROUP BY 1, 2
), windows AS (
    SELECT m.symbol, s.timeframe,
           date_bin(s.step, m.minute, timestamptz 'epoch') AS open_time,
           sum(m.taker_volume) AS taker_volume,
           sum(m.taker_quote) AS taker_quote,
           min(m.first_raw) AS first_raw,
           max(m.last_raw) AS last_raw,
           sum(m.price_sum) AS price_sum
    FROM minutes m
    CROSS JOIN steps s
    WHERE s.timeframe IN (SELECT DISTINCT timeframe FROM candles)
    GROUP BY 1, 2, 3
)
UPDATE candles c SET
    taker_buy_volume = trim_scale(coalesce(w.taker_volume, 0)),
    taker_buy_quote_volume = trim_scale(coalesce(w.taker_quote, 0)),
    first_raw_trade_id = w.first_raw,
    last_raw_trade_id = w.last_raw,
    price_sum = trim_scale(w.price_sum)
FROM windows w
WHERE c.symbol = w.symbol AND c.timeframe = w.timeframe AND c.open_time = w.open_time
  AND c.trade_count > 0;

UPDATE candles SET taker_buy_volume = 0, taker_buy_quote_volume = 0, price_sum = 0
WHERE trade_count = 0;

-- The old system's schema, for its users' queries (e.g. `SELECT symbol, price, event_time FROM
-- stock.real_time_prices ORDER BY event_time DESC LIMIT 5`).
CREATE SCHEMA stock;

-- One row per stored trade (per aggregate for an aggTrade database, the rows the old system got).
-- "timestamp" and event_time are both the trade time: the old system's event_time was its
-- "timestamp" as a timestamptz. event_time is trades.trade_time itself, not an expression, so the
-- planner sorts on the partition key; without an index on trade_time alone (trades has none: it
-- would slow every insert) `ORDER BY event_time DESC LIMIT 5` is a parallel top-N scan of the
-- stored trades, about 0.3 s per million on 2 cores.
CREATE VIEW stock.real_time_prices AS
    SELECT symbol,
           price,
           (extract(epoch FROM trade_time) * 1000)::bigint AS "timestamp",
           trade_time AS event_time,
           qty AS volume
    FROM public.trades;

-- Windows that have trades, as the old system had them (it wrote no zero-volume fillers).
-- avg_price: the plain mean of the window's trade prices (for aggTrade, of its aggregates' prices,
-- the rows the old system received); trade_count: Binance's raw trade count.
CREATE VIEW stock.aggregated_prices_1min AS
    SELECT symbol, open_time AS window_start, close_time AS window_end,
           open AS open_price, close AS close_price, high AS high_price, low AS low_price,
           price_sum / nullif(id_count, 0) AS avg_price,
           volume AS total_volume, trade_count
    FROM public.candles
    WHERE timeframe = '1m' AND trade_count > 0;

CREATE VIEW stock.aggregated_prices_5min AS
    SELECT symbol, open_time AS window_start, close_time AS window_end,
           open AS open_price, close AS close_price, high AS high_price, low AS low_price,
           price_sum / nullif(id_count, 0) AS avg_price,
           volume AS total_volume, trade_count
    FROM public.candles
    WHERE timeframe = '5m' AND trade_count > 0;

GRANT USAGE ON SCHEMA stock TO candlestack_read;
GRANT SELECT ON stock.real_time_prices, stock.aggregated_prices_1min, stock.aggregated_prices_5min
    TO candlestack_read;
