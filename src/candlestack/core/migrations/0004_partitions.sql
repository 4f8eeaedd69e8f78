-- candlestack schema, version 4: partitions for the days a batch holds, and DDL that gives up
-- quickly instead of queueing behind a long reader.

-- Creating a partition locks the parent table. Waiting behind a long query (the aggregator's
-- reads, a dashboard) would also stall every insert queued behind this lock, so the DDL gives
-- up after 2 s; callers retry with backoff (SQLSTATE 55P03, lock_not_available).
ALTER FUNCTION ensure_trade_partitions(date, date) SET lock_timeout = '2s';

-- Creates the daily partitions of exactly the given days (a batch's distinct trade days), so
-- that one trade far in the future does not create every day up to it.
CREATE FUNCTION ensure_trade_partitions_on(p_days date[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET lock_timeout = '2s' AS $$
DECLARE
    day date;
    partition_name text;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('candlestack.trade_partitions'));
    FOREACH day IN ARRAY p_days LOOP
        partition_name := 'trades_' || to_char(day, 'YYYYMMDD');
        IF to_regclass(partition_name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF trades FOR VALUES FROM (%L) TO (%L)',
                           partition_name,
                           day::timestamp AT TIME ZONE 'UTC',
                           (day + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

REVOKE EXECUTE ON FUNCTION ensure_trade_partitions_on(date[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ensure_trade_partitions_on(date[]) TO candlestack_ingest;
