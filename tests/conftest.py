"""Session-wide services (PostgreSQL, broker, Spark) and per-test databases and topics."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import psycopg2.extensions
import pytest
from pyspark.sql import SparkSession

from candlestack.aggregator.session import build_session
from candlestack.core import db
from tests.harness.services import Broker, Postgres, SparkCluster, postgres_cluster, spark_standalone, tansu_broker
from tests.harness.settings import aggregator_settings


@pytest.fixture(scope="session")
def pg() -> Iterator[Postgres]:
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    with tansu_broker() as running:
        yield running


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkCluster]:
    with spark_standalone(tmp_path_factory.mktemp("spark")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def spark(pg: Postgres, spark_cluster: SparkCluster) -> Iterator[SparkSession]:
    """One Spark application on the standalone cluster for every in-process aggregator test."""
    session = build_session(aggregator_settings(pg, "postgres", spark_cluster.master_url))
    yield session
    session.stop()


def _safe_name(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:50]


@pytest.fixture
def database(pg: Postgres, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = "t_" + _safe_name(request)
    pg.create_database(name)
    conn = pg.connect(name)
    db.migrate(conn)
    conn.close()
    yield name


@pytest.fixture
def conn(pg: Postgres, database: str) -> Iterator[psycopg2.extensions.connection]:
    connection = pg.connect(database)
    connection.autocommit = True
    yield connection
    connection.close()


@pytest.fixture
def topic(broker: Broker, request: pytest.FixtureRequest) -> str:
    name = "trades." + _safe_name(request)
    broker.create_topic(name)
    return name


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def pipeline_env(pg: Postgres, database: str, broker: Broker, topic: str) -> dict[str, str]:
    """Environment for producer/consumer subprocesses wired to this test's database and topic."""
    return {
        **pg.env(database),
        "CANDLESTACK_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "CANDLESTACK_KAFKA_TOPIC": topic,
        "CANDLESTACK_KAFKA_GROUP_ID": "group-" + topic,
        "CANDLESTACK_SYMBOLS": "xrpeth",
        "CANDLESTACK_PRODUCER_RECONNECT_INITIAL_S": "0.05",
        "CANDLESTACK_PRODUCER_RECONNECT_MAX_S": "0.5",
    }
