"""``candlestack producer``."""

from __future__ import annotations

import logging

from candlestack import logs
from candlestack import metrics as metrics_endpoint
from candlestack.lifecycle import stop_on_signals
from candlestack.settings import ProducerSettings
from producer.publisher import Publisher
from producer.stream import TradeStream

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 30.0


def main() -> int:
    settings = ProducerSettings.from_env()
    logs.setup(settings.log)
    metrics_endpoint.serve(settings.metrics)
    stop = stop_on_signals(log)
    publisher = Publisher(settings.kafka, buffer_max_messages=settings.buffer_max_messages)
    TradeStream(settings, publisher, stop=stop).run()
    left = publisher.flush(FLUSH_TIMEOUT_S)
    if left:
        # Trades already read from the feed but not acknowledged: a reconnect's gap fill
        # recovers them next time only if they are still on REST; say so plainly.
        log.error("exiting with undelivered messages", extra={"undelivered": left})
        return 1
    log.info("producer stopped cleanly")
    return 0
