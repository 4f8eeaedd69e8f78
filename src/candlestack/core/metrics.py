"""The Prometheus endpoint shared by the long-running components."""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

from candlestack.core.settings import MetricsSettings

log = logging.getLogger(__name__)


def serve(settings: MetricsSettings) -> None:
    """Start the /metrics endpoint in a daemon thread, unless disabled (port None)."""
    if settings.port is None:
        return
    start_http_server(settings.port, addr=settings.address)
    log.info("metrics endpoint listening", extra={"address": settings.address, "port": settings.port})
