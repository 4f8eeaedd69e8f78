-- candlestack schema, version 6: the consumer's position in Kafka, kept with the rows it read.
--
-- The consumer writes the next offset of every partition of a batch in the batch's own
-- transaction (or, for a batch bisected around a refused message, in one right after its
-- halves), so this table is never ahead of the stored trades. On each assignment the consumer
-- starts from here rather than from the group's offsets in Kafka. After PostgreSQL is restored
-- (to a point in time, or to the end of its archived WAL, which can miss the last
-- archive_timeout of commits) the table is restored with the trades, and the consumer re-reads
-- exactly what the restored database lacks; the (symbol, trade_id) key drops any overlap.
CREATE TABLE kafka_offsets (
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL CHECK (kafka_partition >= 0),
    next_offset     bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition)
);

GRANT SELECT, INSERT, UPDATE ON kafka_offsets TO candlestack_ingest;
GRANT SELECT ON kafka_offsets TO candlestack_read;
