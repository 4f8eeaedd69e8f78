-- candlestack schema, version 1.
-- Applied by `candlestack db migrate` inside one transaction, once (see schema_migrations).

-- Least-privilege group roles. Login users are granted one of these by the deployment.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'candlestack_ingest') THEN
        CREATE ROLE candlestack_ingest NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'candlestack_aggregate') THEN
        CREATE ROLE candlestack_aggregate NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'candlestack_read') THEN
        CREATE ROLE candlestack_read NOLOGIN;
    END IF;
END
$$;

-- Raw trades, partitioned by UTC day of trade time. The key is (symbol, trade_id) in meaning;
-- PostgreSQL wants the partition column in every unique key, and a trade's time never changes,
-- so (symbol, trade_time, trade_id) rejects exactly the same duplicates. In this column order
-- the one index also serves the aggregator's per-symbol time-range reads.
-- One database holds one stream type (trade or aggTrade): their id spaces differ.
CREATE TABLE trades (
    symbol          text        NOT NULL,
    trade_id        bigint      NOT NULL,
    stream          text        NOT NULL CHECK (stream IN ('trade', 'aggTrade')),
    price           numeric     NOT NULL CHECK (price > 0),
    qty             numeric     NOT NULL CHECK (qty >= 0),
    first_trade_id  bigint,
    last_trade_id   bigint,
    trade_time      timestamptz NOT NULL,
    event_time      timestamptz NOT NULL,
    buyer_is_maker  boolean     NOT NULL,
    ingest_time     timestamptz NOT NULL,              -- producer clock, when the frame arrived
    stored_at       timestamptz NOT NULL DEFAULT now(), -- database clock, when the batch committed
    -- The inserting transaction. The aggregator's watermark is a snapshot xmin: every row whose
    -- transaction id is below it is committed (or gone), so nothing slips between two scans.
    ingest_xid      xid8        NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (symbol, trade_time, trade_id)
) PARTITION BY RANGE (trade_time);

CREATE INDEX trades_ingest_xid_idx ON trades (ingest_xid);

-- Creates the daily partitions covering [p_from, p_to]. Runs as the schema owner so that the
-- ingest role needs no DDL rights.
CREATE FUNCTION ensure_trade_partitions(p_from date, p_to date) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    day date;
    partition_name text;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('candlestack.trade_partitions'));
    FOR day IN SELECT generate_series(p_from, p_to, interval '1 day')::date LOOP
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

-- Retention: drops whole daily partitions that end on or before p_before (UTC).
CREATE FUNCTION drop_trade_partitions_before(p_before date) RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    child text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('candlestack.trade_partitions'));
    FOR child IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'trades'::regclass
          AND c.relname ~ '^trades_[0-9]{8}$'
          AND to_date(substr(c.relname, 8), 'YYYYMMDD') < p_before
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', child);
        RETURN NEXT child;
    END LOOP;
END
$$;

-- Newest stored trade per symbol, kept by the consumer in the batch's own transaction.
CREATE TABLE symbol_state (
    symbol          text        PRIMARY KEY,
    last_trade_id   bigint      NOT NULL,
    last_price      numeric     NOT NULL,
    last_trade_time timestamptz NOT NULL,
    last_stored_at  timestamptz NOT NULL,
    trades_stored   bigint      NOT NULL DEFAULT 0
);

-- Messages that failed validation, with the raw payload and where they came from.
CREATE TABLE dead_letters (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    message_key     bytea,
    payload         bytea,
    field           text,
    reason          text        NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, kafka_partition, kafka_offset)
);

-- Trade id ranges the producer detected as missing and could not fetch.
CREATE TABLE ingest_gaps (
    symbol      text        NOT NULL,
    stream      text        NOT NULL,
    from_id     bigint      NOT NULL,
    to_id       bigint      NOT NULL,
    reason      text        NOT NULL,
    detected_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, stream, from_id, to_id)
);

-- OHLCV candles. A candle with trade_count = 0 is Binance's zero-volume filler: a window with
-- no trade, open = high = low = close = the previous candle's close.
CREATE TABLE candles (
    symbol         text        NOT NULL,
    timeframe      text        NOT NULL,
    open_time      timestamptz NOT NULL,
    close_time     timestamptz NOT NULL,
    open           numeric     NOT NULL,
    high           numeric     NOT NULL,
    low            numeric     NOT NULL,
    close          numeric     NOT NULL,
    volume         numeric     NOT NULL,
    quote_volume   numeric     NOT NULL,
    trade_count    bigint      NOT NULL,
    first_trade_id bigint,
    last_trade_id  bigint,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe, open_time)
);

CREATE INDEX candles_timeframe_time_idx ON candles (timeframe, open_time);

-- Where `aggregator run` has got to.
CREATE TABLE aggregator_state (
    name          text        PRIMARY KEY,
    watermark_xid xid8        NOT NULL,
    ticks         bigint      NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- The old system's names, so existing dashboards keep working.
CREATE VIEW real_time_prices AS
    SELECT symbol, price, qty AS quantity, trade_time AS "timestamp", trade_id
    FROM trades;

CREATE VIEW aggregated_prices_1min AS
    SELECT symbol, open_time AS window_start, close_time AS window_end, open, high, low, close, volume
    FROM candles WHERE timeframe = '1m';

CREATE VIEW aggregated_prices_5min AS
    SELECT symbol, open_time AS window_start, close_time AS window_end, open, high, low, close, volume
    FROM candles WHERE timeframe = '5m';

-- Per-symbol pipeline health for dashboards and `candlestack status`.
CREATE VIEW pipeline_health AS
    SELECT s.symbol,
           s.last_price,
           s.last_trade_time,
           s.last_stored_at,
           s.trades_stored,
           extract(epoch FROM now() - s.last_trade_time)  AS trade_age_s,
           extract(epoch FROM s.last_stored_at - s.last_trade_time) AS ingest_lag_s,
           c.last_candle_open,
           c.last_candle_updated_at,
           extract(epoch FROM s.last_trade_time - c.last_candle_close) AS candle_lag_s
    FROM symbol_state s
    LEFT JOIN LATERAL (
        SELECT max(open_time) AS last_candle_open,
               max(close_time) FILTER (WHERE trade_count > 0) AS last_candle_close,
               max(updated_at) AS last_candle_updated_at
        FROM candles WHERE candles.symbol = s.symbol AND timeframe = '1m'
    ) c ON true;

GRANT SELECT, INSERT ON trades TO candlestack_ingest;
GRANT SELECT, INSERT, UPDATE ON symbol_state TO candlestack_ingest;
GRANT INSERT ON dead_letters, ingest_gaps TO candlestack_ingest;
GRANT EXECUTE ON FUNCTION ensure_trade_partitions(date, date) TO candlestack_ingest;

GRANT SELECT ON trades, symbol_state TO candlestack_aggregate;
GRANT SELECT, INSERT, UPDATE, DELETE ON candles, aggregator_state TO candlestack_aggregate;
GRANT EXECUTE ON FUNCTION drop_trade_partitions_before(date) TO candlestack_aggregate;

GRANT SELECT ON trades, symbol_state, dead_letters, ingest_gaps, candles, aggregator_state,
    real_time_prices, aggregated_prices_1min, aggregated_prices_5min, pipeline_health
    TO candlestack_read;

REVOKE EXECUTE ON FUNCTION ensure_trade_partitions(date, date) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION drop_trade_partitions_before(date) FROM PUBLIC;
