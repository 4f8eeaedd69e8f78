"""The Kafka stand-in of roles/kafka's Molecule scenario (molecule/default/files/fake_kafka.py), on its own.

Three combined (broker + controller) nodes run as local subprocesses on 127.0.0.2-4 (all of 127/8 is
loopback on Linux) with a dynamic quorum (controller.quorum.bootstrap.servers, format with
--initial-controllers), a 2 s catch-up and a 4 s broker registration timeout. The tests check the
behaviour the playbooks are judged by: a lone node never serves, a changed node id is refused, the
quorum needs a majority, replicas catch up after a restart, and a stop that leaves partitions below
min.insync.replicas is recorded as UNSAFE.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "roles" / "kafka" / "molecule" / "default" / "files" / "fake_kafka.py"
CLUSTER_ID = "523_Y8cyS0qNLUnsk4lIQg"
DIRECTORY_IDS = {1: "K90IZ-0DRNazJ49kCZ1EMQ", 2: "aUARLskQTCW4qCZDtS_cwA", 3: "2ggvsS4kQb-fSJ_-zC_Ang"}
CATCH_UP_S = 2
REGISTRATION_MS = 4000


def _free_ports() -> tuple[int, int]:
    """A (broker, controller) port pair that every node's address can bind."""
    for _ in range(50):
        base = random.randrange(20000, 60000, 2)
        try:
            for node in DIRECTORY_IDS:
                for port in (base, base + 1):
                    socket.create_server((f"127.0.0.{node + 1}", port)).close()
        except OSError:
            continue
        return base, base + 1
    raise RuntimeError("no free port pair")


def _wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


class Cluster:
    """Three formatted nodes in a temporary directory; start and stop them one by one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.broker_port, self.controller_port = _free_ports()
        self.procs: dict[int, subprocess.Popen[str]] = {}
        self.bootstrap = ",".join(f"{self.host(n)}:{self.broker_port}" for n in DIRECTORY_IDS)
        self.controllers = ",".join(f"{self.host(n)}:{self.controller_port}" for n in DIRECTORY_IDS)
        initial = ",".join(f"{n}@{self.host(n)}:{self.controller_port}:{d}" for n, d in DIRECTORY_IDS.items())
        for node in DIRECTORY_IDS:
            self.config(node).parent.mkdir(parents=True)
            self.config(node).write_text(self.properties(node))
        for node in DIRECTORY_IDS:
            self.tool("kafka-storage.sh", "format", "--cluster-id", CLUSTER_ID, "--config", str(self.config(node)),
                      "--initial-controllers", initial)

    @staticmethod
    def host(node: int) -> str:
        return f"127.0.0.{node + 1}"

    def config(self, node: int) -> Path:
        return self.root / f"node{node}" / "server.properties"

    def data(self, node: int) -> Path:
        return self.root / f"node{node}" / "data"

    def properties(self, node: int, node_id: int | None = None) -> str:
        host = self.host(node)
        return "\n".join([
            "# combined node, dynamic quorum",
            "process.roles=broker,controller",
            f"node.id={node_id or node}",
            f"controller.quorum.bootstrap.servers={self.controllers}",
            f"listeners=PLAINTEXT://{host}:{self.broker_port},CONTROLLER://{host}:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://{host}:{self.broker_port}",
            "controller.listener.names=CONTROLLER",
            f"log.dirs={self.data(node)}",
            "default.replication.factor=3",
            "min.insync.replicas=2",
            f"initial.broker.registration.timeout.ms={REGISTRATION_MS}",
            "",
        ])

    def env(self, tool: str) -> dict[str, str]:
        env = dict(os.environ, FAKE_KAFKA_TOOL=tool, FAKE_KAFKA_CATCH_UP_S=str(CATCH_UP_S))
        env.pop("KAFKA_LOG4J_OPTS", None)
        return env

    def tool(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, str(STANDIN), *args], env=self.env(tool), capture_output=True,
                              text=True, timeout=30, check=False)
        if check:
            assert proc.returncode == 0, f"{tool} {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        return proc

    def topics(self, *args: str) -> str:
        return self.tool("kafka-topics.sh", "--bootstrap-server", self.bootstrap, *args).stdout

    def start(self, node: int, **env: str) -> subprocess.Popen[str]:
        log = (self.root / f"node{node}" / "server.log").open("a")
        self.procs[node] = subprocess.Popen([sys.executable, str(STANDIN), str(self.config(node))],
                                            env={**self.env("kafka-server-start.sh"), **env}, stdout=log, stderr=log,
                                            text=True)
        log.close()
        return self.procs[node]

    def stop(self, node: int) -> int:
        proc = self.procs.pop(node)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=10)

    def serves(self, node: int, port: int | None = None) -> bool:
        """Whether the node's broker (client) port, or the given one, accepts connections."""
        try:
            socket.create_connection((self.host(node), port or self.broker_port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def events(self, node: int) -> str:
        path = self.data(node) / "standin-events.log"
        return path.read_text() if path.exists() else ""

    def in_sync(self, *nodes: int) -> Callable[[], bool]:
        return lambda: all(f"IN_SYNC node {n}" in self.events(n).rsplit("STARTED", 1)[-1] for n in nodes)

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait(timeout=10)
        self.procs.clear()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def healthy(cluster: Cluster) -> Cluster:
    """All three nodes up and in sync, with a topic of 3 partitions replicated 3 times."""
    for node in DIRECTORY_IDS:
        cluster.start(node)
    _wait(cluster.in_sync(1, 2, 3), 10, "three nodes in sync")
    cluster.topics("--create", "--topic", "trades", "--partitions", "3", "--replication-factor", "3",
                   "--config", "retention.ms=604800000")
    return cluster


def test_format_refuses_a_dynamic_quorum_controller_without_a_quorum_flag(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    config = tmp_path / "new.properties"
    config.write_text(cluster.properties(1).replace(str(cluster.data(1)), str(tmp_path / "new")))
    proc = cluster.tool("kafka-storage.sh", "format", "--cluster-id", CLUSTER_ID, "--config", str(config), check=False)
    assert proc.returncode == 1
    assert "you must specify one of the following: --standalone, --initial-controllers, or --no-initial-controllers" \
        in proc.stderr
    assert not (tmp_path / "new" / "meta.properties").exists()
    static = config.read_text().replace("controller.quorum.bootstrap.servers=", "controller.quorum.voters=1@")
    config.write_text(static)
    assert cluster.tool("kafka-storage.sh", "format", "-t", CLUSTER_ID, "-c", str(config), "--standalone",
                        check=False).returncode == 1
    # Formatted at construction: once each; a second run needs --ignore-formatted and changes nothing.
    assert cluster.tool("kafka-storage.sh", "format", "-t", CLUSTER_ID, "-c", str(cluster.config(1)),
                        "--no-initial-controllers", check=False).returncode == 1
    cluster.tool("kafka-storage.sh", "format", "-t", CLUSTER_ID, "-c", str(cluster.config(1)), "--ignore-formatted",
                 "--no-initial-controllers")
    lines = (cluster.data(1) / "format.log").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["formatted", "already-formatted"]
    meta = (cluster.data(1) / "meta.properties").read_text()
    assert f"directory.id={DIRECTORY_IDS[1]}" in meta
    assert f"cluster.id={CLUSTER_ID}" in meta
    assert len(cluster.tool("kafka-storage.sh", "random-uuid").stdout.strip()) == 22


def test_start_refuses_a_changed_node_id_unformatted_storage_or_an_unreadable_log4j_file(cluster: Cluster) -> None:
    cluster.config(1).write_text(cluster.properties(1, node_id=7))
    proc = cluster.start(1)
    assert proc.wait(timeout=10) == 1
    log = (cluster.root / "node1" / "server.log").read_text()
    assert "Stored node id 1 doesn't match previous node id 7" in log
    (cluster.data(2) / "meta.properties").unlink()
    assert cluster.start(2).wait(timeout=10) == 1
    assert "No meta.properties found in" in (cluster.root / "node2" / "server.log").read_text()
    missing = cluster.root / "missing-log4j2.yaml"
    assert cluster.start(3, KAFKA_LOG4J_OPTS=f"-Dlog4j2.configurationFile={missing}").wait(timeout=10) == 1
    log = (cluster.root / "node3" / "server.log").read_text()
    assert f"{missing} (KAFKA_LOG4J_OPTS) is missing or unreadable" in log


def test_a_lone_node_never_serves_and_two_of_three_do(cluster: Cluster) -> None:
    lone = cluster.start(1)
    _wait(lambda: lone.poll() is not None or cluster.serves(1), REGISTRATION_MS / 1000 + 3, "node 1 to give up")
    assert lone.returncode == 1
    assert "Timed out waiting for the broker to register" in (cluster.root / "node1" / "server.log").read_text()
    cluster.start(1)
    cluster.start(2)
    _wait(lambda: cluster.serves(1) and cluster.serves(2), 5, "nodes 1 and 2 to serve")
    assert not cluster.serves(3)


def test_the_metadata_quorum_needs_a_majority_and_reports_catch_up(cluster: Cluster) -> None:
    def quorum(what: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return cluster.tool("kafka-metadata-quorum.sh", "--bootstrap-controller", cluster.controllers, "describe",
                            what, check=check)

    def lag(output: str, node: int) -> int:
        row = next(line.split("\t") for line in output.splitlines() if line.startswith(f"{node}\t"))
        return int(row[3])

    cluster.start(1)
    _wait(lambda: cluster.serves(1, cluster.controller_port), 5, "node 1's controller to answer")
    failed = quorum("--status", check=False)
    assert failed.returncode == 1
    assert "TimeoutException" in failed.stderr
    cluster.start(2)
    _wait(lambda: quorum("--status", check=False).returncode == 0, 5, "a quorum of two")
    replication = quorum("--replication").stdout
    assert replication.splitlines()[0].split("\t")[:4] == ["NodeId", "DirectoryId", "LogEndOffset", "Lag"]
    assert lag(replication, 2) > 0
    assert lag(replication, 3) == 10000
    status = quorum("--status").stdout
    assert "LeaderId:               1" in status
    assert f'"directoryId": "{DIRECTORY_IDS[3]}"' in status
    _wait(lambda: lag(quorum("--replication").stdout, 2) == 0, CATCH_UP_S + 3, "node 2 to catch up")


def test_under_replicated_partitions_while_a_broker_is_down_or_catching_up(healthy: Cluster) -> None:
    described = healthy.topics("--describe", "--topic", "trades")
    assert "PartitionCount: 3\tReplicationFactor: 3\tConfigs: retention.ms=604800000" in described
    assert "\tTopic: trades\tPartition: 1\tLeader: 2\tReplicas: 2,3,1\tIsr: 2,3,1" in described
    assert healthy.topics("--describe", "--under-replicated-partitions") == ""
    assert healthy.stop(3) == 143
    assert healthy.topics("--describe", "--under-replicated-partitions").splitlines() == [
        "\tTopic: trades\tPartition: 0\tLeader: 1\tReplicas: 1,2,3\tIsr: 1,2",
        "\tTopic: trades\tPartition: 1\tLeader: 2\tReplicas: 2,3,1\tIsr: 2,1",
        "\tTopic: trades\tPartition: 2\tLeader: 1\tReplicas: 3,1,2\tIsr: 1,2",
    ]
    healthy.start(3)
    _wait(lambda: healthy.serves(3), 5, "node 3 to serve again")
    assert len(healthy.topics("--describe", "--under-replicated-partitions").splitlines()) == 3
    _wait(lambda: healthy.topics("--describe", "--under-replicated-partitions") == "", CATCH_UP_S + 3,
          "node 3 to be back in the ISR")


def test_a_stop_while_another_broker_catches_up_is_unsafe(healthy: Cluster) -> None:
    assert healthy.stop(1) == 143
    assert "UNSAFE" not in healthy.events(1)
    healthy.start(1)
    _wait(lambda: healthy.serves(1), 5, "node 1 to serve again")
    assert healthy.stop(2) == 143
    unsafe = [line for line in healthy.events(2).splitlines() if "UNSAFE" in line]
    assert len(unsafe) == 1
    assert unsafe[0].endswith("UNSAFE node 2 stopped while node(s) 1 were out of sync")
    assert healthy.events(2).splitlines()[-1].endswith("STOPPED node 2")


def test_the_tools_that_the_role_reads(healthy: Cluster) -> None:
    assert healthy.topics("--list") == "trades\n"
    healthy.topics("--alter", "--topic", "trades", "--partitions", "4")
    assert "PartitionCount: 4" in healthy.topics("--describe", "--topic", "trades")
    configs = ("kafka-configs.sh", "--bootstrap-server", healthy.bootstrap, "--entity-type", "topics",
               "--entity-name", "trades")
    healthy.tool(*configs, "--alter", "--add-config", "retention.ms=86400000,cleanup.policy=delete")
    assert healthy.tool(*configs, "--describe").stdout.splitlines() == [
        "Dynamic configs for topic trades are:",
        "  cleanup.policy=delete sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:cleanup.policy=delete}",
        "  retention.ms=86400000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=86400000}",
    ]
    missing = healthy.tool("kafka-topics.sh", "--bootstrap-server", healthy.bootstrap, "--describe", "--topic", "nope",
                           check=False)
    assert missing.returncode == 1
    assert "Topic 'nope' does not exist as expected" in missing.stderr
    too_many = healthy.tool("kafka-topics.sh", "--bootstrap-server", healthy.bootstrap, "--create", "--topic", "big",
                            "--partitions", "1", "--replication-factor", "4", check=False)
    assert "Replication factor: 4 larger than available brokers: 3." in too_many.stderr
    versions = healthy.tool("kafka-broker-api-versions.sh", "--bootstrap-server", healthy.bootstrap).stdout
    assert f"{healthy.host(2)}:{healthy.broker_port} (id: 2 rack: null isFenced: false) -> (" in versions
    nobody = healthy.tool("kafka-topics.sh", "--bootstrap-server", "127.0.0.9:1", "--list", check=False)
    assert nobody.returncode == 1
    assert "TimeoutException" in nobody.stderr
