"""The Spark session, configured for UTC and the PostgreSQL JDBC driver."""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import time

from pyspark import SparkContext
from pyspark.sql import SparkSession

from candlestack.core.settings import AggregatorSettings

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
    if settings.cores_max:
        builder = builder.config("spark.cores.max", str(settings.cores_max))
    if settings.driver_host:
        builder = (builder.config("spark.driver.host", settings.driver_host)
                   .config("spark.driver.bindAddress", settings.driver_host))
    # Fixed ports for a host firewall: the driver's own, and the block managers' of the driver
    # and of its executors (Spark tries the next ports when one is taken).
    if settings.driver_port:
        builder = builder.config("spark.driver.port", str(settings.driver_port))
    if settings.block_manager_port:
        builder = builder.config("spark.blockManager.port", str(settings.block_manager_port))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    log.info("spark session ready", extra={"master": settings.spark_master, "version": session.version})
    return session


def stop_session(spark: SparkSession, *, jvm_exit_timeout_s: float = 60.0) -> None:
    """Stop Spark and wait until the driver's JVM has exited.

    PySpark leaves its gateway JVM running until the Python process ends (the JVM exits when
    its stdin closes). Under systemd that JVM would outlive the unit's main process: systemd
    then has to kill it mid-shutdown and, where cgroup-empty events are not delivered (systemd
    in a container), a oneshot job hangs in stop-sigterm until TimeoutStopSec. Closing stdin
    here and waiting makes the main process the last one to exit.
    """
    adopt_orphaned_descendants()
    spark.stop()
    gateway = SparkContext._gateway
    proc = getattr(gateway, "proc", None)
    if gateway is None or proc is None:  # a gateway this process did not launch (e.g. spark-submit)
        return
    try:
        gateway.shutdown()
    except Exception:  # best effort: the JVM may already be gone
        log.debug("py4j gateway shutdown failed", exc_info=True)
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout=jvm_exit_timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("the Spark JVM did not exit in time: killing it", extra={"pid": proc.pid})
        proc.kill()
        proc.wait()
    SparkContext._gateway = None
    SparkContext._jvm = None
    reap_adopted_children(timeout_s=jvm_exit_timeout_s)


def renew_session(old: SparkSession, settings: AggregatorSettings) -> SparkSession:
    """Stop a session that keeps failing, as far as it still can be stopped, and build a new one.

    A new session is a new application: it registers with the master again (one that restarted
    has forgotten the old one) and, if the old driver JVM died, gets a new JVM.
    """
    try:
        stop_session(old)
    except Exception:  # its JVM may be gone: forget it so that a new one is launched
        log.warning("stopping the failing Spark session failed", exc_info=True)
        forget_session()
    return build_session(settings)


def forget_session() -> None:
    """Drop PySpark's references to a session whose JVM is unreachable.

    ``getOrCreate`` would otherwise hand the dead session back. These class attributes are
    PySpark internals; they are what ``SparkSession.stop`` itself resets.
    """
    SparkSession._instantiatedSession = None
    SparkSession._activeSession = None
    SparkContext._active_spark_context = None
    SparkContext._gateway = None
    SparkContext._jvm = None


_PR_SET_CHILD_SUBREAPER = 36


def adopt_orphaned_descendants() -> None:
    """Become the reaper of descendants orphaned from now on (Linux ``PR_SET_CHILD_SUBREAPER``).

    The JVM's own children (PySpark's Python workers) may outlive it by a moment; as our
    adoptees they can be waited for, instead of lingering in the unit after its main process.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log.debug("prctl(PR_SET_CHILD_SUBREAPER) failed", extra={"errno": ctypes.get_errno()})
    except (OSError, AttributeError):  # not Linux: orphans go to init as usual
        log.debug("no prctl here", exc_info=True)


def reap_adopted_children(*, timeout_s: float) -> None:
    """Wait until this process has no children left, or ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # none left
        if pid == 0:
            time.sleep(0.05)  # children still running
    log.warning("child processes still running after the Spark JVM exited", extra={"timeout_s": timeout_s})
