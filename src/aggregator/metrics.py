"""Prometheus metrics of the aggregator."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TICKS = Counter("candlestack_aggregator_ticks_total", "Run-mode ticks", ["outcome"])
TICK_SECONDS = Histogram("candlestack_aggregator_tick_seconds", "Time of a tick that had work",
                         buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))
TRADES_READ = Counter("candlestack_aggregator_trades_read_total", "Trades read from PostgreSQL")
CANDLES_WRITTEN = Counter("candlestack_aggregator_candles_changed_total", "Candle rows inserted or changed")
WATERMARK = Gauge("candlestack_aggregator_watermark_xid", "Transaction id below which all trades are aggregated")
LAST_TICK = Gauge("candlestack_aggregator_last_tick_timestamp_seconds", "When the last tick finished")
TICK_FAILURES = Counter("candlestack_aggregator_tick_failures_total", "Failed run-mode ticks, by error type", ["error"])
CONSECUTIVE_FAILURES = Gauge("candlestack_aggregator_consecutive_tick_failures",
                             "Run-mode ticks failed in a row (0: the last tick succeeded)")
SESSION_REBUILDS = Counter("candlestack_aggregator_spark_session_rebuilds_total",
                           "Spark sessions rebuilt after failing ticks")
TICKS_DEFERRED = Counter("candlestack_aggregator_ticks_deferred_total",
                         "Ticks that left trades of the open window to a later tick (the rest mode)")
GAPS_RESOLVED = Counter("candlestack_aggregator_gaps_resolved_total", "Ingest gaps found filled by late trades")
