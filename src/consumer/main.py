"""``candlestack consumer``: the poll -> write -> commit loop."""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

import psycopg2
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from candlestack import logs
from candlestack import metrics as metrics_endpoint
from candlestack.backoff import Backoff
from candlestack.settings import ConsumerSettings
from consumer import metrics
from consumer.batch import Batch, Record, build_batch
from consumer.store import TradeStore

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.5


def consumer_config(settings: ConsumerSettings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "group.id": settings.group_id,
        "client.id": "candlestack-consumer",
        # Offsets move only when a batch is durable in PostgreSQL (see commit()).
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        # A short session makes a restarted consumer rejoin in seconds instead of ~25 s.
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "fetch.wait.max.ms": 5,
        "logger": logging.getLogger("librdkafka"),
    }


def to_record(message: Message) -> Record:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None  # set on every fetched message
    return Record(topic, partition, offset, message.key(), message.value())


class IngestLoop:
    def __init__(self, settings: ConsumerSettings, *, stop: threading.Event) -> None:
        self._settings = settings
        self._stop = stop
        self._consumer = Consumer(consumer_config(settings))
        self._store = TradeStore(settings.postgres)
        self._linger_s = settings.batch_linger_ms / 1000

    def run(self) -> None:
        self._consumer.subscribe([self._settings.kafka.topic],
                                 on_assign=lambda _c, parts: log.info("partitions assigned", extra={
                                     "partitions": ",".join(str(p.partition) for p in parts)}),
                                 on_revoke=lambda _c, parts: log.info("partitions revoked", extra={
                                     "partitions": ",".join(str(p.partition) for p in parts)}))
        log.info("consumer started", extra={"topic": self._settings.kafka.topic, "group": self._settings.group_id})
        try:
            while not self._stop.is_set():
                records = self._poll()
                if records:
                    self._handle(build_batch(records))
        finally:
            self._consumer.close()
            self._store.close()
            log.info("consumer stopped")

    def _poll(self) -> list[Record]:
        """Wait for a first message, then take whatever else arrives within the linger time."""
        messages = self._consumer.consume(1, timeout=POLL_TIMEOUT_S)
        if messages and self._settings.batch_max_messages > 1:
            messages += self._consumer.consume(self._settings.batch_max_messages - 1, timeout=self._linger_s)
        records = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka error", extra={"error": str(error)})
                continue
            records.append(to_record(message))
        return records

    def _handle(self, batch: Batch) -> None:
        started = time.perf_counter()
        if not self._write(batch):
            return  # stopping while the database is unreachable: nothing committed, nothing lost
        self._commit(batch)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(batch.size)

    def _write(self, batch: Batch) -> bool:
        """Write until it succeeds; keeps the group membership alive while waiting."""
        backoff = Backoff(0.2, self._settings.retry_max_s)
        paused = False
        try:
            while True:
                try:
                    result = self._store.write(batch)
                    break
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    metrics.DB_ERRORS.inc()
                    self._store.discard_connection()
                    delay = backoff.next_delay()
                    log.warning("database write failed; retrying", extra={
                        "error": str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                        "retry_in_s": round(delay, 2), "batch": batch.size})
                    if not paused:
                        self._consumer.pause(self._consumer.assignment())
                        paused = True
                    if self._wait(delay, batch):
                        log.warning("stopping with an unwritten batch; it will be read again",
                                    extra={"batch": batch.size})
                        return False
        finally:
            if paused:
                self._consumer.resume(self._consumer.assignment())
        metrics.MESSAGES.labels("stored").inc(result.inserted)
        metrics.MESSAGES.labels("duplicate").inc(result.duplicates)
        metrics.MESSAGES.labels("dead_letter").inc(result.dead_letters)
        metrics.MESSAGES.labels("gap").inc(result.gaps)
        if result.dead_letters:
            log.warning("messages set aside as dead letters", extra={
                "count": result.dead_letters, "first_reason": batch.dead_letters[0].reason})
        log.debug("batch stored", extra={"inserted": result.inserted, "duplicates": result.duplicates})
        return True

    def _wait(self, delay_s: float, batch: Batch) -> bool:
        """Sleep while serving the group protocol; True if asked to stop."""
        deadline = time.monotonic() + delay_s
        while time.monotonic() < deadline and not self._stop.is_set():
            # Partitions are paused, so this only keeps heartbeats and rebalances going; any
            # message already fetched still belongs to this batch's successors: keep it.
            for message in self._consumer.consume(100, timeout=min(0.5, delay_s)):
                if message.error() is None:
                    extra = build_batch([to_record(message)])
                    batch.trades += extra.trades
                    batch.gaps += extra.gaps
                    batch.dead_letters += extra.dead_letters
                    for position, offset in extra.next_offsets.items():
                        batch.next_offsets[position] = max(batch.next_offsets.get(position, 0), offset)
        return self._stop.is_set()

    def _commit(self, batch: Batch) -> None:
        offsets = [TopicPartition(topic, partition, offset)
                   for (topic, partition), offset in sorted(batch.next_offsets.items())]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The rows are durable; if this commit is lost the messages come again and the
            # (symbol, trade_id) key drops them.
            metrics.COMMIT_ERRORS.inc()
            log.warning("offset commit failed", extra={"error": str(exc)})
            return
        metrics.LAST_COMMIT.set(time.time())
        for tp in offsets:
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high is not None and high >= 0:
                metrics.LAG.labels(str(tp.partition)).set(max(0, high - tp.offset))


def main() -> int:
    settings = ConsumerSettings.from_env()
    logs.setup(settings.log)
    metrics_endpoint.serve(settings.metrics)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping after the current batch", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    IngestLoop(settings, stop=stop).run()
    return 0
