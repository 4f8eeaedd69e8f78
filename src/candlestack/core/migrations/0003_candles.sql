-- candlestack schema, version 3: candles know how many trades they were built from and whether
-- any trade may be missing from them; retention keeps what the aggregator has not finished.

-- id_count: distinct trades (rows of `trades`, one per trade id) the candle was computed from.
-- Trades are insert-only, so a candle computed from more of them is the fresher one: an upsert
-- only replaces a row when its id_count is >= the stored one (see aggregator/sink.py). This is
-- not trade_count, which for aggTrades sums the raw trades each aggregate stands for.
-- complete: no trade id is missing inside the candle or between it and its traded neighbours
-- (ids are consecutive per symbol). A filler is complete only when the trades on both sides of
-- it have consecutive ids, which proves the market was quiet rather than the pipeline down.
-- Rows written before this migration get id_count 0 and complete = true until rebuilt.
ALTER TABLE candles
    ADD COLUMN id_count bigint  NOT NULL DEFAULT 0,
    ADD COLUMN complete boolean NOT NULL DEFAULT true;

-- Retention: drops whole daily partitions that end on or before p_before (UTC), except those that
-- still hold a trade at or above `aggregator run`'s watermark (not aggregated yet: dropping it
-- would lose its candles). Without a watermark, nothing has been aggregated: nothing is dropped.
-- One row per partition older than p_before, saying whether it was dropped and, if not, why.
DROP FUNCTION drop_trade_partitions_before(date);

CREATE FUNCTION drop_trade_partitions_before(p_before date)
RETURNS TABLE (partition_name text, dropped boolean, reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    candidates text[];
    watermark xid8;
    pending boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('candlestack.trade_partitions'));
    SELECT array_agg(c.relname ORDER BY c.relname) INTO candidates
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'trades'::regclass
      AND c.relname ~ '^trades_[0-9]{8}$'
      AND to_date(substr(c.relname, 8), 'YYYYMMDD') < p_before;
    IF candidates IS NULL THEN
        RETURN;
    END IF;
    -- Dropping a partition locks its parent exclusively anyway. Taking that lock first keeps the
    -- lock order of inserters (parent, then partition), and no batch can commit a row into a
    -- partition between the check below and its DROP.
    LOCK TABLE trades IN ACCESS EXCLUSIVE MODE;
    SELECT s.watermark_xid INTO watermark FROM aggregator_state s WHERE s.name = 'run';
    FOREACH partition_name IN ARRAY candidates LOOP
        IF watermark IS NULL THEN
            dropped := false;
            reason := 'no aggregator watermark yet';
        ELSE
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE ingest_xid >= $1)', partition_name)
                INTO pending USING watermark;
            IF pending THEN
                dropped := false;
                reason := 'holds trades not aggregated yet';
            ELSE
                EXECUTE format('DROP TABLE %I', partition_name);
                dropped := true;
                reason := NULL;
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

REVOKE EXECUTE ON FUNCTION drop_trade_partitions_before(date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION drop_trade_partitions_before(date) TO candlestack_aggregate;

-- The old system's names also say whether a candle may be missing trades.
CREATE OR REPLACE VIEW aggregated_prices_1min AS
    SELECT symbol, open_time AS window_start, close_time AS window_end, open, high, low, close, volume, complete
    FROM candles WHERE timeframe = '1m';

CREATE OR REPLACE VIEW aggregated_prices_5min AS
    SELECT symbol, open_time AS window_start, close_time AS window_end, open, high, low, close, volume, complete
    FROM candles WHERE timeframe = '5m';
