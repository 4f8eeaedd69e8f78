-- One timeframe's candles recomputed from the stored trades, exactly as the aggregator defines
-- them (open/close = first/last trade in (time, id) order; trade_count counts raw trades; taker
-- volumes over buyer_is_maker = false; raw ids of the first and last trade or aggregate), and
-- compared with the stored traded candles both ways, every kline field.
-- psql variables: :step (seconds), :'timeframe'.
-- Returns: recomputed candles not stored, stored candles not recomputed, candles recomputed.
WITH t AS (
    SELECT symbol, trade_id, price, qty, trade_time, buyer_is_maker,
           coalesce(last_trade_id - first_trade_id + 1, 1) AS raw_trades,
           coalesce(first_trade_id, trade_id) AS first_raw, coalesce(last_trade_id, trade_id) AS last_raw,
           timestamptz 'epoch' + floor(extract(epoch FROM trade_time) / :step) * :step * interval '1 second'
               AS open_time
    FROM trades
), recomputed AS (
    SELECT symbol, open_time,
           trim_scale((array_agg(price ORDER BY trade_time, trade_id))[1]) AS open,
           trim_scale(max(price)) AS high, trim_scale(min(price)) AS low,
           trim_scale((array_agg(price ORDER BY trade_time DESC, trade_id DESC))[1]) AS close,
           trim_scale(sum(qty)) AS volume, sum(raw_trades) AS trade_count,
           (array_agg(trade_id ORDER BY trade_time, trade_id))[1] AS first_trade_id,
           (array_agg(trade_id ORDER BY trade_time DESC, trade_id DESC))[1] AS last_trade_id,
           trim_scale(sum(price * qty)) AS quote_volume,
           trim_scale(coalesce(sum(qty) FILTER (WHERE NOT buyer_is_maker), 0)) AS taker_buy_volume,
           trim_scale(coalesce(sum(price * qty) FILTER (WHERE NOT buyer_is_maker), 0)) AS taker_buy_quote_volume,
           (array_agg(first_raw ORDER BY trade_time, trade_id))[1] AS first_raw_trade_id,
           (array_agg(last_raw ORDER BY trade_time DESC, trade_id DESC))[1] AS last_raw_trade_id,
           trim_scale(sum(price)) AS price_sum
    FROM t GROUP BY symbol, open_time
), stored AS (
    SELECT symbol, open_time, trim_scale(open) AS open, trim_scale(high) AS high, trim_scale(low) AS low,
           trim_scale(close) AS close, trim_scale(volume) AS volume, trade_count, first_trade_id, last_trade_id,
           trim_scale(quote_volume) AS quote_volume, trim_scale(taker_buy_volume) AS taker_buy_volume,
           trim_scale(taker_buy_quote_volume) AS taker_buy_quote_volume, first_raw_trade_id, last_raw_trade_id,
           trim_scale(price_sum) AS price_sum
    FROM candles WHERE timeframe = :'timeframe' AND trade_count > 0
)
SELECT (SELECT count(*) FROM (SELECT * FROM recomputed EXCEPT ALL SELECT * FROM stored) a),
       (SELECT count(*) FROM (SELECT * FROM stored EXCEPT ALL SELECT * FROM recomputed) b),
       (SELECT count(*) FROM recomputed);
