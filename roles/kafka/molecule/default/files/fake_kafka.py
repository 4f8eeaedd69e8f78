#!/usr/bin/env python3
"""Stand-in for the Apache Kafka 4.1 (KRaft) scripts; prepare.yml packs it into a fake release.

bin/<tool>.sh runs `FAKE_KAFKA_TOOL=<tool>.sh python3 fake_kafka.py ARGS` (Python 3.11, stdlib only).
NOT Kafka: no Kafka protocol, messages or replication. Nodes and tools exchange one JSON line each
way per TCP connection on the `listeners` ports. It models what orchestration depends on:
- format: Kafka 4.1's --standalone / --initial-controllers / --no-initial-controllers rules,
  meta.properties, --ignore-formatted. <metadata dir>/standin-quorum.json keeps the initial voters;
  <metadata dir>/format.log gets "formatted ..." (or "already-formatted ...") per run.
- start: refuses unformatted dirs, a node.id unlike meta.properties', mixed cluster ids and an
  unreadable KAFKA_LOG4J_OPTS file. Controllers answer at once; a broker opens its port only after
  registering with a majority of the voters, else exits 1 after initial.broker.registration.timeout.ms
  (so starting a new cluster one node at a time deadlocks). An opened node catches up for
  FAKE_KAFKA_CATCH_UP_S s (default 8): its replicas are out of the ISR, its metadata lag is > 0.
- metadata (brokers, topics) lives on the controllers (<metadata dir>/standin-cluster.json): a write
  must reach a majority of the voters, a read merges a majority's copies; the leader is the lowest-id
  voter that answers. Controllers copy newer entries from each other every second.
- SIGTERM exits 143. An in-sync broker first checks its stop: with o OTHER registered brokers down
  or catching up, RF = default.replication.factor (capped at the broker count) and m =
  min.insync.replicas, it is UNSAFE when o > 0 and o + 1 > RF - m (unavoidable stops are not flagged).
  <metadata dir>/standin-events.log gets STARTED, IN_SYNC, STOPPED, UNSAFE and FAILED lines.
- security (Kafka 4.1's names): every listener needs a protocol in listener.security.protocol.map; an
  SSL or SASL_SSL listener needs ssl.keystore.type=PEM with a keystore this process can read that
  holds a PKCS#8 key ("BEGIN PRIVATE KEY", as Kafka's PemStore requires) and a certificate, and a
  PEM trust store; a SASL_SSL listener needs SCRAM-SHA-512 among its enabled mechanisms and its
  listener.name.<l>.scram-sha-512.sasl.jaas.config; an authorizer must be StandardAuthorizer.
  A tool must bring a --command-config whose security.protocol is its listener's: SSL presents the
  keystore's certificate, which the node checks against its trust store (openssl verify) and maps
  to User:<CN> (ssl.principal.mapping.rules RULE:^CN=...); SASL_SSL presents a SCRAM user and
  password (checked against the PBKDF2 hash kafka-configs.sh stored). Only super.users may run the
  tools (allow.everyone.if.no.acl.found=false). kafka-configs.sh keeps SCRAM users (--add-config or
  --add-config-file), kafka-acls.sh keeps ACLs (--add, --list). Every tool appends its argv to
  FAKE_KAFKA_ARGV_LOG (default /var/log/fake-kafka-argv.log) when it may, so that a test can look
  for passwords in process arguments.
Only a real cluster proves that Kafka starts with the rendered configuration, that clients and
replication work, that a controlled shutdown moves leaders and that acknowledged data survives.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

Json = dict[str, Any]
Addr = tuple[str, int]
CATCH_UP_S = float(os.environ.get("FAKE_KAFKA_CATCH_UP_S", "8"))
DOWN_LAG = 10000  # the lag shown for a node that does not answer
ZERO_UUID = "AAAAAAAAAAAAAAAAAAAAAA"
TIMEOUT = "org.apache.kafka.common.errors.TimeoutException: Timed out waiting for a node assignment."


def fail(message: str) -> NoReturn:
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(1)


def new_uuid() -> str:
    return base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


def split(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def hostport(text: str) -> Addr:
    host, port = text.strip().rsplit(":", 1)
    return host.strip("[]"), int(port)


def opt(argv: list[str], *names: str) -> str | None:
    return next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg in names), None)


def props(path: str | Path) -> dict[str, str]:
    lines = (raw.strip() for raw in Path(path).read_text().splitlines())
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith(("#", "!")))
    return {key.strip(): value.strip() for key, value in pairs}


def listeners(text: str | None) -> dict[str, Addr]:
    return {name: hostport(hp) for name, hp in (item.split("://", 1) for item in split(text) if "://" in item)}


class Config:
    """The server.properties keys the stand-in reads."""

    def __init__(self, path: str) -> None:
        p = props(path)
        self.node_id = int(p["node.id"])
        self.roles = set(split(p.get("process.roles")))
        self.dirs = split(p.get("log.dirs", p.get("log.dir", "/tmp/kraft-combined-logs")))
        self.meta = Path(self.dirs[0])
        names = set(split(p.get("controller.listener.names", "CONTROLLER")))
        own, advertised = listeners(p.get("listeners")), listeners(p.get("advertised.listeners"))
        self.controller_addr = next((a for n, a in own.items() if n in names), None)
        self.broker_addr = next((a for n, a in own.items() if n not in names), None)
        self.advertised = next((a for n, a in advertised.items() if n not in names), self.broker_addr)
        voters = (v.split("@", 1) for v in split(p.get("controller.quorum.voters")))
        self.static = {int(node): hostport(hp) for node, hp in voters}
        self.bootstrap = [hostport(s) for s in split(p.get("controller.quorum.bootstrap.servers"))]
        self.rf = int(p.get("default.replication.factor", "1"))
        self.min_isr = int(p.get("min.insync.replicas", "1"))
        self.registration_s = int(p.get("initial.broker.registration.timeout.ms", "60000")) / 1000
        self.props = p
        protocol_map = dict(item.split(":", 1) for item in split(p.get("listener.security.protocol.map")))
        self.protocols: dict[str, str] = {}
        for name in own:
            if protocol_map and name not in protocol_map:
                fail(f"No security protocol defined for listener {name}")
            self.protocols[name] = protocol_map.get(name, name if name in PROTOCOLS else "PLAINTEXT")
        self.addrs = own
        self.controller_name = next((n for n in own if n in names), None)
        self.broker_names = [n for n in own if n not in names]
        self.super_users = set(split(p.get("super.users", "").replace(";", ",")))


PROTOCOLS = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
MAPPING_RULE = r"(DEFAULT)|RULE:((\\.|[^\\/])*)/((\\.|[^\\/])*)/([LU]?).*?|(.*?)"


def readable_pem(path: str | None, what: str, *, key: bool) -> str:
    """The text of a PEM store this process can read, with what Kafka's PemStore needs in it."""
    if not path:
        fail(f"{what}: no location set")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        fail(f"Failed to load PEM SSL {what} {path}: {exc.strerror} (read as uid {os.getuid()})")
    if "-----BEGIN CERTIFICATE-----" not in text:
        fail(f"Failed to load PEM SSL {what} {path}: no certificate")
    if key and "-----BEGIN PRIVATE KEY-----" not in text:
        fail(f"Failed to load PEM SSL {what} {path}: no unencrypted PKCS#8 private key (BEGIN PRIVATE KEY)")
    return text


def check_security(conf: Config) -> None:
    """Kafka's start-up checks of the settings the role renders for TLS, SASL and ACLs."""
    p = conf.props
    for name, protocol in conf.protocols.items():
        if protocol not in PROTOCOLS:
            fail(f"Invalid security protocol {protocol} for listener {name}")
        prefix = f"listener.name.{name.lower()}."
        if protocol in {"SSL", "SASL_SSL"}:
            for kind, key in (("keystore", True), ("truststore", False)):
                store_type = p.get(f"{prefix}ssl.{kind}.type", p.get(f"ssl.{kind}.type", "JKS"))
                if store_type != "PEM":
                    fail(f"{name}: the stand-in models PEM stores only (ssl.{kind}.type={store_type})")
                if p.get(f"ssl.{kind}.password"):
                    fail(f"SSL {kind} password cannot be specified with PEM format.")
                readable_pem(p.get(f"{prefix}ssl.{kind}.location", p.get(f"ssl.{kind}.location")),
                             f"{kind} of listener {name}", key=key)
        if protocol in {"SASL_SSL", "SASL_PLAINTEXT"}:
            mechanisms = split(p.get(f"{prefix}sasl.enabled.mechanisms", p.get("sasl.enabled.mechanisms", "GSSAPI")))
            if "SCRAM-SHA-512" not in mechanisms:
                fail(f"{name}: the stand-in models SCRAM-SHA-512 only (enabled: {mechanisms})")
            if "ScramLoginModule" not in p.get(f"{prefix}scram-sha-512.sasl.jaas.config", ""):
                fail(f"Could not find a 'KafkaServer' or '{prefix}scram-sha-512.sasl.jaas.config' entry in the JAAS "
                     "configuration.")
    authorizer = p.get("authorizer.class.name", "")
    if authorizer and authorizer != STANDARD_AUTHORIZER:
        fail(f"KRaft needs {STANDARD_AUTHORIZER}, not {authorizer}")
    if authorizer and p.get("allow.everyone.if.no.acl.found", "false") != "false":
        fail("the stand-in models allow.everyone.if.no.acl.found=false only")


def scram_hash(password: str, salt: str, iterations: int) -> str:
    return hashlib.pbkdf2_hmac("sha512", password.encode(), bytes.fromhex(salt), iterations).hex()


def certificate_principal(conf: Config, cert: str) -> str | None:
    """User:<CN> of a client certificate signed by this node's trust store (None: refused)."""
    p = conf.props
    ca = p.get("ssl.truststore.location", "")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        verify = subprocess.run(["openssl", "verify", "-CAfile", ca], input=cert, capture_output=True, text=True,
                                timeout=10, check=False)
        if verify.returncode != 0:
            return None
        subject = subprocess.run(["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253"], input=cert,
                                 capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        dn = subject.removeprefix("subject=").strip()
        # Kafka's SslPrincipalMapper: rules split at commas outside their patterns; the first whose
        # pattern matches the whole DN gives the name ($1 = a group); DEFAULT keeps the DN.
        rules = [m[1] for m in re.finditer(r"\s*(" + MAPPING_RULE + r")\s*(,\s*|$)", p.get(
            "ssl.principal.mapping.rules", "DEFAULT").strip()) if m[1]]
        for rule in rules:
            parsed = re.fullmatch(MAPPING_RULE, rule)
            if parsed is None:
                fail(f"Invalid rule: {rule}")
            if parsed[1]:
                return "User:" + dn
            if parsed[2] is not None and re.fullmatch(parsed[2], dn):
                return "User:" + re.sub(parsed[2], re.sub(r"\$(\d+)", r"\\\1", parsed[4]), dn)
    return None


def call(addr: Addr, request: Json, timeout: float = 1.0) -> Json | None:
    """One JSON request, one JSON reply; None when the peer does not answer."""
    try:
        with socket.create_connection(addr, timeout=1.0) as sock:
            sock.settimeout(timeout)
            sock.sendall(json.dumps(request).encode() + b"\n")
            line = sock.makefile("rb").readline()
        return json.loads(line) if line else None
    except (OSError, ValueError):
        return None


def call_all(addrs: dict[int, Addr], request: Json) -> dict[int, Json | None]:
    if not addrs:
        return {}
    with ThreadPoolExecutor(len(addrs)) as pool:
        futures = {node: pool.submit(call, addr, request) for node, addr in addrs.items()}
    return {node: future.result() for node, future in futures.items()}


def merge(target: Json, other: Json) -> bool:
    """Keep the newest entry (by its writer's timestamp) of every broker and topic; True if one changed."""
    changed = False
    for section in ("brokers", "topics", "users", "acls"):
        for key, entry in other.get(section, {}).items():
            if entry["ts"] > target[section].get(key, {}).get("ts", 0):
                target[section][key], changed = entry, True
    return changed


# kafka-storage.sh
def initial_voters(conf: Config, argv: list[str]) -> list[Json]:
    """The voters that format records, after Kafka 4.1's checks of the quorum flags."""
    standalone = bool({"--standalone", "-s"} & set(argv))
    no_initial = bool({"--no-initial-controllers", "-N"} & set(argv))
    initial = opt(argv, "--initial-controllers", "-I")
    controller, flag = "controller" in conf.roles, "--standalone" if standalone else "--initial-controllers"
    if standalone + bool(initial) + no_initial > 1:
        fail("Only one of --standalone, --initial-controllers or --no-initial-controllers may be given.")
    if (standalone or initial) and not controller:
        fail(f"You can only use {flag} on a controller.")
    if (standalone or initial) and conf.static:
        fail(f"You cannot use {flag} when controller.quorum.voters is set (a static quorum); "
             "a dynamic quorum uses controller.quorum.bootstrap.servers.")
    if controller and not conf.static and not (standalone or initial or no_initial):
        fail("Because controller.quorum.voters is not set on this controller, you must specify one of the "
             "following: --standalone, --initial-controllers, or --no-initial-controllers.")
    if standalone and conf.controller_addr:
        return [{"id": conf.node_id, "host": conf.controller_addr[0], "port": conf.controller_addr[1],
                 "dir": new_uuid()}]
    voters = []
    for item in split(initial):
        try:
            node, rest = item.split("@", 1)
            host, port, directory = rest.rsplit(":", 2)
            voters.append({"id": int(node), "host": host.strip("[]"), "port": int(port), "dir": directory})
        except ValueError:
            fail(f"Unable to parse --initial-controllers entry '{item}': expected id@host:port:directoryId")
    return voters


def storage(argv: list[str]) -> None:
    if argv[:1] == ["random-uuid"]:
        print(new_uuid())
        return
    cluster_id, config = opt(argv, "--cluster-id", "-t"), opt(argv, "--config", "-c")
    if argv[:1] != ["format"] or not cluster_id or not config:
        fail("usage: kafka-storage.sh random-uuid | format --cluster-id ID --config FILE [options]")
    conf = Config(config)
    voters = initial_voters(conf, argv)
    formatted = [d for d in conf.dirs if (Path(d) / "meta.properties").exists()]
    if formatted and not {"--ignore-formatted", "-g"} & set(argv):
        fail(f"Log directory {formatted[0]} is already formatted. Use --ignore-formatted to ignore this "
             "directory and format the others.")
    if len(formatted) == len(conf.dirs):
        print("All of the log directories are already formatted.")
    mine = next((v["dir"] for v in voters if v["id"] == conf.node_id), new_uuid())
    for path in (Path(d) for d in conf.dirs if d not in formatted):
        path.mkdir(parents=True, exist_ok=True)
        directory = mine if path == conf.meta else new_uuid()
        (path / "meta.properties").write_text(f"#\n#{time.ctime()}\nnode.id={conf.node_id}\n"
                                              f"directory.id={directory}\nversion=1\ncluster.id={cluster_id}\n")
        kind = "data" if path != conf.meta else "dynamic metadata voter" if voters else "metadata"
        print(f"Formatting {kind} directory {path} with metadata.version 4.1-IV1.")
    done = "already-formatted" if str(conf.meta) in formatted else "formatted"
    if voters and done == "formatted":
        (conf.meta / "standin-quorum.json").write_text(json.dumps({"voters": voters}))
    with (conf.meta / "format.log").open("a") as fh:
        fh.write(f"{done} node.id={conf.node_id} {' '.join(argv[1:])}\n")


# kafka-server-start.sh
def check_log4j() -> None:
    opts = os.environ.get("KAFKA_LOG4J_OPTS", "")
    files = [f for o in opts.split() if o.startswith("-Dlog4j2.configurationFile=") for f in split(o.split("=", 1)[1])]
    if opts and not files:
        fail(f"KAFKA_LOG4J_OPTS={opts!r} names no log4j2 configuration (-Dlog4j2.configurationFile=PATH)")
    for name in (f.removeprefix("file:") for f in files):
        if not (os.path.isfile(name) and os.access(name, os.R_OK)):
            fail(f"The log4j2 configuration file {name} (KAFKA_LOG4J_OPTS) is missing or unreadable by this user")


def check_storage(conf: Config) -> tuple[str, str]:
    """(cluster id, metadata directory id), or exit 1 like Kafka does."""
    metas = {}
    for d in conf.dirs:
        path = Path(d) / "meta.properties"
        if not path.is_file():
            fail(f"No meta.properties found in {d} (have you run kafka-storage.sh to format the directory?)")
        metas[d] = props(path)
        if metas[d].get("node.id") != str(conf.node_id):
            fail(f"Stored node id {metas[d].get('node.id')} doesn't match previous node id {conf.node_id} ({path})")
    clusters = sorted({m.get("cluster.id", "") for m in metas.values()})
    if len(clusters) > 1:
        fail(f"Invalid cluster.id in {conf.dirs}: found {clusters}; all log directories must share one")
    return clusters[0], metas[conf.dirs[0]].get("directory.id", ZERO_UUID)


class Node:
    """A broker and/or controller process: its listeners, its view of the quorum, its metadata copy."""

    def __init__(self, conf: Config) -> None:
        self.conf = conf
        self.cluster_id, self.dir_id = check_storage(conf)
        self.lock = threading.Lock()
        self.opened: dict[str, float] = {}  # role -> when its listener opened
        static = conf.static.items()
        self.voters: dict[int, Json] = {i: {"host": host, "port": port, "dir": ZERO_UUID} for i, (host, port) in static}
        quorum = conf.meta / "standin-quorum.json"
        if not self.voters and quorum.is_file():
            self.voters = {v["id"]: v for v in json.loads(quorum.read_text())["voters"]}
        self.state_file = conf.meta / "standin-cluster.json"
        empty = {"offset": 0, "brokers": {}, "topics": {}, "users": {}, "acls": {}}
        self.state: Json = {**empty, **(json.loads(self.state_file.read_text()) if self.state_file.is_file() else {})}
        self.cache: Json = self.state  # the last majority read

    def log(self, message: str) -> None:
        print(f"[{datetime.now(UTC).isoformat(timespec='milliseconds')}] {message}", flush=True)

    def event(self, what: str) -> None:
        with (self.conf.meta / "standin-events.log").open("a") as fh:
            fh.write(f"{datetime.now(UTC).isoformat(timespec='milliseconds')} {what}\n")
        self.log(what)

    def find_voters(self) -> dict[int, Addr]:
        for addr in [] if self.voters else self.conf.bootstrap:
            reply = call(addr, {"op": "voters"})
            if reply and reply.get("voters"):
                self.voters = {int(i): v for i, v in reply["voters"].items()}
                break
        return {i: (v["host"], v["port"]) for i, v in self.voters.items()}

    def lag(self, role: str) -> int:
        if role not in self.opened:
            return DOWN_LAG
        return max(0, math.ceil((self.opened[role] + CATCH_UP_S - time.time()) * 10))

    def status(self) -> Json:
        return {"id": self.conf.node_id, "directory_id": self.dir_id, "offset": self.state["offset"],
                "lag": self.lag("controller"), "broker_lag": self.lag("broker"), "opened": self.opened,
                "in_sync": "broker" in self.opened and self.lag("broker") == 0, "time": time.time()}

    def apply(self, other: Json) -> Json:
        """Merge other into a copy of the state, which replaces it (readers never see it change)."""
        with self.lock:
            state = json.loads(json.dumps(self.state))
            if merge(state, other) or other.get("offset", 0) > state["offset"]:
                state["offset"] = max(state["offset"] + 1, other.get("offset", 0))
                self.state_file.with_suffix(".tmp").write_text(json.dumps(state))
                self.state_file.with_suffix(".tmp").replace(self.state_file)
                self.state = state
        return {"ok": True}

    def view(self) -> Json:
        """What the tools need: voters and their status, the majority's metadata, the brokers' status."""
        voters = self.find_voters()
        up = {i: r for i, r in call_all(voters, {"op": "state"}).items() if r and "state" in r}
        majority = bool(voters) and len(up) > len(voters) // 2
        # The lowest-id voter that answers and has caught up leads (else the lowest that answers).
        leader = min(up, key=lambda i: (up[i]["status"]["lag"] > 0, i)) if majority else None
        if majority:
            cache = {"offset": max(r["state"]["offset"] for r in up.values()), "brokers": {}, "topics": {},
                     "users": {}, "acls": {}}
            for reply in up.values():
                merge(cache, reply["state"])
            self.cache = cache
        brokers = {int(i): (b["host"], b["port"]) for i, b in self.cache["brokers"].items()}
        return {"cluster_id": self.cluster_id, "majority": majority, "leader": leader,
                "voters": {i: {**self.voters[i], "status": up[i]["status"] if i in up else None} for i in voters},
                "state": self.cache, "broker_status": call_all(brokers, {"op": "status"})}

    def write(self, section: str, key: str, value: Json) -> Json:
        voters = self.find_voters()
        acks = call_all(voters, {"op": "apply", "section": section, "key": key, "value": value})
        return {"ok": bool(voters) and sum(bool(a and a.get("ok")) for a in acks.values()) > len(voters) // 2}

    def authenticate(self, protocol: str, client: Json) -> str | None:
        """None when a tool's request may go on over a listener of this protocol, else why not."""
        given = client.get("protocol", "PLAINTEXT")
        if protocol == "PLAINTEXT":
            return None
        if given != protocol:
            return f"the listener speaks {protocol}, the client {given} (disconnected during the handshake)"
        if not client.get("trusts_ca"):
            return "SSL handshake failed: the client does not trust the node's certificate"
        principal = self.principal(protocol, client)
        if principal is None:
            return ("SSL handshake failed: the client certificate is not signed by a CA of the node's trust store"
                    if protocol == "SSL" else
                    "org.apache.kafka.common.errors.SaslAuthenticationException: Authentication failed during "
                    "authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512")
        return self.authorize(principal)

    def principal(self, protocol: str, client: Json) -> str | None:
        if protocol == "SSL":
            return certificate_principal(self.conf, client.get("cert", ""))
        user = client.get("username", "")
        stored = self.view()["state"].get("users", {}).get(user)
        ok = stored and scram_hash(client.get("password", ""), stored["salt"], stored["iterations"]) == stored["hash"]
        return "User:" + user if ok else None

    def authorize(self, principal: str) -> str | None:
        if not self.conf.props.get("authorizer.class.name") or principal in self.conf.super_users:
            return None
        return f"org.apache.kafka.common.errors.ClusterAuthorizationException: {principal} is not authorized (no ACL)"

    def handle(self, req: Json, protocol: str = "PLAINTEXT") -> Json:
        if req.get("op") in {"view", "write"} and "tool" in req:
            error = self.authenticate(protocol, req.get("client") or {})
            if error:
                return {"error": error, "refused": True}
        ops: dict[str, Callable[[], Json]] = {
            "status": self.status, "view": self.view,
            "write": lambda: self.write(req["section"], req["key"], req["value"])}
        if "controller" in self.opened:
            ops |= {"voters": lambda: {"voters": self.voters},
                    "state": lambda: {"status": self.status(), "state": self.state},
                    "apply": lambda: self.apply({req["section"]: {req["key"]: req["value"]}})}
        op = ops.get(req.get("op", ""))
        return op() if op else {"error": f"unsupported request {req.get('op')!r}"}

    def open(self, role: str, names: list[str]) -> None:
        """Listen on the role's listeners; every connection gets its own thread."""
        if not names:
            fail(f"listeners has no {role} listener")
        for name in names:
            addr, protocol = self.conf.addrs[name], self.conf.protocols[name]
            try:
                listener = socket.create_server(addr)
            except OSError as exc:
                fail(f"Unable to open the {role} listener {addr[0]}:{addr[1]}: {exc}")
            threading.Thread(target=self.accept_forever, args=(listener, protocol), daemon=True).start()
            self.log(f"INFO [{role}] listener {name} ({protocol}) on {addr[0]}:{addr[1]}")
        self.opened = {**self.opened, role: time.time()}
        self.log(f"INFO [{role}] catching up for {CATCH_UP_S:g} s")

    def accept_forever(self, listener: socket.socket, protocol: str) -> None:
        while True:
            threading.Thread(target=self.answer, args=(listener.accept()[0], protocol), daemon=True).start()

    def answer(self, conn: socket.socket, protocol: str) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(15)
            try:
                reply = self.handle(json.loads(conn.makefile("rb").readline()), protocol)
            except (ValueError, KeyError, TypeError) as exc:
                reply = {"error": repr(exc)}
            conn.sendall(json.dumps(reply).encode() + b"\n")

    def sync_forever(self) -> None:
        while True:
            others = {i: a for i, a in self.find_voters().items() if i != self.conf.node_id}
            for reply in call_all(others, {"op": "state"}).values():
                if reply and "state" in reply:
                    self.apply(reply["state"])
            time.sleep(1)

    def register(self) -> bool:
        host, port = self.conf.advertised or ("", 0)
        entry = {"host": host, "port": port, "ts": time.time()}
        return bool(self.write("brokers", str(self.conf.node_id), entry)["ok"])

    def on_sigterm(self, *_: object) -> None:
        me = self.conf.node_id
        if "broker" in self.opened and self.lag("broker") == 0:
            view = self.view()
            out = sorted(i for i, s in view["broker_status"].items() if i != me and not (s and s["in_sync"]))
            rf, m = min(self.conf.rf, len(view["broker_status"])), self.conf.min_isr
            if out and len(out) + 1 > rf - m:
                self.event(f"UNSAFE node {me} stopped while node(s) {','.join(map(str, out))} were out of sync")
        self.event(f"STOPPED node {me}")
        os._exit(143)


def server(argv: list[str]) -> None:
    conf = Config(argv[0])
    check_log4j()
    check_security(conf)
    node = Node(conf)
    signal.signal(signal.SIGTERM, node.on_sigterm)
    node.event(f"STARTED node {conf.node_id}")
    if "controller" in conf.roles:
        node.open("controller", [conf.controller_name] if conf.controller_name else [])
        threading.Thread(target=node.sync_forever, daemon=True).start()
    if "broker" in conf.roles:
        deadline = time.monotonic() + conf.registration_s
        while not node.register():
            if time.monotonic() > deadline:
                node.event(f"FAILED node {conf.node_id}: broker registration timed out")
                node.log("ERROR Timed out waiting for the broker to register with the controller quorum; exiting")
                raise SystemExit(1)
            time.sleep(0.5)
        node.log(f"INFO [broker] node {conf.node_id} registered with the controller quorum")
        node.open("broker", conf.broker_names)
    time.sleep(CATCH_UP_S)
    node.event(f"IN_SYNC node {conf.node_id}")
    while True:
        time.sleep(3600)


# The tools: they ask a node for its view (or to write), then print Kafka's layout.
def client_credentials(argv: list[str]) -> Json:
    """What a tool presents from its --command-config (Kafka's client settings)."""
    path = opt(argv, "--command-config")
    if not path:
        return {"protocol": "PLAINTEXT"}
    try:
        p = props(path)
    except OSError as exc:
        fail(f"Error while reading the command config {path}: {exc.strerror}")
    client: Json = {"protocol": p.get("security.protocol", "PLAINTEXT")}
    if client["protocol"] in {"SSL", "SASL_SSL"}:
        if p.get("ssl.truststore.type") != "PEM":
            fail("the stand-in models PEM trust stores only (ssl.truststore.type=PEM)")
        client["trusts_ca"] = bool(readable_pem(p.get("ssl.truststore.location"), "truststore", key=False))
    if client["protocol"] == "SSL":
        if p.get("ssl.keystore.type") != "PEM":
            fail("the stand-in models PEM key stores only (ssl.keystore.type=PEM)")
        text = readable_pem(p.get("ssl.keystore.location"), "keystore", key=True)
        client["cert"] = text[text.index("-----BEGIN CERTIFICATE-----"):]
    if client["protocol"] == "SASL_SSL":
        if p.get("sasl.mechanism") != "SCRAM-SHA-512":
            fail("the stand-in models sasl.mechanism=SCRAM-SHA-512 only")
        jaas = p.get("sasl.jaas.config", "")
        found = dict(re.findall(r'(username|password)="([^"]*)"', jaas))
        client |= {"username": found.get("username", ""), "password": found.get("password", "")}
    return client


def cluster_view(argv: list[str], error: str, majority: bool = True) -> tuple[Addr, Json]:
    """The view of the first bootstrap server that answers within 5 s."""
    servers = [hostport(s) for s in split(opt(argv, "--bootstrap-server", "--bootstrap-controller"))]
    client = client_credentials(argv)
    deadline = time.monotonic() + 5
    while servers and time.monotonic() < deadline:
        for addr in servers:
            view = call(addr, {"op": "view", "tool": True, "client": client}, timeout=15)
            if view and view.get("refused"):
                fail(f"{error}{view['error']}")
            if view and "majority" in view:
                if majority and not view["majority"]:
                    fail(f"{error}{TIMEOUT} (no majority of the controller quorum answers)")
                return addr, view
        time.sleep(0.3)
    return fail(f"{error}{TIMEOUT} (no bootstrap server answers)")


def write(argv: list[str], addr: Addr, section: str, key: str, value: Json, *, error: str) -> None:
    request = {"op": "write", "tool": True, "client": client_credentials(argv), "section": section, "key": key,
               "value": {**value, "ts": time.time()}}
    reply = call(addr, request, 15)
    if reply and reply.get("refused"):
        fail(f"{error}{reply['error']}")
    if not (reply and reply.get("ok")):
        fail(f"{error}{TIMEOUT} (the write did not reach a majority of the voters)")


def place(brokers: list[int], first: int, last: int, rf: int, error: str) -> list[list[int]]:
    """Replicas of partitions first..last-1: partition p gets brokers[(p + i) % n] for i < rf."""
    if rf > len(brokers):
        fail(f"{error}org.apache.kafka.common.errors.InvalidReplicationFactorException: Replication factor: "
             f"{rf} larger than available brokers: {len(brokers)}.")
    return [[brokers[(p + i) % len(brokers)] for i in range(rf)] for p in range(first, last)]


def describe(all_topics: Json, names: list[str], in_sync: set[int], under: bool) -> None:
    for name in names:
        t = all_topics[name]
        if not under:
            print(f"Topic: {name}\tTopicId: {t['id']}\tPartitionCount: {len(t['partitions'])}\tReplicationFactor: "
                  f"{len(t['partitions'][0])}\tConfigs: {','.join(f'{k}={v}' for k, v in sorted(t['config'].items()))}")
        for p, replicas in enumerate(t["partitions"]):
            isr = [b for b in replicas if b in in_sync]
            if not under or len(isr) < len(replicas):
                print(f"\tTopic: {name}\tPartition: {p}\tLeader: {isr[0] if isr else 'none'}\t"
                      f"Replicas: {','.join(map(str, replicas))}\tIsr: {','.join(map(str, isr))}")


def topics(argv: list[str]) -> None:
    error = "Error while executing topic command : "
    addr, view = cluster_view(argv, error)
    all_topics, name = view["state"]["topics"], opt(argv, "--topic")
    live = sorted(int(i) for i, s in view["broker_status"].items() if s)
    if name and name not in all_topics and "--create" not in argv:
        fail(f"{error}Topic '{name}' does not exist as expected")
    if "--list" in argv:
        print("".join(f"{t}\n" for t in sorted(all_topics)), end="")
    elif "--describe" in argv:
        in_sync = {int(i) for i, s in view["broker_status"].items() if s and s["in_sync"]}
        describe(all_topics, [name] if name else sorted(all_topics), in_sync, "--under-replicated-partitions" in argv)
    elif "--create" in argv and name:
        if name in all_topics:
            fail(f"{error}Topic '{name}' already exists.")
        count, rf = int(opt(argv, "--partitions") or 1), int(opt(argv, "--replication-factor") or 1)
        config = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv[:-1]) if a == "--config")
        replicas = place(live, 0, count, rf, error)
        write(argv, addr, "topics", name, {"id": new_uuid(), "partitions": replicas, "config": config}, error=error)
        print(f"Created topic {name}.")
    elif "--alter" in argv and name:
        old, count = all_topics[name]["partitions"], int(opt(argv, "--partitions") or 0)
        if count <= len(old):
            fail(f"{error}org.apache.kafka.common.errors.InvalidPartitionsException: Topic currently has "
                 f"{len(old)} partitions, which is higher than the requested {count}.")
        grown = old + place(live, len(old), count, len(old[0]), error)
        write(argv, addr, "topics", name, {**all_topics[name], "partitions": grown}, error=error)
    else:
        fail("kafka-topics.sh (stand-in): use --list, --describe, --create or --alter (with --topic)")


SCRAM_VALUE = re.compile(r"(?:iterations=(-?[0-9]*),)?password=(.*)")


def user_configs(argv: list[str], name: str, error: str) -> None:
    """SCRAM credentials as Kafka's ConfigCommand handles them (--add-config or --add-config-file)."""
    addr, view = cluster_view(argv, error)
    users = view["state"].get("users", {})
    if "--alter" in argv:
        added: dict[str, str] = {}
        if opt(argv, "--add-config-file"):
            try:
                added |= props(opt(argv, "--add-config-file") or "")
            except OSError as exc:
                fail(f"{error}{opt(argv, '--add-config-file')}: {exc.strerror}")
        for pair in split(opt(argv, "--add-config")):  # the password on the command line: allowed, logged
            key, _, value = pair.partition("=")
            added[key] = value.strip("[]")
        credential = added.get("SCRAM-SHA-512", "")
        match = SCRAM_VALUE.fullmatch(credential)
        if not name or match is None:
            fail(f"{error}java.lang.IllegalArgumentException: Invalid credential property SCRAM-SHA-512 (no password=)")
        iterations = int(match[1]) if match[1] and match[1] != "-1" else 4096
        if iterations < 4096:
            fail(f"{error}Iterations {iterations} is less than the minimum 4096 required for SCRAM-SHA-512")
        salt = os.urandom(16).hex()
        entry = {"salt": salt, "iterations": iterations, "hash": scram_hash(match[2], salt, iterations)}
        write(argv, addr, "users", name, entry, error=error)
        print(f"Completed updating config for user {name}.")
        return
    for user in [name] if name else sorted(users):
        if user in users:
            print(f"SCRAM credential configs for user-principal '{user}' are "
                  f"SCRAM-SHA-512=iterations={users[user]['iterations']}")


def configs(argv: list[str]) -> None:
    name, error = opt(argv, "--entity-name") or "", "Error while executing config command : "
    if opt(argv, "--entity-type") == "users":
        user_configs(argv, name, error)
        return
    if opt(argv, "--entity-type") != "topics":
        fail("kafka-configs.sh (stand-in): only --entity-type topics and users are modelled")
    addr, view = cluster_view(argv, error)
    topic = view["state"]["topics"].get(name)
    if topic is None:
        fail(f"{error}org.apache.kafka.common.errors.UnknownTopicOrPartitionException: The topic '{name}' "
             "does not exist.")
    if "--alter" in argv:
        added = dict(pair.split("=", 1) for pair in split(opt(argv, "--add-config")))
        kept = {k: v for k, v in topic["config"].items() if k not in split(opt(argv, "--delete-config"))}
        write(argv, addr, "topics", name, {**topic, "config": {**kept, **added}}, error=error)
        print(f"Completed updating config for topic {name}.")
        return
    print(f"Dynamic configs for topic {name} are:")
    for k, v in sorted(topic["config"].items()):
        print(f"  {k}={v} sensitive=false synonyms={{DYNAMIC_TOPIC_CONFIG:{k}={v}}}")


def quorum_rows(view: Json) -> list[Json]:
    """One row per voter (the leader first) and per registered broker that is not a voter (observer)."""
    leader, rows = str(view["leader"]), []
    for i, v in sorted(view["voters"].items(), key=lambda kv: (kv[0] != leader, int(kv[0]))):
        s = v["status"]
        lag = 0 if i == leader else s["lag"] if s else DOWN_LAG
        kind, endpoint = "Leader" if i == leader else "Follower", f"CONTROLLER://{v['host']}:{v['port']}"
        rows.append({"id": int(i), "status": s, "lag": lag, "dir": v["dir"], "kind": kind, "endpoint": endpoint})
    for i, s in sorted(view["broker_status"].items(), key=lambda kv: int(kv[0])):
        if i not in view["voters"]:
            rows.append({"id": int(i), "status": s, "lag": s["broker_lag"] if s else DOWN_LAG, "kind": "Observer"})
    for row in rows:
        s = row["status"]
        row["dir"] = s["directory_id"] if s else row.get("dir", ZERO_UUID)
        row["leo"] = max(0, view["state"]["offset"] - row["lag"])
        row["fetch"] = int(s["time"] * 1000) if s else -1
        since = int(max(s["opened"].values(), default=0) * 1000) if s else -1
        row["caught_up"] = row["fetch"] if row["lag"] == 0 else since
        row["lag_ms"] = row["fetch"] - row["caught_up"] if s else DOWN_LAG
    return rows


def metadata_quorum(argv: list[str]) -> None:
    _, view = cluster_view(argv, "")
    rows = quorum_rows(view)
    if "--replication" in argv:
        print("NodeId\tDirectoryId\tLogEndOffset\tLag\tLastFetchTimestamp\tLastCaughtUpTimestamp\tStatus")
        for r in rows:
            print(f"{r['id']}\t{r['dir']}\t{r['leo']}\t{r['lag']}\t{r['fetch']}\t{r['caught_up']}\t{r['kind']}")
        return
    if "--status" not in argv:
        fail("kafka-metadata-quorum.sh (stand-in): use describe --status or describe --replication")
    followers = [r for r in rows if r["kind"] == "Follower"] or [{"lag": 0, "lag_ms": 0}]
    voters = [{"id": r["id"], "directoryId": r["dir"], "endpoints": [r["endpoint"]]}
              for r in sorted(rows, key=lambda r: r["id"]) if r["kind"] != "Observer"]
    observers = [{"id": r["id"], "directoryId": r["dir"]} for r in rows if r["kind"] == "Observer"]
    for key, value in [("ClusterId", view["cluster_id"]), ("LeaderId", view["leader"]), ("LeaderEpoch", 1),
                       ("HighWatermark", view["state"]["offset"]),
                       ("MaxFollowerLag", max(r["lag"] for r in followers)),
                       ("MaxFollowerLagTimeMs", max(r["lag_ms"] for r in followers)),
                       ("CurrentVoters", json.dumps(voters)), ("CurrentObservers", json.dumps(observers))]:
        print(f"{key + ':':<24}{value}")


def broker_api_versions(argv: list[str]) -> None:
    _, view = cluster_view(argv, "", majority=False)
    for i, s in sorted(view["broker_status"].items(), key=lambda kv: int(kv[0])):
        if s:
            b = view["state"]["brokers"][i]
            print(f"{b['host']}:{b['port']} (id: {i} rack: null isFenced: false) -> (\n\tProduce(0): 3 to 12 "
                  "[usable: 12],\n\tFetch(1): 4 to 17 [usable: 17],\n\tMetadata(3): 0 to 13 [usable: 13]\n)")


RESOURCE_FLAGS = {"--topic": "TOPIC", "--group": "GROUP", "--transactional-id": "TRANSACTIONAL_ID"}


def acls(argv: list[str]) -> None:
    """kafka-acls.sh --add (one principal, its operations, one resource) and --list, in Kafka's layout."""
    error = "Error while executing ACL command: "
    addr, view = cluster_view(argv, error)
    stored = view["state"].get("acls", {})
    if "--add" in argv:
        pattern = (opt(argv, "--resource-pattern-type") or "literal").upper()
        principal = opt(argv, "--allow-principal") or ""
        if not principal:
            fail(f"{error}--allow-principal is required")
        resources = [(kind, opt(argv, flag)) for flag, kind in RESOURCE_FLAGS.items() if opt(argv, flag)]
        resources += [("CLUSTER", "kafka-cluster")] if "--cluster" in argv else []
        operations = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--operation"]
        if len(resources) != 1 or not operations or pattern not in {"LITERAL", "PREFIXED"}:
            fail(f"{error}the stand-in models --add with one resource, --operation(s) and a literal/prefixed pattern")
        kind, name = resources[0]
        for operation in operations:
            op = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", operation).upper()
            key = f"{kind}|{name}|{pattern}|{principal}|{op}"
            write(argv, addr, "acls", key, {"kind": kind, "name": name, "pattern": pattern, "principal": principal,
                                            "operation": op}, error=error)
        print(f"Adding ACLs for resource `ResourcePattern(resourceType={kind}, name={name}, patternType={pattern})`:")
        return
    if "--list" not in argv:
        fail("kafka-acls.sh (stand-in): use --add or --list")
    by_resource: dict[tuple[str, str, str], list[Json]] = {}
    for entry in stored.values():
        by_resource.setdefault((entry["kind"], entry["name"], entry["pattern"]), []).append(entry)
    for (kind, name, pattern), entries in sorted(by_resource.items()):
        print(f"Current ACLs for resource `ResourcePattern(resourceType={kind}, name={name}, patternType={pattern})`: ")
        for e in sorted(entries, key=lambda e: (e["principal"], e["operation"])):
            print(f" \t(principal={e['principal']}, host=*, operation={e['operation']}, permissionType=ALLOW)")
        print()


def log_argv(tool: str, argv: list[str]) -> None:
    """One JSON line per tool run (not the server's): what a process listing would have shown."""
    with contextlib.suppress(OSError), open(os.environ.get("FAKE_KAFKA_ARGV_LOG", "/var/log/fake-kafka-argv.log"),
                                            "a") as fh:
        fh.write(json.dumps({"uid": os.getuid(), "argv": [tool, *argv]}) + "\n")


TOOLS = {"kafka-storage.sh": storage, "kafka-server-start.sh": server, "kafka-topics.sh": topics,
         "kafka-configs.sh": configs, "kafka-metadata-quorum.sh": metadata_quorum,
         "kafka-broker-api-versions.sh": broker_api_versions, "kafka-acls.sh": acls}

if __name__ == "__main__":
    if os.environ["FAKE_KAFKA_TOOL"] != "kafka-server-start.sh":
        log_argv(os.environ["FAKE_KAFKA_TOOL"], sys.argv[1:])
    TOOLS[os.environ["FAKE_KAFKA_TOOL"]](sys.argv[1:])
