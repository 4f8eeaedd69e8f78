-- candlestack schema, version 5: pipeline_health with lags that are never negative.
--
-- Every *_s column is seconds, never negative, and 0 means "nothing is waiting":
--
--   trade_age_s   now() - last_trade_time: how long since the newest stored trade of the symbol
--                 happened. Grows when the market is quiet or the producer/consumer is stuck.
--   ingest_lag_s  last_stored_at - last_trade_time: how long the newest stored trade took from
--                 Binance's trade time to the consumer's committed batch.
--   candle_lag_s  how long the first stored trade that no 1m candle covers yet has been waiting
--                 for one. Only trades of CLOSED 1m windows count, after the newest 1m candle
--                 that has trades; such a trade is due once its window has closed and it is
--                 stored: due since greatest(window end, stored_at) = candle_due_since.
--                 0 when no closed window after the newest candle has trades.
--
-- The previous candle lag (newest trade minus the newest candle's close) went negative whenever
-- the aggregator had already built the still-open window, whose close lies in the future.
-- The greatest(0, ...) on the other two guard against clocks: trade times are Binance's clock,
-- stored_at and now() the database's.
--
-- Columns are those of version 1 with candle_due_since appended, so CREATE OR REPLACE keeps the
-- view's grants (repeated below all the same).
CREATE OR REPLACE VIEW pipeline_health AS
    SELECT s.symbol,
           s.last_price,
           s.last_trade_time,
           s.last_stored_at,
           s.trades_stored,
           greatest(0, extract(epoch FROM now() - s.last_trade_time)) AS trade_age_s,
           greatest(0, extract(epoch FROM s.last_stored_at - s.last_trade_time)) AS ingest_lag_s,
           c.last_candle_open,
           c.last_candle_updated_at,
           coalesce(greatest(0, extract(epoch FROM now() - d.due_since)), 0) AS candle_lag_s,
           d.due_since AS candle_due_since
    FROM symbol_state s
    LEFT JOIN LATERAL (
        SELECT max(open_time) AS last_candle_open,
               max(open_time) FILTER (WHERE trade_count > 0) AS last_traded_open,
               max(updated_at) AS last_candle_updated_at
        FROM candles WHERE candles.symbol = s.symbol AND timeframe = '1m'
    ) c ON true
    -- One index probe on trades' key (symbol, trade_time, trade_id); the bounds prune partitions.
    LEFT JOIN LATERAL (
        SELECT greatest(date_trunc('minute', t.trade_time) + interval '1 minute', t.stored_at) AS due_since
        FROM trades t
        WHERE t.symbol = s.symbol
          AND t.trade_time >= coalesce(c.last_traded_open + interval '1 minute', '-infinity')
          AND t.trade_time < date_trunc('minute', now())
        ORDER BY t.trade_time, t.trade_id
        LIMIT 1
    ) d ON true;

GRANT SELECT ON pipeline_health TO candlestack_read;
