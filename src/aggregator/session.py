"""The Spark session, configured for UTC and the PostgreSQL JDBC driver."""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import time
from pathlib import Path

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from candlestack.core.errors import SettingsError
from candlestack.core.setting_table import PREFIX
from candlestack.core.settings import AggregatorSettings

log = logging.getLogger(__name__)


# Wire encryption once the driver authenticates: AES-GCM (authenticated; Spark's default cipher
# is still AES-CTR) with the newer key exchange, and no fallback to the weaker SASL DIGEST-MD5.
# The cluster's spark-defaults.conf (roles/spark) says the same: both ends must agree.
NETWORK_CRYPTO = {
    "spark.network.crypto.enabled": "true",
    "spark.network.crypto.cipher": "AES/GCM/NoPadding",
    "spark.network.crypto.authEngineVersion": "2",
    "spark.network.crypto.saslFallback": "false",
}


def read_auth_secret(path: str) -> str:
    """The cluster's shared secret from ``path`` (surrounding whitespace stripped).

    Raises:
        SettingsError: the file cannot be read or is empty.
    """
    variable = PREFIX + "SPARK_AUTH_SECRET_FILE"
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingsError(variable, f"cannot read {path}: {exc.strerror}") from None
    if not secret:
        raise SettingsError(variable, f"{path} is empty")
    return secret


def session_options(settings: AggregatorSettings, *, app_name: str) -> dict[str, str]:
    """Every Spark option of the driver but the secret: these may be on the JVM's command line."""
    utc = "-Duser.timezone=UTC"
    options = {
        "spark.master": settings.spark_master,
        "spark.app.name": app_name,
        "spark.jars": settings.jdbc_jar,
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions": utc,
        "spark.executor.extraJavaOptions": utc,
        "spark.driver.memory": settings.driver_memory,
        "spark.executor.memory": settings.executor_memory,
        # Candle batches are small: a handful of shuffle partitions beats the default 200.
        "spark.sql.shuffle.partitions": str(max(2, settings.read_partitions)),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # Fixed ports (0: random), so that a firewall can let executors connect back to the driver.
        "spark.driver.port": str(settings.driver_port),
        "spark.driver.blockManager.port": str(settings.driver_block_manager_port),
        # Executors take theirs from the driver, not from their worker's spark-defaults.conf.
        "spark.blockManager.port": str(settings.block_manager_port),
    }
    if settings.executor_cores:
        options["spark.executor.cores"] = str(settings.executor_cores)
    if settings.cores_max:
        options["spark.cores.max"] = str(settings.cores_max)
    if settings.driver_host:
        options["spark.driver.host"] = settings.driver_host
        options["spark.driver.bindAddress"] = settings.driver_host
    if settings.auth_secret_file:
        options["spark.authenticate"] = "true"
        options.update(NETWORK_CRYPTO)
    return options


def build_session(settings: AggregatorSettings, *, app_name: str = "candlestack-aggregator") -> SparkSession:
    options = session_options(settings, app_name=app_name)
    secret = read_auth_secret(settings.auth_secret_file) if settings.auth_secret_file else None
    # PySpark's first SparkContext launches the driver's JVM through spark-submit with every
    # option of its SparkConf as a `--conf name=value` argument (pyspark/java_gateway.py), which
    # would put the secret in the JVM's /proc/<pid>/cmdline for every local user to read. So the
    # JVM is launched first with the other options; the secret then goes to the running JVM
    # through py4j only (tests/integration/test_spark_auth.py checks every process's cmdline).
    SparkContext._ensure_initialized(conf=SparkConf(loadDefaults=False).setAll(list(options.items())))
    builder = SparkSession.builder.config(map=dict[str, bool | float | int | str | None](options))
    if secret is not None:
        builder = builder.config("spark.authenticate.secret", secret)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    log.info("spark session ready", extra={"master": settings.spark_master, "version": session.version,
                                           "authenticated": secret is not None})
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
