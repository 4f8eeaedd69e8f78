-- candlestack schema, version 7: retention gets a group role of its own, and the database, not
-- its caller, decides how young a partition may be when it is dropped.

-- candlestack_prune may execute drop_trade_partitions_before and nothing else: it reads no table
-- and owns nothing, so a leaked password of its login (the deployment's candlestack_retention)
-- can at worst drop what retention would drop anyway. The aggregator's login no longer can.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'candlestack_prune') THEN
        CREATE ROLE candlestack_prune NOLOGIN;
    END IF;
END
$$;

-- As in 0003, plus a floor: a cutoff later than today (UTC, the database's clock) minus
-- min_keep_days is refused with SQLSTATE 22023 (invalid_parameter_value), whoever calls. With 2,
-- today's, yesterday's and the day before's partitions always stay: an operator's "yesterday" in
-- any time zone (UTC-12 to UTC+14) lies within them, so it can still be rebuilt from raw trades.
-- The application's smallest CANDLESTACK_RETENTION_DAYS / --keep-days is the same number
-- (candlestack.core.setting_table.RETENTION_MIN_DAYS; tests check that the two agree).
CREATE OR REPLACE FUNCTION drop_trade_partitions_before(p_before date)
RETURNS TABLE (partition_name text, dropped boolean, reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    min_keep_days CONSTANT integer := 2;
    latest_cutoff CONSTANT date := (now() AT TIME ZONE 'UTC')::date - min_keep_days;
    candidates text[];
    watermark xid8;
    pending boolean;
BEGIN
    IF p_before IS NULL OR p_before > latest_cutoff THEN
        RAISE EXCEPTION 'retention cutoff % would drop trades younger than % days: the latest cutoff allowed now is %',
                        coalesce(p_before::text, 'NULL'), min_keep_days, latest_cutoff
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('keep at least %s days (CANDLESTACK_RETENTION_DAYS, --keep-days)', min_keep_days);
    END IF;
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

-- The aggregator builds candles; dropping raw trades is retention's job alone.
REVOKE EXECUTE ON FUNCTION drop_trade_partitions_before(date) FROM PUBLIC, candlestack_aggregate;
GRANT EXECUTE ON FUNCTION drop_trade_partitions_before(date) TO candlestack_prune;
