-- candlestack schema, version 10: what `candlestack import` has loaded from Binance's archives.

-- One row per archive file whose every line is in trades (written in the transaction of its last
-- block). A re-run skips a file whose name and sha256 are here; a file interrupted half-way has no
-- row, and loading it again inserts only what is missing (trades' primary key).
CREATE TABLE imported_files (
    file_name        text        PRIMARY KEY,   -- e.g. XRPETH-aggTrades-2019-10-11.zip
    sha256           text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    symbol           text        NOT NULL,
    stream           text        NOT NULL CHECK (stream IN ('trade', 'aggTrade')),
    rows_read        bigint      NOT NULL,      -- data lines in the file
    rows_inserted    bigint      NOT NULL,      -- of those, new to trades (the rest were stored already)
    first_trade_time timestamptz,               -- NULL for a file without trades
    last_trade_time  timestamptz,
    finished_at      timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE ON imported_files TO candlestack_ingest;
GRANT SELECT ON imported_files TO candlestack_aggregate, candlestack_read;
