-- candlestack schema, version 2: gaps that are still being fetched, and gaps that were filled.

-- pending: the producer still retries the fill (REST rate-limited or unreachable).
-- resolved_at: every id of the range is stored now (set by resolve_filled_gaps()).
ALTER TABLE ingest_gaps
    ADD COLUMN pending     boolean     NOT NULL DEFAULT false,
    ADD COLUMN resolved_at timestamptz;

CREATE INDEX ingest_gaps_open_idx ON ingest_gaps (symbol) WHERE resolved_at IS NULL;

-- Marks every open gap whose whole id range is stored as resolved; returns how many it marked.
-- Evidence, not messages: a gap counts as filled by whoever filled it (the producer's retries,
-- a later backfill). Trade ids are unique per symbol, so a full count means a full range.
CREATE FUNCTION resolve_filled_gaps() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    marked integer;
BEGIN
    UPDATE ingest_gaps g SET resolved_at = now(), pending = false
    WHERE g.resolved_at IS NULL
      AND (SELECT count(*) FROM trades t
           WHERE t.symbol = g.symbol AND t.trade_id BETWEEN g.from_id AND g.to_id) = g.to_id - g.from_id + 1;
    GET DIAGNOSTICS marked = ROW_COUNT;
    RETURN marked;
END
$$;

REVOKE EXECUTE ON FUNCTION resolve_filled_gaps() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION resolve_filled_gaps() TO candlestack_ingest, candlestack_aggregate;
-- A final report (pending = false) for a range first reported as pending updates its row.
GRANT SELECT, UPDATE (pending) ON ingest_gaps TO candlestack_ingest;
