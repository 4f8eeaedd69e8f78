"""Process lifecycle shared by the long-running components."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType


def stop_on_signals(log: logging.Logger, message: str = "stopping") -> threading.Event:
    """An event set by SIGTERM (systemd stop) or SIGINT; loops check it and wind down cleanly."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info(message, extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop
