"""The producer: Binance combined trade stream -> Kafka, keyed by symbol, with gap filling."""
