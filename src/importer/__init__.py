"""``candlestack import``: Binance's public trade archives, straight into PostgreSQL."""
