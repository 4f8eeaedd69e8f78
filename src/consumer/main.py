"""``candlestack consumer``: the poll -> write -> commit loop."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg2
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, TopicPartition

from candlestack.consumer import metrics
from candlestack.consumer.batch import Batch, Record, build_batch
from candlestack.consumer.position import start_position
from candlestack.consumer.store import TradeStore, WriteResult
from candlestack.core import logs
from candlestack.core import metrics as metrics_endpoint
from candlestack.core.backoff import Backoff
from candlestack.core.contract import Bounds
from candlestack.core.errors import first_line
from candlestack.core.lifecycle import stop_on_signals
from candlestack.core.settings import ConsumerSettings

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.5
# How long the broker may hold a fetch open while it has nothing new. Apache Kafka answers as
# soon as one byte is there, so this only spaces out idle fetches. Tansu 0.6 (the lab broker)
# answers a fetch in time that grows with the partition's length: at 5 ms the consumer kept it
# busy for 87% of a core at 12,000 messages and fell behind a 20 trades/s feed for good.
FETCH_WAIT_MAX_MS = 250
# A group join takes seconds; this long without a partition means ingestion has stopped.
UNASSIGNED_WARN_S = 60.0


def consumer_config(settings: ConsumerSettings) -> dict[str, Any]:
    return {
        # Brokers, and TLS and the consumer's SCRAM user when the brokers ask for them.
        **settings.kafka.client_config(),
        "group.id": settings.group_id,
        "client.id": "candlestack-consumer",
        # Static membership: closing sends no LeaveGroup, and a consumer restarted within the
        # session timeout takes its partitions back without a rebalance of the group. It also
        # sidesteps a Tansu 0.6 fault: a LeaveGroup sent while the group is still joining (a
        # restart in the first ~3 s) leaves it rebalancing forever, with no partition assigned.
        "group.instance.id": f"{settings.group_id}-{socket.gethostname()}",
        # Offsets move only when a batch is durable in PostgreSQL (see commit()).
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        # A short session makes a restarted consumer rejoin in seconds instead of ~25 s.
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
        "logger": logging.getLogger("librdkafka"),
    }


class AssignmentWatch:
    """Tracks whether the consumer holds partitions, and says so when it has held none for long.

    A consumer waiting for its group forever looks healthy to systemd; this is its only voice.
    """

    def __init__(self, *, warn_after_s: float = UNASSIGNED_WARN_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._warn_after_s = warn_after_s
        self._clock = clock
        self._unassigned_since: float | None = clock()
        self._last_warning: float | None = None
        metrics.ASSIGNED.set(0)

    def assigned(self, count: int) -> None:
        metrics.ASSIGNED.set(count)
        self._unassigned_since = None if count else self._clock()
        self._last_warning = None

    def overdue_s(self) -> float | None:
        """Seconds without a partition, when a warning is due now (at most one a minute)."""
        if self._unassigned_since is None:
            return None
        now = self._clock()
        waited = now - self._unassigned_since
        if waited < self._warn_after_s or (self._last_warning is not None and now - self._last_warning < 60):
            return None
        self._last_warning = now
        return waited


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
        self._assignment = AssignmentWatch()

    def run(self) -> None:
        self._consumer.subscribe([self._settings.kafka.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("consumer started", extra={"topic": self._settings.kafka.topic, "group": self._settings.group_id})
        # One writer thread: batch N is written to PostgreSQL (psycopg2 releases the GIL while it
        # waits) while this thread fetches and decodes batch N+1. Offsets of N are committed only
        # after its transaction committed, exactly as in a sequential loop.
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-writer")
        in_flight: tuple[Batch, Future[WriteResult], float] | None = None
        try:
            while True:
                stopping = self._stop.is_set()
                records = [] if stopping else self._poll()
                self._warn_if_unassigned()
                batch = build_batch(records, self._bounds()) if records else None
                if in_flight is not None:
                    batch = self._finish(*in_flight, following=batch)
                    in_flight = None
                if batch is not None:
                    in_flight = (batch, writer.submit(self._store.write_isolating, batch), time.perf_counter())
                elif stopping:
                    break
        finally:
            writer.shutdown(wait=True)
            self._consumer.close()
            self._store.close()
            log.info("consumer stopped")

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assignment.assigned(len(partitions))
        log.info("partitions assigned", extra={"partitions": ",".join(str(p.partition) for p in partitions)})
        starts = self._starts(consumer, partitions)
        if starts is None:
            return
        assigned, moved = starts
        consumer.assign(assigned)
        if moved:
            # The group's offset follows at once: a partition with nothing new to read would
            # otherwise keep the old one (and show lag) until its next message.
            self._commit_offsets(moved)

    def _starts(self, consumer: Consumer,
                partitions: list[TopicPartition]) -> tuple[list[TopicPartition], list[TopicPartition]] | None:
        """The assigned partitions with the offsets to start from (see position.start_position),
        and those whose start differs from the group's offset.

        None, i.e. the group's offsets, when the database's position or Kafka's cannot be read.
        """
        try:
            stored = self._store.positions(self._settings.kafka.topic)
            committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
            # Only the first kept offset: see start_position for why not the end.
            first_kept = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[0] for tp in partitions}
        except (psycopg2.Error, KafkaException) as exc:
            log.warning("could not compare the database's position with the group's; starting from the group's",
                        extra={"error": first_line(exc)})
            return None
        starts, moved = [], []
        for tp in partitions:
            group = committed.get(tp.partition)
            group = group if group is not None and group >= 0 else None
            start = start_position(stored.get(tp.partition), group, first_kept[tp.partition])
            if start.offset is not None and start.offset != group:
                log.info("partition starts apart from the group's offset", extra={
                    "partition": tp.partition, "offset": start.offset, "group_offset": group,
                    "reason": start.reason})
                moved.append(TopicPartition(tp.topic, tp.partition, start.offset))
            offset = OFFSET_INVALID if start.offset is None else start.offset
            starts.append(TopicPartition(tp.topic, tp.partition, offset))
        return starts, moved

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assignment.assigned(0)
        log.info("partitions revoked", extra={"partitions": ",".join(str(p.partition) for p in partitions)})

    def _warn_if_unassigned(self) -> None:
        waited = self._assignment.overdue_s()
        if waited is not None:
            log.warning("no partition assigned: nothing is being ingested", extra={
                "waited_s": round(waited), "group": self._settings.group_id, "topic": self._settings.kafka.topic})

    def _bounds(self) -> Bounds:
        """What the contract accepts for messages read now (the clock is read once per batch)."""
        return Bounds.at(int(time.time() * 1000), symbols=self._settings.symbols)

    def _finish(self, batch: Batch, write: Future[WriteResult], started: float,
                *, following: Batch | None) -> Batch | None:
        """Wait for ``batch``'s write and commit its offsets; returns the batch to write next.

        If the write failed, ``following`` (already fetched) joins ``batch`` and both go through
        the retrying path: their offsets must never be committed ahead of their rows.
        """
        try:
            result = write.result()
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            metrics.DB_ERRORS.inc()
            self._store.discard_connection()
            log.warning("database write failed; retrying", extra={"error": first_line(exc), "batch": batch.size})
            if following is not None:
                batch.absorb(following)
            if self._write(batch):
                self._commit(batch)
            return None
        self._record(batch, result)
        self._commit(batch)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(batch.size)
        return following

    def _poll(self) -> list[Record]:
        """Wait for a first message, then take whatever else arrives within the linger time."""
        messages = self._consumer.consume(1, timeout=POLL_TIMEOUT_S)
        if messages and self._settings.batch_max_messages > 1:
            messages += self._consumer.consume(self._settings.batch_max_messages - 1, timeout=self._linger_s)
        records = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    # E.g. another consumer joined with this host's group.instance.id: exit and
                    # let systemd restart us rather than poll a consumer that cannot recover.
                    raise KafkaException(error)
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka error", extra={"error": str(error)})
                continue
            records.append(to_record(message))
        return records

    def _write(self, batch: Batch) -> bool:
        """Write until it succeeds; keeps the group membership alive while waiting.

        Returns False when asked to stop while the database is unreachable: nothing is
        committed then, and the batch is read again after a restart.
        """
        backoff = Backoff(0.2, self._settings.retry_max_s)
        self._consumer.pause(self._consumer.assignment())
        try:
            while True:
                delay = backoff.next_delay()
                if self._wait(delay, batch):
                    log.warning("stopping with an unwritten batch; it will be read again",
                                extra={"batch": batch.size})
                    return False
                try:
                    result = self._store.write_isolating(batch)
                    break
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    metrics.DB_ERRORS.inc()
                    self._store.discard_connection()
                    log.warning("database write failed; retrying", extra={
                        "error": first_line(exc), "retry_in_s": round(delay, 2), "batch": batch.size})
        finally:
            self._consumer.resume(self._consumer.assignment())
        log.info("database write succeeded after retrying", extra={"batch": batch.size})
        self._record(batch, result)
        return True

    def _record(self, batch: Batch, result: WriteResult) -> None:
        metrics.MESSAGES.labels("stored").inc(result.inserted)
        metrics.MESSAGES.labels("duplicate").inc(result.duplicates)
        metrics.MESSAGES.labels("dead_letter").inc(result.dead_letters)
        metrics.MESSAGES.labels("gap").inc(result.gaps)
        if batch.dead_letters:
            # Refused messages were logged one by one as they were isolated.
            log.warning("messages set aside as dead letters", extra={
                "count": len(batch.dead_letters), "first_reason": batch.dead_letters[0].reason})

    def _wait(self, delay_s: float, batch: Batch) -> bool:
        """Sleep while serving the group protocol; True if asked to stop."""
        deadline = time.monotonic() + delay_s
        while time.monotonic() < deadline and not self._stop.is_set():
            # Partitions are paused, so this only keeps heartbeats and rebalances going; a
            # message fetched before the pause still comes after this batch: it joins it.
            records = [to_record(message) for message in self._consumer.consume(100, timeout=min(0.5, delay_s))
                       if message.error() is None]
            if records:
                batch.absorb(build_batch(records, self._bounds()))
        return self._stop.is_set()

    def _commit(self, batch: Batch) -> None:
        self._commit_offsets([TopicPartition(topic, partition, offset)
                              for (topic, partition), offset in sorted(batch.next_offsets.items())])

    def _commit_offsets(self, offsets: list[TopicPartition]) -> None:
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
    stop = stop_on_signals(log, "stopping after the current batch")
    IngestLoop(settings, stop=stop).run()
    return 0
