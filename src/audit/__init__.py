"""``candlestack audit``: our closed candles compared, field by field, with Binance's klines."""
