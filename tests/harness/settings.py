"""Component settings pointed at the test services (one PostgreSQL database, a Spark master)."""

from __future__ import annotations

from candlestack.core.settings import AggregatorSettings, Env, PostgresSettings
from tests.harness.services import Postgres


def aggregator_settings(pg: Postgres, database: str, master: str, **extra: str) -> AggregatorSettings:
    env = {**pg.env(database), "CANDLESTACK_SPARK_MASTER": master, "CANDLESTACK_METRICS_PORT": "0", **extra}
    return AggregatorSettings.from_env(env)


def postgres_settings(pg: Postgres, database: str) -> PostgresSettings:
    return PostgresSettings.from_env(Env(pg.env(database)), application_name="tests")
