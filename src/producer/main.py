"""``candlestack producer``."""

from __future__ import annotations

import contextlib
import logging

from candlestack.core import logs
from candlestack.core import metrics as metrics_endpoint
from candlestack.core.lifecycle import stop_on_signals
from candlestack.core.settings import ProducerSettings
from candlestack.producer.publisher import Publisher
from candlestack.producer.state import Progress, StateFile, StateFileError
from candlestack.producer.stream import TradeStream, now_ms

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 30.0


def open_state(settings: ProducerSettings) -> tuple[Progress, StateFile | None]:
    """The progress saved by the last run, and where to save it; (fresh, None) when disabled."""
    if settings.state_dir is None:
        log.warning("no state directory (CANDLESTACK_PRODUCER_STATE_DIR or systemd's StateDirectory=): "
                    "a restart cannot catch up on the trades made while the producer was down")
        return Progress(settings.stream), None
    state_file = StateFile(settings.state_dir, stream=settings.stream)
    try:
        return state_file.load(), state_file
    except StateFileError as exc:
        # Starting from the live stream is what a first start does. The file is kept aside for
        # a look, since the next save replaces it.
        aside = exc.path.with_name(exc.path.name + ".bad")
        with contextlib.suppress(OSError):
            exc.path.replace(aside)
        log.error("state file unusable; starting from the live stream", extra={
            "path": str(exc.path), "reason": exc.reason, "kept_as": str(aside)})
        return Progress(settings.stream), state_file


def main() -> int:
    settings = ProducerSettings.from_env()
    logs.setup(settings.log)
    metrics_endpoint.serve(settings.metrics)
    stop = stop_on_signals(log)
    progress, state_file = open_state(settings)
    publisher = Publisher(settings.kafka, buffer_max_messages=settings.buffer_max_messages, listener=progress)
    TradeStream(settings, publisher, stop=stop, progress=progress, state_file=state_file).run()
    left = publisher.flush(FLUSH_TIMEOUT_S)
    if state_file is not None:
        # After the flush: the delivery reports it served are in, and only those count.
        state_file.save(progress, saved_at=now_ms())
    if left:
        # Trades already read from the feed but not acknowledged: they are not in the state
        # file, so the next start fetches them again over REST if they are still there.
        log.error("exiting with undelivered messages", extra={"undelivered": left})
        return 1
    log.info("producer stopped cleanly", extra={"acked": progress.acked, "pending_gaps": len(progress.pending)})
    return 0
