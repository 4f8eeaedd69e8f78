"""candlestack: Binance trades -> Kafka -> PostgreSQL -> Spark candles.

This package is what the components share: the wire contract, settings, logging, metrics and
the database schema.
"""

__version__ = "0.1.0"
