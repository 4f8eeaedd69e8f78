"""A Binance-protocol replay feed: WebSocket trade streams and the REST trade lists on one port.

It lets the producer run offline (tests, demos) against recorded or synthetic trades, and
injects the faults a real connection to Binance suffers: disconnects, malformed and duplicate
frames, ``serverShutdown`` events, the 24 h connection cut-off.

Modules, one job each:

- :mod:`candlestack.replay.model`: the :class:`~candlestack.replay.model.ReplayTrade` every other module passes around.
- :mod:`candlestack.replay.sources`: CSV files (data.binance.vision layouts) and synthetic trades.
- :mod:`candlestack.replay.events`: trades to Binance event frames and REST rows (pure).
- :mod:`candlestack.replay.streams`: stream names and WebSocket paths (pure).
- :mod:`candlestack.replay.feed`: the market clock and the index of what it has published (pure).
- :mod:`candlestack.replay.faults`: per-connection duplicate and malformed frame injection (pure).
- :mod:`candlestack.replay.rest`: the ``/api/v3`` endpoints (pure).
- :mod:`candlestack.replay.server`: the asyncio server that ties them to sockets.
- :mod:`candlestack.replay.cli`: ``candlestack replay`` / ``python -m candlestack.replay``.
"""
