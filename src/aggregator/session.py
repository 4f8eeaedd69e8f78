"""The Spark session, configured for UTC and the PostgreSQL JDBC driver."""

from __future__ import annotations

import logging

from pyspark.sql import SparkSession

from candlestack.settings import AggregatorSettings

log = logging.getLogger(__name__)


def build_session(settings: AggregatorSettings, *, app_name: str = "candlestack-aggregator") -> SparkSession:
    utc = "-Duser.timezone=UTC"
    builder = (
        SparkSession.builder.master(settings.spark_master)
        .appName(app_name)
        .config("spark.jars", settings.jdbc_jar)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", utc)
        .config("spark.executor.extraJavaOptions", utc)
        .config("spark.driver.memory", settings.driver_memory)
        .config("spark.executor.memory", settings.executor_memory)
        # Candle batches are small: a handful of shuffle partitions beats the default 200.
        .config("spark.sql.shuffle.partitions", str(max(2, settings.read_partitions)))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if settings.executor_cores:
        builder = builder.config("spark.executor.cores", str(settings.executor_cores))
    if settings.driver_host:
        builder = (builder.config("spark.driver.host", settings.driver_host)
                   .config("spark.driver.bindAddress", settings.driver_host))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    log.info("spark session ready", extra={"master": settings.spark_master, "version": session.version})
    return session
