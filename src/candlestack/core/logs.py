"""Logging to stderr (journald under systemd) as key=value text or one JSON object a line."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from candlestack.core.settings import LogSettings

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _RESERVED}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"level={record.levelname.lower()} logger={record.name} msg={json.dumps(record.getMessage())}"
        for key, value in _extras(record).items():
            text = str(value)
            line += f" {key}={json.dumps(text) if (' ' in text or not text) else text}"
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


def setup(settings: LogSettings) -> None:
    """Configure the root logger once; journald adds its own timestamps for text lines."""
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = JsonFormatter() if settings.format == "json" else KeyValueFormatter()
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    # Spark's py4j chatter drowns everything else at INFO.
    logging.getLogger("py4j").setLevel(logging.WARNING)
