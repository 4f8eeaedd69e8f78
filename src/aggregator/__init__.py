"""The aggregator: OHLCV candles from raw trades with PySpark, upserted idempotently."""
