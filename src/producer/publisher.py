"""Kafka side of the producer: idempotent, acks=all, keyed by symbol, never drops silently."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message, Producer

from candlestack.core.contract import Gap, Trade
from candlestack.core.settings import KafkaSettings
from candlestack.producer import metrics

log = logging.getLogger(__name__)


def producer_config(kafka: KafkaSettings, *, buffer_max_messages: int) -> dict[str, Any]:
    return {
        # Brokers, and TLS and the producer's SCRAM user when the brokers ask for them.
        **kafka.client_config(),
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


class DeliveryListener(Protocol):
    """Told what the broker acknowledged (see :class:`producer.state.Progress`)."""

    def trade_acked(self, symbol: str, trade_id: int) -> None: ...

    def gap_acked(self, symbol: str, to_id: int, *, pending: bool) -> None: ...

    def delivery_failed(self, symbol: str) -> None: ...


class Publisher:
    def __init__(self, kafka: KafkaSettings, *, buffer_max_messages: int,
                 listener: DeliveryListener | None = None) -> None:
        self._topic = kafka.topic
        self._producer = Producer(producer_config(kafka, buffer_max_messages=buffer_max_messages),
                                  logger=logging.getLogger("librdkafka"))
        self._listener = listener
        self.delivery_errors = 0

    def _on_delivery(self, message: Trade | Gap, err: KafkaError | None, msg: Message) -> None:
        """Runs once per message, inside poll()/flush(): keep it cheap."""
        listener = self._listener
        if err is not None:
            self.delivery_errors += 1
            metrics.DELIVERY_ERRORS.inc()
            log.error("delivery failed", extra={"error": str(err), "key": msg.key()})
            if listener is not None:
                listener.delivery_failed(message.symbol)
        elif listener is None:
            return
        elif type(message) is Trade:
            listener.trade_acked(message.symbol, message.trade_id)
        elif isinstance(message, Gap):
            listener.gap_acked(message.symbol, message.to_id, pending=message.pending)

    def publish(self, message: Trade | Gap) -> None:
        """Queue one message; blocks (serving delivery reports) while the local queue is full."""
        payload = message.to_json()
        on_delivery = partial(self._on_delivery, message)
        warned = False
        while True:
            try:
                self._producer.produce(self._topic, key=message.key, value=payload, on_delivery=on_delivery)
                break
            except BufferError:
                if not warned:
                    log.warning("local Kafka queue full; pausing the feed until the broker catches up")
                    metrics.BACKPRESSURE.inc()
                    warned = True
                self._producer.poll(0.1)
        self._producer.poll(0)
        metrics.QUEUED.set(len(self._producer))

    def poll(self) -> None:
        """Serve pending delivery reports without producing (the stream is quiet)."""
        self._producer.poll(0)

    def queued(self) -> int:
        return len(self._producer)

    def flush(self, timeout_s: float) -> int:
        """Wait for outstanding deliveries; returns how many are still queued."""
        return int(self._producer.flush(timeout_s))
