"""What every part of candlestack shares: the wire contract, settings, errors, logging, metrics,
retry backoff, process lifecycle and the database schema (``migrations``).

Nothing here imports a component or a command: the arrows only point into this package.
"""
