"""``spark.authenticate`` on the standalone cluster: a driver with the shared secret (read from
``CANDLESTACK_SPARK_AUTH_SECRET_FILE``) runs a job over encrypted RPC; a driver without it, or
with a wrong one, is refused by the master. The secret is in no process's command line.

Each driver runs in its own process (one SparkContext per JVM, and the session fixture of the
other tests may hold this process's).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from candlestack.aggregator.session import NETWORK_CRYPTO
from tests.harness.services import SparkCluster, spark_standalone

pytestmark = pytest.mark.slow

SECRET = "spark-auth-test-secret-0123456789"
ROOT = Path(__file__).resolve().parents[2]

# Runs in the driver's process: one job, then every command line of the machine this user can
# read, checked for the secret while the driver's JVM and the executors are still up.
DRIVER = """
import os, pathlib
from candlestack.core.settings import AggregatorSettings
from candlestack.aggregator.session import build_session
settings = AggregatorSettings.from_env()
spark = build_session(settings, app_name="auth-test")
total = spark.sparkContext.parallelize(range(1000), 2).map(lambda n: n * 2).sum()
print("job result", total, flush=True)
secret = pathlib.Path(os.environ["CANDLESTACK_SPARK_AUTH_SECRET_FILE"]).read_bytes().strip()
leaks = []
for cmdline in pathlib.Path("/proc").glob("[0-9]*/cmdline"):
    try:
        if secret in cmdline.read_bytes():
            leaks.append(cmdline.parent.name)
    except OSError:
        pass
print("cmdline leaks", leaks, flush=True)
spark.stop()
"""


@pytest.fixture(scope="module")
def auth_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SparkCluster, Path]]:
    workdir = tmp_path_factory.mktemp("spark-auth")
    defaults = {"spark.authenticate": "true", "spark.authenticate.secret": SECRET, **NETWORK_CRYPTO}
    with spark_standalone(workdir, cores=1, memory="1g", defaults=defaults) as cluster:
        yield cluster, workdir


def driver_env(cluster: SparkCluster, secret_file: Path | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "CANDLESTACK_SPARK_MASTER": cluster.master_url, "CANDLESTACK_PG_PASSWORD": "unused",
           "CANDLESTACK_METRICS_PORT": "0", "CANDLESTACK_SPARK_DRIVER_HOST": "127.0.0.1",
           "CANDLESTACK_SPARK_EXECUTOR_MEMORY": "512m", "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("CANDLESTACK_SPARK_AUTH_SECRET_FILE", None)
    if secret_file is not None:
        env["CANDLESTACK_SPARK_AUTH_SECRET_FILE"] = str(secret_file)
    return env


def secret_file(tmp_path: Path, secret: str) -> Path:
    path = tmp_path / "spark-auth-secret"
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return path


def test_a_driver_with_the_secret_runs_a_job_and_no_command_line_shows_the_secret(
    auth_cluster: tuple[SparkCluster, Path], tmp_path: Path,
) -> None:
    cluster, workdir = auth_cluster
    result = subprocess.run([sys.executable, "-c", DRIVER],
                            env=driver_env(cluster, secret_file(tmp_path, SECRET)),
                            capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "job result 999000" in result.stdout, result.stderr[-4000:]
    # The driver's JVM (launched without the secret, which then went through py4j), the master
    # and worker (spark-defaults.conf) and the executors (the worker's environment).
    assert "cmdline leaks []" in result.stdout
    assert "Registering app auth-test" in (workdir / "master.log").read_text(errors="replace")


def refused(cluster: SparkCluster, workdir: Path, secret_file: Path | None, *expected: str) -> tuple[str, str]:
    """Start a driver and return its log and the master's log lines written meanwhile, once the
    driver has logged every ``expected`` text, or after two minutes (a driver the master refuses
    retries for a minute before it gives up)."""
    master_log = workdir / "master.log"
    seen = master_log.stat().st_size
    driver_log = workdir / f"driver-{time.monotonic_ns()}.log"
    with driver_log.open("w") as out, subprocess.Popen([sys.executable, "-c", DRIVER],
                                                        env=driver_env(cluster, secret_file),
                                                        stdout=out, stderr=subprocess.STDOUT) as driver:
        try:
            deadline = time.monotonic() + 120
            while (time.monotonic() < deadline and driver.poll() is None
                   and not all(text in driver_log.read_text(errors="replace") for text in expected)):
                time.sleep(0.5)
        finally:
            driver.kill()
    with master_log.open(errors="replace") as log:
        log.seek(seen)
        master = log.read()
    return driver_log.read_text(errors="replace"), master


def test_a_driver_without_the_secret_is_refused(auth_cluster: tuple[SparkCluster, Path]) -> None:
    cluster, workdir = auth_cluster
    output, master = refused(cluster, workdir, None, "Failed to connect to master", "Unknown challenge message")
    assert "job result" not in output
    assert "Registering app auth-test" not in master
    # The master's AuthRpcHandler refuses an RPC that did not start with its challenge.
    assert "Failed to connect to master" in output, output
    assert "Unknown challenge message" in output, output


def test_a_driver_with_a_wrong_secret_is_refused(auth_cluster: tuple[SparkCluster, Path], tmp_path: Path) -> None:
    cluster, workdir = auth_cluster
    output, master = refused(cluster, workdir, secret_file(tmp_path, "a-wrong-secret-of-some-length"),
                             "Failed to connect to master", "AuthClientBootstrap.doSparkAuth")
    assert "job result" not in output
    assert "Registering app auth-test" not in master
    # The master closes the connection during the client's authentication handshake.
    assert "Failed to connect to master" in output, output
    assert "AuthClientBootstrap.doSparkAuth" in output, output
