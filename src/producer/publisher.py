"""Kafka side of the producer: idempotent, acks=all, keyed by symbol, never drops silently."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from candlestack.contract import Gap, Trade
from candlestack.settings import KafkaSettings
from producer import metrics

log = logging.getLogger(__name__)


def producer_config(kafka: KafkaSettings, *, buffer_max_messages: int) -> dict[str, Any]:
    return {
        "bootstrap.servers": kafka.bootstrap_servers,
        "client.id": "candlestack-producer",
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 5,
        # The bound of what we hold while the broker is away. When it is full, publish()
        # blocks the WebSocket reader: backpressure instead of loss.
        "queue.buffering.max.messages": buffer_max_messages,
        # 0 = retry forever: a message leaves the queue only when the broker has it.
        "message.timeout.ms": 0,
    }


class Publisher:
    def __init__(self, kafka: KafkaSettings, *, buffer_max_messages: int) -> None:
        self._topic = kafka.topic
        self._producer = Producer(producer_config(kafka, buffer_max_messages=buffer_max_messages),
                                  logger=logging.getLogger("librdkafka"))
        self.delivery_errors = 0

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.delivery_errors += 1
            metrics.DELIVERY_ERRORS.inc()
            log.error("delivery failed", extra={"error": str(err), "key": msg.key()})

    def publish(self, message: Trade | Gap) -> None:
        """Queue one message; blocks (serving delivery reports) while the local queue is full."""
        payload = message.to_json()
        warned = False
        while True:
            try:
                self._producer.produce(self._topic, key=message.key, value=payload, on_delivery=self._on_delivery)
                break
            except BufferError:
                if not warned:
                    log.warning("local Kafka queue full; pausing the feed until the broker catches up")
                    metrics.BACKPRESSURE.inc()
                    warned = True
                self._producer.poll(0.1)
        self._producer.poll(0)
        metrics.QUEUED.set(len(self._producer))

    def queued(self) -> int:
        return len(self._producer)

    def flush(self, timeout_s: float) -> int:
        """Wait for outstanding deliveries; returns how many are still queued."""
        return int(self._producer.flush(timeout_s))
