-- candlestack schema, version 9: `candlestack audit` compares our closed candles with Binance's
-- /api/v3/klines and keeps what differs.

-- One row per (candle, field) that differed: field is a kline field name (open, high, low, close,
-- volume, quote_volume, trade_count, taker_buy_volume, taker_buy_quote_volume, close_time) or
-- `missing` (Binance has the kline, we have no candle). ours/theirs are the values as text
-- (close_time in ms, Binance's inclusive end). A rerun that finds the same difference updates
-- last_seen_at (the primary key keeps one row); one that finds the candle equal again sets
-- resolved_at. Open mismatches (resolved_at IS NULL) are what the metric and the alert count.
CREATE TABLE kline_audit_mismatches (
    symbol       text        NOT NULL,
    timeframe    text        NOT NULL,
    open_time    timestamptz NOT NULL,
    field        text        NOT NULL,
    ours         text,
    theirs       text,
    found_at     timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz,
    PRIMARY KEY (symbol, timeframe, open_time, field)
);

CREATE INDEX kline_audit_mismatches_open_idx ON kline_audit_mismatches (symbol, timeframe)
    WHERE resolved_at IS NULL;

-- One row per audit run: the windows it covered and what it found (the metric's last run).
CREATE TABLE kline_audit_runs (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    window_from timestamptz NOT NULL,
    window_to   timestamptz NOT NULL,
    compared    integer     NOT NULL,
    mismatched  integer     NOT NULL,
    fields      integer     NOT NULL
);

-- The audit runs with the aggregator's login: it reads the candles that login writes, and
-- writes only its own two tables (no new login, no new secret to deploy). It prunes its run
-- records (DELETE); mismatches are kept until resolved by a later run.
GRANT SELECT, INSERT, UPDATE ON kline_audit_mismatches TO candlestack_aggregate;
GRANT SELECT, INSERT, DELETE ON kline_audit_runs TO candlestack_aggregate;
GRANT SELECT ON kline_audit_mismatches, kline_audit_runs TO candlestack_read;
