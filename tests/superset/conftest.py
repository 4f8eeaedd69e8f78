"""Registers the `superset` marker (the suite runs with --strict-markers)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "superset: imports the Superset assets bundle into a real Superset (needs the Superset "
        "venv, built once into /var/cache/candlestack, and PostgreSQL 15 binaries)",
    )
