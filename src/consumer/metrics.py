"""Prometheus metrics of the consumer."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("candlestack_consumer_messages_total", "Messages handled", ["outcome"])
BATCH_SECONDS = Histogram("candlestack_consumer_batch_seconds", "Write + commit time of a batch",
                          buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
BATCH_SIZE = Histogram("candlestack_consumer_batch_messages", "Messages per batch",
                       buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 50000))
DB_ERRORS = Counter("candlestack_consumer_db_errors_total", "Failed batch writes (retried)")
COMMIT_ERRORS = Counter("candlestack_consumer_commit_errors_total", "Failed offset commits")
LAG = Gauge("candlestack_consumer_lag_messages", "High watermark minus committed offset", ["partition"])
LAST_COMMIT = Gauge("candlestack_consumer_last_commit_timestamp_seconds", "When offsets were last committed")
SPLITS = Counter("candlestack_consumer_batch_splits_total",
                 "Batches (or halves) PostgreSQL refused for their data, then split in two")
REFUSED = Counter("candlestack_consumer_refused_messages_total",
                  "Messages PostgreSQL refused, isolated by splitting and set aside as dead letters")
ASSIGNED = Gauge("candlestack_consumer_assigned_partitions",
                 "Partitions this consumer holds; 0 for long means ingestion has stopped")
