"""Prometheus metrics of the producer."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

FRAMES = Counter("candlestack_producer_frames_total", "WebSocket frames received")
MALFORMED = Counter("candlestack_producer_malformed_frames_total", "Frames that could not be parsed")
PUBLISHED = Counter("candlestack_producer_trades_published_total", "Trades queued to Kafka", ["symbol", "source"])
REPEATS = Counter("candlestack_producer_repeated_trades_total", "Trades already published (skipped)", ["symbol"])
GAP_TRADES_FILLED = Counter("candlestack_producer_gap_trades_filled_total", "Missing trades fetched over REST",
                            ["symbol"])
GAPS_UNFILLED = Counter("candlestack_producer_gaps_unfilled_total", "Gaps that could not be filled", ["symbol"])
RECONNECTS = Counter("candlestack_producer_reconnects_total", "WebSocket reconnects", ["reason"])
DELIVERY_ERRORS = Counter("candlestack_producer_delivery_errors_total", "Kafka delivery failures")
BACKPRESSURE = Counter("candlestack_producer_backpressure_total", "Times the local Kafka queue was full")
LAST_TRADE_TIME = Gauge("candlestack_producer_last_trade_time_seconds", "Trade time of the newest trade", ["symbol"])
QUEUED = Gauge("candlestack_producer_queued_messages", "Messages waiting for the broker")
CONNECTED = Gauge("candlestack_producer_connected", "1 while the WebSocket is open")
SESSION_ERRORS = Counter("candlestack_producer_session_errors_total",
                         "Unexpected exceptions that ended a session (each became a reconnect)", ["error"])
PENDING_GAPS = Gauge("candlestack_producer_pending_gaps", "Gaps waiting for REST to let us fill them")
REST_THROTTLED = Counter("candlestack_producer_rest_throttled_total",
                         "REST requests held back: 429/418 answers or the weight budget", ["reason"])
STATE_SAVE_ERRORS = Counter("candlestack_producer_state_save_errors_total", "Failed writes of the state file")
