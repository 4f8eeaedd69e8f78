"""candlestack: Binance trades -> Kafka -> PostgreSQL -> Spark candles.

Layers, each importing only the ones below it:
- :mod:`candlestack.cli` (the ``candlestack`` command), :mod:`candlestack.admin` (``db``,
  ``status``) and :mod:`candlestack.status`;
- the components :mod:`candlestack.producer`, :mod:`candlestack.consumer`,
  :mod:`candlestack.aggregator` and the lab's :mod:`candlestack.replay` feed, which never
  import each other (their folders are ``src/<component>``, linked in here);
- :mod:`candlestack.core`: contract, settings, errors, logging, metrics, database schema.
"""

__version__ = "0.1.0"
