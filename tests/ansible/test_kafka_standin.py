"""The Kafka stand-in of roles/kafka's Molecule scenario (molecule/default/files/fake_kafka.py), on its own.

Three combined (broker + controller) nodes run as local subprocesses on 127.0.0.2-4 (all of 127/8 is
loopback on Linux) with a dynamic quorum (controller.quorum.bootstrap.servers, format with
--initial-controllers), a 2 s catch-up and a 4 s broker registration timeout. The tests check the
behaviour the playbooks are judged by: a lone node never serves, a changed node id is refused, the
quorum needs a majority, replicas catch up after a restart, and a stop that leaves partitions below
min.insync.replicas is recorded as UNSAFE. A secured cluster (SASL_SSL clients, mutual TLS between
nodes, as roles/kafka renders it, with certificates made here by openssl) refuses a key that is not
PKCS#8, a tool without credentials, a certificate of another CA, a wrong SCRAM password and a user
that is no super user, and keeps SCRAM users and ACLs given through files.
"""

from __future__ import annotations

import os
import random
import shutil
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

    def extra_properties(self, node: int) -> list[str]:
        return []

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
            *self.extra_properties(node),
            "",
        ])

    def env(self, tool: str) -> dict[str, str]:
        env = dict(os.environ, FAKE_KAFKA_TOOL=tool, FAKE_KAFKA_CATCH_UP_S=str(CATCH_UP_S),
                   FAKE_KAFKA_ARGV_LOG=str(self.root / "argv.log"))
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


# --- security, as roles/kafka renders it --------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
             "-out", str(cert), "-subj", f"/CN={name}", "-days", "2", cwd=directory)
    return key, cert


def _node_pem(directory: Path, ca: tuple[Path, Path], cn: str, address: str) -> Path:
    """key (PKCS#8, as openssl genpkey writes it) + certificate signed by ca, like tasks/configure-apache.yml."""
    key, csr, cert = directory / f"{cn}.key", directory / f"{cn}.csr", directory / f"{cn}.crt"
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key), cwd=directory)
    _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={cn}", cwd=directory)
    extensions = directory / f"{cn}.ext"
    extensions.write_text(f"subjectAltName=IP:{address},DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(extensions), cwd=directory)
    pem = directory / f"{cn}.pem"
    pem.write_text(key.read_text() + cert.read_text())
    return pem


class SecureCluster(Cluster):
    """CLIENT (SASL_SSL) on the broker port, INTERNAL (SSL) on the one after the controller's."""

    def __init__(self, root: Path) -> None:
        self.tls = root / "tls"
        self.ca = _ca(self.tls, "test-ca")
        super().__init__(root)

    def pem(self, node: int) -> Path:
        path = self.tls / f"node-{node}.pem"
        if not path.exists():
            _node_pem(self.tls, self.ca, f"node-{node}", self.host(node))
        return path

    @property
    def internal_port(self) -> int:
        return self.controller_port + 1

    @property
    def internal(self) -> str:
        return ",".join(f"{self.host(n)}:{self.internal_port}" for n in DIRECTORY_IDS)

    def extra_properties(self, node: int) -> list[str]:
        host = self.host(node)
        return [
            f"listeners=CLIENT://{host}:{self.broker_port},INTERNAL://{host}:{self.internal_port},"
            f"CONTROLLER://{host}:{self.controller_port}",
            f"advertised.listeners=CLIENT://{host}:{self.broker_port},INTERNAL://{host}:{self.internal_port}",
            "inter.broker.listener.name=INTERNAL",
            "listener.security.protocol.map=CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL",
            "ssl.keystore.type=PEM", f"ssl.keystore.location={self.pem(node)}",
            "ssl.truststore.type=PEM", f"ssl.truststore.location={self.ca[1]}",
            "listener.name.internal.ssl.client.auth=required", "listener.name.controller.ssl.client.auth=required",
            "ssl.principal.mapping.rules=RULE:^CN=([^,]+)$/$1/,DEFAULT",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.client.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            "super.users=User:node-1;User:node-2;User:node-3;User:admin",
        ]

    def client_config(self, name: str, **settings: str) -> Path:
        path = self.root / f"{name}.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        return path

    def tls_config(self, pem: Path) -> Path:
        return self.client_config(pem.stem, **{"security.protocol": "SSL", "ssl.keystore.type": "PEM",
                                               "ssl.keystore.location": str(pem), "ssl.truststore.type": "PEM",
                                               "ssl.truststore.location": str(self.ca[1])})

    def sasl_config(self, user: str, password: str, name: str = "") -> Path:
        jaas = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" ' \
               f'password="{password}";'
        return self.client_config(name or f"sasl-{user}", **{"security.protocol": "SASL_SSL",
                                                     "sasl.mechanism": "SCRAM-SHA-512", "sasl.jaas.config": jaas,
                                                     "ssl.truststore.type": "PEM",
                                                     "ssl.truststore.location": str(self.ca[1])})


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_a_secured_cluster_refuses_outsiders_and_keeps_users_and_acls(tmp_path: Path) -> None:
    cluster = SecureCluster(tmp_path)
    try:
        # Kafka's PEM keystore takes PKCS#8 keys only, not the "EC PRIVATE KEY" that roles/pki writes.
        pem = cluster.pem(1)
        good = pem.read_text()
        _openssl("ec", "-in", str(pem), "-out", str(tmp_path / "sec1.key"), cwd=tmp_path)
        pem.write_text((tmp_path / "sec1.key").read_text() + good[good.index("-----BEGIN CERTIFICATE-----"):])
        assert cluster.start(1).wait(timeout=10) == 1
        assert "no unencrypted PKCS#8 private key" in (cluster.root / "node1" / "server.log").read_text()
        pem.write_text(good)
        for node in DIRECTORY_IDS:
            cluster.start(node)
        _wait(cluster.in_sync(1, 2, 3), 15, "three secured nodes in sync")

        node_config = cluster.tls_config(cluster.pem(2))
        as_node = ("--bootstrap-server", cluster.internal, "--command-config", str(node_config))
        cluster.tool("kafka-topics.sh", *as_node, "--create", "--topic", "trades", "--partitions", "1",
                     "--replication-factor", "3")
        quorum = cluster.tool("kafka-metadata-quorum.sh", "--bootstrap-controller", cluster.controllers,
                              "--command-config", str(node_config), "describe", "--status")
        assert "LeaderId:" in quorum.stdout

        anonymous = cluster.tool("kafka-topics.sh", "--bootstrap-server", cluster.internal, "--list", check=False)
        assert anonymous.returncode == 1 and "the listener speaks SSL, the client PLAINTEXT" in anonymous.stderr
        anonymous = cluster.tool("kafka-topics.sh", "--bootstrap-server", cluster.bootstrap, "--list", check=False)
        assert anonymous.returncode == 1 and "the listener speaks SASL_SSL, the client PLAINTEXT" in anonymous.stderr
        other_ca = _ca(tmp_path / "other", "other-ca")
        stranger = cluster.tls_config(_node_pem(tmp_path / "other", other_ca, "node-1", cluster.host(1)))
        refused = cluster.tool("kafka-topics.sh", "--bootstrap-server", cluster.internal, "--command-config",
                               str(stranger), "--list", check=False)
        assert refused.returncode == 1 and "not signed by a CA of the node's trust store" in refused.stderr

        # SCRAM users from files (the password never in argv), then over SASL_SSL on the client listener.
        users = ("kafka-configs.sh", *as_node, "--entity-type", "users")
        for user, password in (("admin", "admin-password-0123456789"), ("producer", "producer-password-0123456")):
            credential = tmp_path / f"{user}.credential"
            credential.write_text(f"SCRAM-SHA-512=iterations=8192,password={password}\n")
            cluster.tool(*users, "--alter", "--entity-name", user, "--add-config-file", str(credential))
        assert cluster.tool(*users, "--describe").stdout.splitlines() == [
            "SCRAM credential configs for user-principal 'admin' are SCRAM-SHA-512=iterations=8192",
            "SCRAM credential configs for user-principal 'producer' are SCRAM-SHA-512=iterations=8192",
        ]
        admin = cluster.sasl_config("admin", "admin-password-0123456789")
        assert cluster.tool("kafka-topics.sh", "--bootstrap-server", cluster.bootstrap, "--command-config",
                            str(admin), "--list").stdout == "trades\n"
        wrong = cluster.tool("kafka-topics.sh", "--bootstrap-server", cluster.bootstrap, "--command-config",
                             str(cluster.sasl_config("admin", "not-the-password", "wrong")), "--list", check=False)
        assert wrong.returncode == 1 and "SaslAuthenticationException" in wrong.stderr
        producer = cluster.tool("kafka-topics.sh", "--bootstrap-server", cluster.bootstrap, "--command-config",
                                str(cluster.sasl_config("producer", "producer-password-0123456")), "--list",
                                check=False)
        assert producer.returncode == 1
        assert "ClusterAuthorizationException: User:producer is not authorized" in producer.stderr

        acls = ("kafka-acls.sh", "--bootstrap-server", cluster.bootstrap, "--command-config", str(admin))
        cluster.tool(*acls, "--add", "--allow-principal", "User:producer", "--operation", "Write", "--operation",
                     "Describe", "--topic", "trades", "--resource-pattern-type", "literal")
        cluster.tool(*acls, "--add", "--allow-principal", "User:producer", "--operation", "IdempotentWrite",
                     "--cluster")
        assert cluster.tool(*acls, "--list").stdout.splitlines() == [
            "Current ACLs for resource `ResourcePattern(resourceType=CLUSTER, name=kafka-cluster, "
            "patternType=LITERAL)`: ",
            " \t(principal=User:producer, host=*, operation=IDEMPOTENT_WRITE, permissionType=ALLOW)",
            "",
            "Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name=trades, patternType=LITERAL)`: ",
            " \t(principal=User:producer, host=*, operation=DESCRIBE, permissionType=ALLOW)",
            " \t(principal=User:producer, host=*, operation=WRITE, permissionType=ALLOW)",
            "",
        ]
        argv = (tmp_path / "argv.log").read_text()
        assert '"--add-config-file"' in argv
        assert "password" not in argv.replace("-password-", "")  # no credential value, only file names
        assert "0123456789" not in argv and "0123456\"" not in argv
    finally:
        cluster.close()
