"""Writing a batch to PostgreSQL in one transaction: COPY to a staging table, then one
INSERT ... ON CONFLICT DO NOTHING into the partitioned trades table."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, replace
from datetime import date

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2.extras import execute_values

from candlestack.consumer import metrics
from candlestack.consumer.batch import Batch, DeadLetter
from candlestack.core import db
from candlestack.core.contract import Gap, Trade
from candlestack.core.settings import PostgresSettings

log = logging.getLogger(__name__)

STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS trades_stage (
    symbol text, trade_id bigint, stream text, price numeric, qty numeric,
    first_trade_id bigint, last_trade_id bigint, trade_ms bigint, event_ms bigint,
    buyer_is_maker boolean, ingest_ms bigint
) ON COMMIT DELETE ROWS
"""

STAGE_COLUMNS = ("symbol", "trade_id", "stream", "price", "qty", "first_trade_id", "last_trade_id",
                 "trade_ms", "event_ms", "buyer_is_maker", "ingest_ms")

# Inserts new trades, skips known ones, and keeps symbol_state current, in one statement.
# Times arrive as integer ms and are converted exactly (no float on the way). Only the symbol
# of each inserted row comes back (for the per-symbol count); the newest trade per symbol is
# taken from the small staging table.
MERGE_SQL = """
WITH inserted AS (
    INSERT INTO trades (symbol, trade_id, stream, price, qty, first_trade_id, last_trade_id,
                        trade_time, event_time, buyer_is_maker, ingest_time)
    SELECT symbol, trade_id, stream, price, qty, first_trade_id, last_trade_id,
           timestamptz 'epoch' + trade_ms * interval '1 millisecond',
           timestamptz 'epoch' + event_ms * interval '1 millisecond',
           buyer_is_maker,
           timestamptz 'epoch' + ingest_ms * interval '1 millisecond'
    FROM trades_stage
    ON CONFLICT DO NOTHING
    RETURNING symbol
), counts AS (
    SELECT symbol, count(*) AS stored FROM inserted GROUP BY symbol
), newest AS (
    SELECT DISTINCT ON (symbol) symbol, trade_id, price,
           timestamptz 'epoch' + trade_ms * interval '1 millisecond' AS trade_time
    FROM trades_stage
    ORDER BY symbol, trade_ms DESC, trade_id DESC
), state AS (
    INSERT INTO symbol_state AS s (symbol, last_trade_id, last_price, last_trade_time, last_stored_at, trades_stored)
    SELECT n.symbol, n.trade_id, n.price, n.trade_time, now(), coalesce(c.stored, 0)
    FROM newest n LEFT JOIN counts c USING (symbol)
    ON CONFLICT (symbol) DO UPDATE SET
        trades_stored = s.trades_stored + EXCLUDED.trades_stored,
        last_stored_at = EXCLUDED.last_stored_at,
        last_trade_id = CASE WHEN (EXCLUDED.last_trade_time, EXCLUDED.last_trade_id)
                                  > (s.last_trade_time, s.last_trade_id)
                             THEN EXCLUDED.last_trade_id ELSE s.last_trade_id END,
        last_price = CASE WHEN (EXCLUDED.last_trade_time, EXCLUDED.last_trade_id)
                               > (s.last_trade_time, s.last_trade_id)
                          THEN EXCLUDED.last_price ELSE s.last_price END,
        last_trade_time = GREATEST(s.last_trade_time, EXCLUDED.last_trade_time)
)
SELECT coalesce(sum(stored), 0) FROM counts
"""

DEAD_LETTER_SQL = """
INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, message_key, payload, field, reason)
VALUES %s ON CONFLICT DO NOTHING
"""

# A range reported again keeps its first reason and time; it stays pending only while every
# report of it says pending (the producer's "gave up" wins over its earlier "still trying").
GAP_SQL = """
INSERT INTO ingest_gaps AS g (symbol, stream, from_id, to_id, reason, detected_at, pending)
VALUES %s
ON CONFLICT (symbol, stream, from_id, to_id) DO UPDATE SET pending = g.pending AND EXCLUDED.pending
WHERE g.pending AND NOT EXCLUDED.pending
"""

# The consumer's position, in the transaction of the rows it covers (see migration 0006). An
# offset may go down: after a broker that lost its log (Tansu restarted) the topic starts at 0.
OFFSETS_SQL = """
INSERT INTO kafka_offsets (topic, kafka_partition, next_offset) VALUES %s
ON CONFLICT (topic, kafka_partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()
"""

POSITIONS_SQL = "SELECT kafka_partition, next_offset FROM kafka_offsets WHERE topic = %s"


@dataclass(frozen=True, slots=True)
class WriteResult:
    inserted: int
    duplicates: int
    dead_letters: int
    gaps: int
    # Of dead_letters: messages the database refused (set aside by write_isolating()).
    refused: tuple[DeadLetter, ...] = ()

    def plus(self, other: WriteResult) -> WriteResult:
        return WriteResult(inserted=self.inserted + other.inserted, duplicates=self.duplicates + other.duplicates,
                           dead_letters=self.dead_letters + other.dead_letters, gaps=self.gaps + other.gaps,
                           refused=self.refused + other.refused)


def is_data_error(exc: BaseException) -> bool:
    """Did PostgreSQL refuse the batch for what it holds (rather than for connection trouble)?

    Retrying such a batch fails the same way forever; splitting it finds the message(s) at
    fault. OperationalError (server gone, lock timeout, deadlock, cancel) and InterfaceError
    (connection closed) are transient and go to the caller's retry instead. ProgrammingError
    (SQLSTATE class 42: a missing function or table, a missing privilege) is not a data error
    either: splitting would set every message aside, so it stops the consumer instead, loudly.
    """
    return isinstance(exc, (
        psycopg2.DataError,                # class 22: a value out of range, bad text (NUL), bad number
        psycopg2.IntegrityError,           # class 23: a CHECK, NOT NULL or unique constraint
        psycopg2.errors.RaiseException,    # P0001: a trigger or function refusing a row
        psycopg2.errors.AssertFailure,     # P0004: the same, by ASSERT
    ))


def unique_gaps(gaps: list[Gap]) -> list[Gap]:
    """One report per range (an upsert may touch a row only once per statement); pending only
    if every report of the range in the batch is pending."""
    merged: dict[tuple[str, str, int, int], Gap] = {}
    for gap in gaps:
        key = (gap.symbol, gap.stream, gap.from_id, gap.to_id)
        first = merged.get(key)
        merged[key] = gap if first is None else replace(first, pending=first.pending and gap.pending)
    return list(merged.values())


def copy_line(t: Trade) -> str:
    """One row of ``trades_stage`` in COPY text format, columns as in STAGE_COLUMNS.

    One f-string, as this runs for every message. A validated trade holds ints, an alnum symbol,
    a stream name and decimal strings: no tab, newline or backslash to escape.
    """
    first = r"\N" if t.first_trade_id is None else t.first_trade_id
    last = r"\N" if t.last_trade_id is None else t.last_trade_id
    maker = "t" if t.buyer_is_maker else "f"
    return (f"{t.symbol}\t{t.trade_id}\t{t.stream}\t{t.price}\t{t.qty}\t{first}\t{last}\t"
            f"{t.trade_time}\t{t.event_time}\t{maker}\t{t.ingest_time}\n")


def _error_line(exc: psycopg2.Error) -> str:
    text = (exc.pgerror or str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class TradeStore:
    """One connection, reused across batches; reconnects after a failure."""

    def __init__(self, settings: PostgresSettings) -> None:
        self._settings = settings
        self._conn: psycopg2.extensions.connection | None = None
        self._known_days: set[date] = set()

    def _connection(self) -> psycopg2.extensions.connection:
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(self._settings)
            with self._conn, self._conn.cursor() as cur:
                cur.execute(STAGE_DDL)
        return self._conn

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None

    def discard_connection(self) -> None:
        """Forget a connection that failed; the next write opens a new one."""
        try:
            self.close()
        except psycopg2.Error:
            self._conn = None

    def positions(self, topic: str) -> dict[int, int]:
        """The next offset to read of each partition of ``topic``, as the database holds it.

        On a connection of its own: the writer thread may be using the store's at the time.
        """
        conn = db.connect(self._settings)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(POSITIONS_SQL, (topic,))
                return {int(partition): int(offset) for partition, offset in cur.fetchall()}
        finally:
            conn.close()

    def write_isolating(self, batch: Batch) -> WriteResult:
        """Write the batch; if PostgreSQL refuses it for its data, set the culprits aside.

        The batch is bisected: each half is written in its own transaction, and a half that is
        refused again is split again, down to single messages. Those become dead letters with
        the database's error as the reason; everything else is stored. On return all of it is
        durable, so the batch's offsets may be committed. A crash half-way is harmless: the
        batch is read again, and stored rows and dead letters are not duplicated.

        Raises:
            psycopg2.OperationalError, psycopg2.InterfaceError: connection trouble; retry the batch.
        """
        try:
            return self.write(batch)
        except psycopg2.Error as exc:
            # Contract dead letters alone cannot be refused (their text is sanitised); if they
            # were, splitting would not help, so the error goes up.
            if not is_data_error(exc) or not batch.messages:
                raise
            error = exc
        if batch.messages == 1:
            return self._refuse(batch, error)
        metrics.SPLITS.inc()
        # The contract's dead letters do not depend on the rest: they go with the first half.
        first, second = batch.halves()
        first.dead_letters = batch.dead_letters
        result = self.write_isolating(first).plus(self.write_isolating(second))
        # Both halves are durable: only now may the position move past them. (A half split again
        # carries no offsets: its parent writes them.)
        if batch.next_offsets:
            self.write(Batch(next_offsets=batch.next_offsets))
        return result

    def _refuse(self, batch: Batch, exc: psycopg2.Error) -> WriteResult:
        """Set the single message of ``batch`` aside, with the database's error as the reason."""
        record = batch.only_record()
        # PostgreSQL names the column for some errors (NOT NULL); otherwise the whole message.
        field = getattr(exc.diag, "column_name", None) or "value"
        letter = DeadLetter.of(record, field, f"refused by the database: {type(exc).__name__}: {_error_line(exc)}")
        metrics.REFUSED.inc()
        log.warning("message refused by the database; set aside as a dead letter", extra={
            "topic": record.topic, "partition": record.partition, "offset": record.offset, "error": letter.reason})
        result = self.write(Batch(dead_letters=[*batch.dead_letters, letter], next_offsets=batch.next_offsets))
        return replace(result, refused=(letter,))

    def write(self, batch: Batch) -> WriteResult:
        """Write the whole batch atomically; on return it is durable (committed)."""
        conn = self._connection()
        inserted = 0
        with conn, conn.cursor() as cur:  # commits on success, rolls back on error
            # Only the days the batch holds: a far-future trade must not create every day up to it.
            new_days = [day for day in batch.trade_days() if day not in self._known_days]
            if new_days:
                cur.execute("SELECT ensure_trade_partitions_on(%s::date[])", (new_days,))
            if batch.trades:
                buffer = io.StringIO("".join(map(copy_line, batch.trades)))
                cur.copy_from(buffer, "trades_stage", columns=STAGE_COLUMNS)
                cur.execute(MERGE_SQL)
                row = cur.fetchone()
                inserted = int(row[0]) if row else 0
            if batch.dead_letters:
                execute_values(cur, DEAD_LETTER_SQL, [
                    (d.record.topic, d.record.partition, d.record.offset,
                     psycopg2.Binary(d.record.key) if d.record.key is not None else None,
                     psycopg2.Binary(d.record.value) if d.record.value is not None else None,
                     d.field, d.reason)
                    for d in batch.dead_letters
                ])
            if batch.gaps:
                execute_values(cur, GAP_SQL, [
                    (g.symbol, g.stream, g.from_id, g.to_id, g.reason, g.detected_at / 1000, g.pending)
                    for g in unique_gaps(batch.gaps)
                ], template="(%s, %s, %s, %s, %s, to_timestamp(%s), %s)")
            if batch.next_offsets:
                execute_values(cur, OFFSETS_SQL, [
                    (topic, partition, offset) for (topic, partition), offset in sorted(batch.next_offsets.items())
                ])
        self._known_days.update(new_days)
        return WriteResult(inserted=inserted, duplicates=len(batch.trades) - inserted,
                           dead_letters=len(batch.dead_letters), gaps=len(batch.gaps))
