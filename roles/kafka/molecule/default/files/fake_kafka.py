#!/usr/bin/env python3
"""Stand-in for the Apache Kafka scripts, packed into a fake release archive by prepare.yml.

Apache archives cannot be downloaded in CI. This fake proves the role's own logic
(checksum, unpack, format-once, unit, topic create/alter/config idempotence) - NOT that
a real Kafka starts with the rendered configuration. Dispatches on the script name.
"""
import json
import os
import signal
import socket
import sys
import threading
import uuid


def props(path):
    out = {}
    with open(path) as fh:
        for raw in fh:
            line = raw.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                out[key] = value
    return out


def arg(name, default=None):
    argv = sys.argv[1:]
    return argv[argv.index(name) + 1] if name in argv else default


def storage():
    conf = props(arg("--config"))
    for d in conf["log.dirs"].split(","):
        meta = os.path.join(d, "meta.properties")
        if os.path.exists(meta):
            if "--ignore-formatted" in sys.argv:
                print(f"All of the log directories are already formatted: {d}")
                continue
            sys.exit(f"Log directory {d} is already formatted")
        with open(meta, "w") as fh:
            fh.write(f"version=1\ncluster.id={arg('--cluster-id')}\nnode.id={conf['node.id']}\n"
                     f"directory.id={uuid.uuid4()}\n")
        with open(os.path.join(d, "format.log"), "a") as fh:
            fh.write("formatted\n")
        print(f"Formatting {d}")


def server():
    conf = props(sys.argv[1])
    socks = []
    for listener in conf["listeners"].split(","):
        host, port = listener.split("://", 1)[1].rsplit(":", 1)
        s = socket.create_server((host, int(port)))
        socks.append(s)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def serve(s):
        while True:
            conn, _ = s.accept()
            conn.close()

    for s in socks:
        threading.Thread(target=serve, args=(s,), daemon=True).start()
    print("fake kafka started", flush=True)
    signal.pause()


STATE = "/var/lib/kafka/fake-topics.json"


def load():
    return json.load(open(STATE)) if os.path.exists(STATE) else {}


def save(state):
    with open(STATE, "w") as fh:
        json.dump(state, fh)


def topics():
    state, name = load(), arg("--topic")
    if "--list" in sys.argv:
        print("\n".join(sorted(state)))
    elif "--describe" in sys.argv:
        if name not in state:
            sys.exit(f"Error while executing topic command : Topic '{name}' does not exist as expected")
        t = state[name]
        cfg = ",".join(f"{k}={v}" for k, v in sorted(t["config"].items()))
        print(f"Topic: {name}\tTopicId: x\tPartitionCount: {t['partitions']}\t"
              f"ReplicationFactor: {t['rf']}\tConfigs: {cfg}")
    elif "--create" in sys.argv:
        if name in state:
            sys.exit(f"Topic '{name}' already exists.")
        argv = sys.argv[1:]
        config = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--config")
        state[name] = {"partitions": int(arg("--partitions")), "rf": int(arg("--replication-factor")),
                       "config": config}
        save(state)
        print(f"Created topic {name}.")
    elif "--alter" in sys.argv:
        state[name]["partitions"] = int(arg("--partitions"))
        save(state)


def configs():
    state, name = load(), arg("--entity-name")
    if "--describe" in sys.argv:
        print(f"Dynamic configs for topic {name} are:")
        for k, v in sorted(state[name]["config"].items()):
            print(f"  {k}={v} sensitive=false synonyms={{DYNAMIC_TOPIC_CONFIG:{k}={v}}}")
    elif "--alter" in sys.argv:
        for pair in arg("--add-config").split(","):
            k, v = pair.split("=", 1)
            state[name]["config"][k] = v
        save(state)
        with open("/var/lib/kafka/fake-alter.log", "a") as fh:
            fh.write(arg("--add-config") + "\n")


{"kafka-storage.sh": storage, "kafka-server-start.sh": server,
 "kafka-topics.sh": topics, "kafka-configs.sh": configs}[os.environ["FAKE_KAFKA_TOOL"]]()
