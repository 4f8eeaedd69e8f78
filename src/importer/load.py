"""Loading archive lines into ``trades``: COPY each block of lines as it is into a temporary
staging table, then one INSERT ... SELECT ... ON CONFLICT DO NOTHING, as the consumer does.

PostgreSQL parses the CSV (COPY's csv format) and converts the times: no Python code runs per
row, which is what makes the import fast. Prices and quantities go from the file's text to
``numeric`` directly, never through a float.

Each block is its own transactions (stage, partitions, insert), so an interrupted import keeps
what it committed, and loading the same lines again inserts nothing twice (the primary key).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from datetime import date, timedelta

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from candlestack.core import db
from candlestack.core.contract import StreamType
from candlestack.core.errors import StreamKindError
from candlestack.importer.archive import ArchiveFile, Kind, Layout

log = logging.getLogger(__name__)

# The partition functions wait for their lock_timeout; a long reader may outlast a few.
PARTITION_LOCK_ATTEMPTS = 8

# Unused columns stay text: COPY then only splits them off.
STAGE_DDL: dict[Kind, str] = {
    "aggTrades": "CREATE TEMP TABLE IF NOT EXISTS import_stage_aggtrades (id bigint, price numeric, qty numeric, "
                 "first_id bigint, last_id bigint, t bigint, maker boolean, best text)",
    "trades": "CREATE TEMP TABLE IF NOT EXISTS import_stage_trades (id bigint, price numeric, qty numeric, "
              "quote_qty text, t bigint, maker boolean, best text)",
}
STAGE: dict[Kind, str] = {"aggTrades": "import_stage_aggtrades", "trades": "import_stage_trades"}
IDS: dict[Kind, str] = {"aggTrades": "first_id, last_id", "trades": "NULL::bigint, NULL::bigint"}

# event_time is the trade time (an archive line has no event time; the live streams' E is the
# trade's time for these trades too). ingest_time is when the import wrote the row: now(), the
# transaction's start, as for the consumer it is when the producer received the trade.
INSERT_SQL = """
INSERT INTO trades (symbol, trade_id, stream, price, qty, first_trade_id, last_trade_id,
                    trade_time, event_time, buyer_is_maker, ingest_time)
SELECT %(symbol)s, id, %(stream)s, price, qty, {ids}, tt, tt, maker, now()
FROM (SELECT *, timestamptz 'epoch' + t * %(unit)s::interval AS tt FROM {stage}) s
{conflict}
"""

RECORD_SQL = """
INSERT INTO imported_files AS f (file_name, sha256, symbol, stream, rows_read, rows_inserted,
                                 first_trade_time, last_trade_time)
VALUES (%(name)s, %(sha256)s, %(symbol)s, %(stream)s, %(rows_read)s, %(rows_inserted)s,
        timestamptz 'epoch' + %(first_ms)s * interval '1 millisecond',
        timestamptz 'epoch' + %(last_ms)s * interval '1 millisecond')
ON CONFLICT (file_name) DO UPDATE SET
    sha256 = EXCLUDED.sha256, symbol = EXCLUDED.symbol, stream = EXCLUDED.stream, rows_read = EXCLUDED.rows_read,
    rows_inserted = EXCLUDED.rows_inserted, first_trade_time = EXCLUDED.first_trade_time,
    last_trade_time = EXCLUDED.last_trade_time, finished_at = now()
"""

# A block spanning more days than this is suspicious (one bad time far away): its partitions are
# then created only for the days its lines hold, not for every day in between.
MAX_SPAN_DAYS = 40


@dataclass(frozen=True, slots=True)
class Record:
    """A finished file, as ``imported_files`` holds it."""

    sha256: str
    symbol: str
    first_ms: int | None
    last_ms: int | None


@dataclass(frozen=True, slots=True)
class BlockResult:
    rows: int
    inserted: int
    first_ms: int | None
    last_ms: int | None


def stored_stream(conn: psycopg2.extensions.connection) -> StreamType | None:
    """The stream type of the trades the database holds (None: no trades yet)."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT stream FROM trades LIMIT 1")
        row = cur.fetchone()
    return row[0] if row else None


def check_stream(conn: psycopg2.extensions.connection, stream: StreamType) -> None:
    """Raises StreamKindError when the database holds trades of the other stream type."""
    stored = stored_stream(conn)
    if stored is not None and stored != stream:
        raise StreamKindError(stored, stream)


def finished(conn: psycopg2.extensions.connection, names: list[str]) -> dict[str, Record]:
    """The records of the files among ``names`` that were loaded completely."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT file_name, sha256, symbol, (extract(epoch FROM first_trade_time) * 1000)::bigint, "
                    "(extract(epoch FROM last_trade_time) * 1000)::bigint "
                    "FROM imported_files WHERE file_name = ANY(%s)", (names,))
        return {name: Record(sha, symbol, first, last) for name, sha, symbol, first, last in cur.fetchall()}


class Loader:
    """Loads the blocks of one file after another over one connection."""

    def __init__(self, conn: psycopg2.extensions.connection, kind: Kind) -> None:
        self._conn = conn
        self._kind = kind
        self._stage = STAGE[kind]
        self._stage_id = sql.Identifier(self._stage)
        self._known_days: set[date] = set()
        with conn, conn.cursor() as cur:
            # The staging table lives in the session's local buffers: give it room for a block.
            cur.execute("SET temp_buffers = '256MB'")
            # A block's commit need not wait for its WAL to reach the disk: after a crash the
            # last blocks are simply loaded again (imported_files is written after them, and
            # WAL is durable in order, so no file is ever recorded without its rows).
            cur.execute("SET synchronous_commit = off")
            cur.execute(STAGE_DDL[kind])

    def load_block(self, file: ArchiveFile, block: bytes, layout: Layout, *, header: bool) -> BlockResult:
        """Stage, partition and insert one block of whole lines; each step commits."""
        conn = self._conn
        per_ms = 1000 if layout.micros else 1
        with conn, conn.cursor() as cur:
            cur.execute(f"TRUNCATE {self._stage}")
            cur.copy_expert(f"COPY {self._stage} FROM STDIN WITH (FORMAT csv{', HEADER' if header else ''})",
                            io.BytesIO(block), size=1 << 20)
            rows = cur.rowcount
            cur.execute(sql.SQL("SELECT min(t) / %(d)s, max(t) / %(d)s FROM {}").format(self._stage_id), {"d": per_ms})
            first_ms, last_ms = cur.fetchone() or (None, None)
        if rows <= 0 or first_ms is None or last_ms is None:
            return BlockResult(0, 0, None, None)
        self._ensure_partitions(int(first_ms), int(last_ms), per_ms)
        params = {"symbol": file.symbol, "stream": file.stream,
                  "unit": "1 microsecond" if layout.micros else "1 millisecond"}
        inserted = None
        if not self._any_stored(file.symbol, int(first_ms), int(last_ms)):
            # Nothing of this symbol is stored in the block's time range (the usual case): a
            # plain INSERT, which costs about a third less than one with ON CONFLICT. Should a
            # row arrive meanwhile (the live consumer, or a duplicate line in the file), the
            # unique key refuses the block, and it goes the careful way.
            try:
                with conn, conn.cursor() as cur:
                    cur.execute(INSERT_SQL.format(ids=IDS[self._kind], stage=self._stage, conflict=""), params)
                    inserted = cur.rowcount
            except psycopg2.errors.UniqueViolation:
                inserted = None
        if inserted is None:
            with conn, conn.cursor() as cur:
                cur.execute(INSERT_SQL.format(ids=IDS[self._kind], stage=self._stage,
                                              conflict="ON CONFLICT DO NOTHING"), params)
                inserted = cur.rowcount
        return BlockResult(rows, inserted, int(first_ms), int(last_ms))

    def _any_stored(self, symbol: str, first_ms: int, last_ms: int) -> bool:
        with self._conn, self._conn.cursor() as cur:
            cur.execute("SELECT EXISTS (SELECT 1 FROM trades WHERE symbol = %(symbol)s AND trade_time "
                        "BETWEEN timestamptz 'epoch' + %(first)s * interval '1 millisecond' "
                        "AND timestamptz 'epoch' + (%(last)s + 1) * interval '1 millisecond')",
                        {"symbol": symbol, "first": first_ms, "last": last_ms})
            row = cur.fetchone()
        return bool(row and row[0])

    def _ensure_partitions(self, first_ms: int, last_ms: int, per_ms: int) -> None:
        first, last = _day(first_ms), _day(last_ms)
        if (last - first).days <= MAX_SPAN_DAYS:
            days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        else:
            with self._conn, self._conn.cursor() as cur:
                cur.execute(sql.SQL("SELECT DISTINCT (t / %(d)s / 86400000) FROM {}").format(self._stage_id),
                            {"d": per_ms})
                days = sorted(date(1970, 1, 1) + timedelta(days=int(row[0])) for row in cur.fetchall())
        new = [day for day in days if day not in self._known_days]
        if not new:
            return

        def create() -> None:
            # Its own short transaction: creating a partition locks the parent table, which must
            # not stay locked while the block's insert runs (the consumer inserts meanwhile).
            with self._conn, self._conn.cursor() as cur:
                cur.execute("SELECT ensure_trade_partitions_on(%s::date[])", (new,))

        db.retry_on_lock_timeout(create, attempts=PARTITION_LOCK_ATTEMPTS)
        self._known_days.update(new)


def record(conn: psycopg2.extensions.connection, file: ArchiveFile, sha256: str, *, rows: int, inserted: int,
           first_ms: int | None, last_ms: int | None) -> None:
    """Record a file whose every block is committed: the next run skips it."""
    with conn, conn.cursor() as cur:
        cur.execute(RECORD_SQL, {"name": file.name, "sha256": sha256, "symbol": file.symbol,
                                 "stream": file.stream, "rows_read": rows, "rows_inserted": inserted,
                                 "first_ms": first_ms, "last_ms": last_ms})


def ensure_partitions(conn: psycopg2.extensions.connection, days: list[date]) -> None:
    """Create the partitions of ``days`` before loading starts: a partition's creation locks the
    parent table, which parallel loaders would otherwise hold in turn all the time."""
    def create() -> None:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT ensure_trade_partitions_on(%s::date[])", (sorted(set(days)),))

    if days:
        db.retry_on_lock_timeout(create, attempts=PARTITION_LOCK_ATTEMPTS)


def _day(ms: int) -> date:
    return date(1970, 1, 1) + timedelta(days=ms // 86_400_000)

