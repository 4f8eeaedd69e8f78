"""Sorting one poll's messages into trades, gaps and dead letters (pure; no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from candlestack.contract import Gap, Trade, decode
from candlestack.errors import ContractError


@dataclass(frozen=True, slots=True)
class Record:
    """What the consumer needs of a Kafka message (decoupled from confluent_kafka for tests)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: Record
    field: str
    reason: str


@dataclass(slots=True)
class Batch:
    trades: list[Trade] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # (topic, partition) -> next offset to read, i.e. what to commit once the batch is durable.
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.trades) + len(self.gaps) + len(self.dead_letters)

    def absorb(self, other: Batch) -> None:
        """Append a later batch, so both are written and committed together."""
        self.trades += other.trades
        self.gaps += other.gaps
        self.dead_letters += other.dead_letters
        for position, offset in other.next_offsets.items():
            self.next_offsets[position] = max(self.next_offsets.get(position, 0), offset)

    def trade_days(self) -> tuple[date, date] | None:
        """First and last UTC day of the trades, for partition management."""
        if not self.trades:
            return None
        times = [trade.trade_time for trade in self.trades]
        return (datetime.fromtimestamp(min(times) / 1000, UTC).date(),
                datetime.fromtimestamp(max(times) / 1000, UTC).date())


def build_batch(records: list[Record]) -> Batch:
    batch = Batch()
    for record in records:
        try:
            message = decode(record.value)
        except ContractError as exc:
            batch.dead_letters.append(DeadLetter(record, exc.field, exc.reason))
        else:
            if isinstance(message, Trade):
                batch.trades.append(message)
            else:
                batch.gaps.append(message)
        position = (record.topic, record.partition)
        batch.next_offsets[position] = max(batch.next_offsets.get(position, 0), record.offset + 1)
    return batch
