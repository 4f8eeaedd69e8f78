"""Print the consumer group's lag as JSON: committed offsets against the end of each partition.

Run with the candlestack venv's Python on a pipeline host: ``python kafka_lag.py /etc/candlestack/consumer.env``.
It reads the broker, topic and group from the consumer's environment file and does not join the group.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition


def read_env(path: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in Path(path).read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip().strip('"') for key, value in pairs}


def main() -> int:
    env = read_env(sys.argv[1])
    topic = env["CANDLESTACK_KAFKA_TOPIC"]
    consumer = Consumer({"bootstrap.servers": env["CANDLESTACK_KAFKA_BOOTSTRAP_SERVERS"],
                         "group.id": env.get("CANDLESTACK_KAFKA_GROUP_ID", "candlestack-consumer"),
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in sorted(partitions)], timeout=10)
        # The end of each partition comes from the high watermark of a fetch response, read
        # from the committed offset on: Tansu answers every ListOffsets "latest" with 1.
        consumer.assign([TopicPartition(topic, tp.partition, max(tp.offset, 0)) for tp in committed])
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            consumer.consume(10_000, timeout=0.5)
        lag = {}
        for tp in committed:
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            lag[str(tp.partition)] = max(high, 0) - max(tp.offset, 0)
    finally:
        consumer.close()
    print(json.dumps({"lag": sum(lag.values()), "partitions": lag}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
