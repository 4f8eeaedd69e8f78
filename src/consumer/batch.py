"""Sorting one poll's messages into trades, gaps and dead letters (pure; no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from candlestack.core.contract import NO_BOUNDS, Bounds, Gap, Trade, decode
from candlestack.core.errors import ContractError

# A dead letter's reason is for people; the payload itself is kept next to it.
MAX_REASON_CHARS = 500


# Not frozen, like contract.Trade: one is built for every message.
@dataclass(slots=True)
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

    @classmethod
    def of(cls, record: Record, field: str, reason: str) -> DeadLetter:
        """A dead letter whose reason PostgreSQL can store: short, and free of NUL."""
        return cls(record, field[:MAX_REASON_CHARS], reason[:MAX_REASON_CHARS].replace("\x00", "\\x00"))


@dataclass(slots=True)
class Batch:
    """Decoded messages of one or more polls, written and committed together.

    ``trade_records[i]`` is the Kafka record of ``trades[i]`` (likewise for gaps), so that a
    message the database refuses can be set aside with its raw payload.
    """

    trades: list[Trade] = field(default_factory=list)
    trade_records: list[Record] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    gap_records: list[Record] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # (topic, partition) -> next offset to read, i.e. what to commit once the batch is durable.
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.trades) + len(self.gaps) + len(self.dead_letters)

    @property
    def messages(self) -> int:
        """Trades and gaps, i.e. what the database may still refuse."""
        return len(self.trades) + len(self.gaps)

    def absorb(self, other: Batch) -> None:
        """Append a later batch, so both are written and committed together."""
        self.trades += other.trades
        self.trade_records += other.trade_records
        self.gaps += other.gaps
        self.gap_records += other.gap_records
        self.dead_letters += other.dead_letters
        for position, offset in other.next_offsets.items():
            self.next_offsets[position] = max(self.next_offsets.get(position, 0), offset)

    def trade_days(self) -> list[date]:
        """The distinct UTC days of the trades, in order, for partition management."""
        days = {trade.trade_time // 86_400_000 for trade in self.trades}
        return [datetime.fromtimestamp(day * 86_400, UTC).date() for day in sorted(days)]

    def halves(self) -> tuple[Batch, Batch]:
        """Split the trades and gaps in two (dead letters and offsets stay behind).

        Each half holds about half the messages; both must be written before the parent's
        offsets may be committed.
        """
        cut = self.messages // 2
        cut_trades = min(cut, len(self.trades))
        cut_gaps = cut - cut_trades
        first = Batch(trades=self.trades[:cut_trades], trade_records=self.trade_records[:cut_trades],
                      gaps=self.gaps[:cut_gaps], gap_records=self.gap_records[:cut_gaps])
        second = Batch(trades=self.trades[cut_trades:], trade_records=self.trade_records[cut_trades:],
                       gaps=self.gaps[cut_gaps:], gap_records=self.gap_records[cut_gaps:])
        return first, second

    def only_record(self) -> Record:
        """The record of a batch holding a single trade or gap."""
        records = self.trade_records + self.gap_records
        if len(records) != 1:
            raise ValueError(f"batch holds {len(records)} messages, not one")
        return records[0]


def decode_record(record: Record, bounds: Bounds) -> Trade | Gap | DeadLetter:
    """Decode one record; whatever a hostile payload raises makes it a dead letter."""
    try:
        return decode(record.value, bounds)
    except ContractError as exc:
        return DeadLetter.of(record, exc.field, exc.reason)
    except Exception as exc:  # one message must never stop the consumer
        return DeadLetter.of(record, "value", f"undecodable: {type(exc).__name__}: {exc}")


def build_batch(records: list[Record], bounds: Bounds = NO_BOUNDS) -> Batch:
    batch = Batch()
    for record in records:
        message = decode_record(record, bounds)
        if isinstance(message, Trade):
            batch.trades.append(message)
            batch.trade_records.append(record)
        elif isinstance(message, Gap):
            batch.gaps.append(message)
            batch.gap_records.append(record)
        else:
            batch.dead_letters.append(message)
        position = (record.topic, record.partition)
        batch.next_offsets[position] = max(batch.next_offsets.get(position, 0), record.offset + 1)
    return batch
