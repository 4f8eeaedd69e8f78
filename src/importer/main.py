"""``candlestack import``: load Binance's trade archives into ``trades``, then backfill candles.

For each file: its checksum is checked (when a ``.CHECKSUM`` exists) before anything is
written, a file already recorded in ``imported_files`` with the same sha256 is skipped, and the
file is loaded block by block (see :mod:`candlestack.importer.load`). A missing file (HTTP 404)
is reported and skipped; a refused file (bad checksum, bad layout) is reported, nothing of it is
written, and the command exits with 65 once the other files are done.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import TextIO

import psycopg2
import psycopg2.extensions

from candlestack.core import db, logs
from candlestack.core.contract import normalise_symbol
from candlestack.core.epoch import from_ms
from candlestack.core.errors import ArchiveError, ChecksumMismatchError, ContractError, SettingsError
from candlestack.core.settings import Env, LogSettings, PostgresSettings
from candlestack.importer import load
from candlestack.importer.archive import ArchiveFile, Kind, Layout, blocks, open_csv, plan, sha256_of, sniff
from candlestack.importer.cli import BLOCK_BYTES
from candlestack.importer.fetch import Http, Local, scan

log = logging.getLogger(__name__)

EX_DATAERR = 65

# (symbol, start ms, end ms exclusive) -> rebuilds the candles of that range.
Backfill = Callable[[str, int, int], None]


@dataclass
class Summary:
    files: int = 0
    imported: int = 0
    skipped: int = 0
    missing: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    rows: int = 0
    inserted: int = 0
    seconds: float = 0.0
    # symbol -> (first ms, last ms) over every file of the run, loaded now or before.
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)

    def cover(self, symbol: str, first_ms: int | None, last_ms: int | None) -> None:
        if first_ms is None or last_ms is None:
            return
        lo, hi = self.ranges.get(symbol, (first_ms, last_ms))
        self.ranges[symbol] = (min(lo, first_ms), max(hi, last_ms))

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


class Progress:
    """A progress line on a terminal (files, rows, rate, ETA), structured log lines otherwise."""

    def __init__(self, total_files: int, *, stream: TextIO | None = None, interval_s: float = 10.0) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self.total = total_files
        self._interval_s = 0.5 if self._tty else interval_s
        self._began = time.monotonic()
        self._last = 0.0
        self.rows = 0
        self._drawn = False
        if self._tty:
            # A log line on the same terminal first wipes the progress line, which the next
            # update draws again below it.
            for handler in logging.getLogger().handlers:
                handler.addFilter(self._wipe)

    def _wipe(self, record: logging.LogRecord) -> bool:
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False
            self._last = 0.0
        return True

    def update(self, files_done: int, fraction: float, name: str, rows: int, *, force: bool = False) -> None:
        """``fraction``: how much of the current file is done (bytes)."""
        self.rows = rows
        now = time.monotonic()
        if not force and now - self._last < self._interval_s:
            return
        self._last = now
        elapsed = now - self._began
        done = min(self.total, files_done + fraction)
        rate = rows / elapsed if elapsed > 0 else 0.0
        eta = elapsed / done * (self.total - done) if done > 0 else None
        eta_text = "?" if eta is None else f"{eta:,.0f} s"
        if self._tty:
            self._drawn = True
            self._stream.write(f"\rimport: {files_done}/{self.total} files  {rows:,} rows  {rate:,.0f} rows/s  "
                               f"ETA {eta_text}  {name}\x1b[K")
            self._stream.flush()
        else:
            log.info("import progress", extra={"files": f"{files_done}/{self.total}", "rows": rows,
                                               "rows_per_s": round(rate), "eta_s": None if eta is None else round(eta),
                                               "file": name})

    def close(self) -> None:
        if self._tty:
            for handler in logging.getLogger().handlers:
                handler.removeFilter(self._wipe)
            if self._drawn:
                self._stream.write("\n")
                self._stream.flush()


@dataclass(frozen=True, slots=True)
class Options:
    kind: Kind | None = None
    symbols: tuple[str, ...] = ()
    first: date | None = None
    last: date | None = None
    base_url: str | None = None
    paths: tuple[Path, ...] = ()
    download_dir: Path | None = None
    keep_downloads: bool = False
    force: bool = False
    block_bytes: int = BLOCK_BYTES
    # Blocks loaded at the same time, each over its own connection.
    workers: int = 2
    # Testing hook: exit abruptly (as a kill would) after this many committed blocks.
    die_after_blocks: int | None = None


class Importer:
    """Runs one import: ``connect`` opens a database connection (one for the bookkeeping, one per
    loading worker). Workers load blocks in parallel, each over its own connection: the work is
    PostgreSQL's (parsing, index upkeep), one backend per worker, so two use both cores of a
    2-core host."""

    def __init__(self, connect: Callable[[], psycopg2.extensions.connection], options: Options, *,
                 progress: Progress | None = None, today: date | None = None) -> None:
        self._connect = connect
        self._options = options
        self._progress = progress
        self._today = today or datetime.now(UTC).date()
        self._blocks = 0
        self._local = threading.local()
        self._opened: list[psycopg2.extensions.connection] = []
        self._lock = threading.Lock()

    def run(self) -> Summary:
        options = self._options
        began = time.monotonic()
        summary = Summary()
        self._conn = self._connect()
        self._opened.append(self._conn)
        self._pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="import")
        try:
            if options.base_url is not None:
                self._run_remote(summary)
            else:
                self._run_local(summary)
        finally:
            self._pool.shutdown(wait=True)
            for conn in self._opened:
                conn.close()
        summary.seconds = time.monotonic() - began
        if self._progress is not None:
            self._progress.close()
        return summary

    def _loader(self, kind: Kind) -> load.Loader:
        """The calling worker thread's loader, on its own connection."""
        loader: load.Loader | None = getattr(self._local, "loader", None)
        if loader is None:
            conn = self._connect()
            with self._lock:
                self._opened.append(conn)
            loader = load.Loader(conn, kind)
            self._local.loader = loader
        return loader

    def _load_block(self, file: ArchiveFile, block: bytes, layout: Layout, header: bool) -> load.BlockResult:
        result = self._loader(file.kind).load_block(file, block, layout, header=header)
        with self._lock:
            self._blocks += 1
            if self._options.die_after_blocks is not None and self._blocks >= self._options.die_after_blocks:
                log.error("fault hook: dying after committed blocks", extra={"blocks": self._blocks})
                os._exit(137)
        return result

    # -- remote -------------------------------------------------------------------------------
    def _run_remote(self, summary: Summary) -> None:
        options = self._options
        assert options.base_url is not None and options.kind is not None
        assert options.first is not None and options.last is not None
        files = plan(list(options.symbols), options.kind, options.first, options.last, today=self._today)
        load.check_stream(self._conn, files[0].stream)
        load.ensure_partitions(self._conn, [day for file in files for day in file.days()])
        own_dir = options.download_dir is None and not options.keep_downloads
        download_dir = options.download_dir or Path(tempfile.mkdtemp(prefix="candlestack-import-"))
        try:
            self._fetch_and_load(summary, files, Http(options.base_url, download_dir))
        finally:
            if own_dir:
                shutil.rmtree(download_dir, ignore_errors=True)

    def _fetch_and_load(self, summary: Summary, files: list[ArchiveFile], http: Http) -> None:
        options = self._options
        self._progress = self._progress or Progress(len(files))
        queue = list(files)
        summary.files = len(queue)
        done = 0
        while queue:
            file = queue.pop(0)
            records = load.finished(self._conn, [file.name])
            expected = http.checksum(file)
            record = records.get(file.name)
            if record is not None and not options.force and (expected is None or record.sha256 == expected):
                self._skip(summary, file, record)
                done += 1
                continue
            fetched = http.download(file)
            if fetched is None:
                if file.monthly:
                    # Not published yet (a month's file comes some days after it ends): its days.
                    daily = file.daily_files()
                    log.info("no monthly file; taking its daily files", extra={"file": file.name, "files": len(daily)})
                    queue[:0] = daily
                    summary.files += len(daily) - 1
                    self._progress.total = summary.files
                else:
                    log.warning("no such file in the archive (HTTP 404); skipped", extra={"file": file.name})
                    summary.missing.append(file.name)
                    done += 1
                continue
            path, actual = fetched
            try:
                if record is not None and not options.force and record.sha256 == actual:
                    self._skip(summary, file, record)
                else:
                    self._load_checked(summary, file, path, expected, actual, done=done)
            finally:
                if not options.keep_downloads:
                    path.unlink(missing_ok=True)
            done += 1

    # -- local --------------------------------------------------------------------------------
    def _run_local(self, summary: Summary) -> None:
        options = self._options
        found = [local for local in scan(list(options.paths)) if self._wanted(local)]
        summary.files = len(found)
        if not found:
            return
        kinds = {local.file.kind for local in found}
        if len(kinds) > 1:
            raise ArchiveError(", ".join(str(p) for p in options.paths),
                               "holds both trades and aggTrades files: one database holds one stream type; "
                               "choose with --kind")
        load.check_stream(self._conn, found[0].file.stream)
        load.ensure_partitions(self._conn, [day for local in found for day in local.file.days()])
        self._progress = self._progress or Progress(len(found))
        records = load.finished(self._conn, [local.file.name for local in found])
        for done, local in enumerate(found):
            actual = sha256_of(local.path)
            record = records.get(local.file.name)
            if record is not None and not options.force and record.sha256 == actual:
                self._skip(summary, local.file, record)
                continue
            self._load_checked(summary, local.file, local.path, local.expected_sha256, actual, done=done)

    def _wanted(self, local: Local) -> bool:
        options, file = self._options, local.file
        return ((options.kind is None or file.kind == options.kind)
                and (not options.symbols or file.symbol in options.symbols)
                and (options.first is None or file.last_day >= options.first)
                and (options.last is None or file.first_day <= options.last))

    # -- both ---------------------------------------------------------------------------------
    def _skip(self, summary: Summary, file: ArchiveFile, record: load.Record) -> None:
        summary.skipped += 1
        summary.cover(record.symbol, record.first_ms, record.last_ms)
        log.info("already imported; skipped", extra={"file": file.name})

    def _load_checked(self, summary: Summary, file: ArchiveFile, path: Path, expected: str | None, actual: str,
                      *, done: int) -> None:
        if expected is None:
            log.warning("no .CHECKSUM for this file; loading it unverified", extra={"file": file.name})
        elif expected != actual:
            error = ChecksumMismatchError(file.name, expected, actual)
            log.error("file refused", extra={"file": file.name, "error": error.reason})
            summary.refused.append(file.name)
            return
        try:
            self._load(summary, file, path, actual, done)
        except ArchiveError as exc:
            log.error("file refused", extra={"file": file.name, "error": exc.reason})
            summary.refused.append(file.name)
        except (psycopg2.DataError, psycopg2.IntegrityError) as exc:
            # A line PostgreSQL cannot take (a bad number, a price of 0): the blocks before it
            # stay, the file is not recorded as imported, and the next run loads it again.
            reason = (exc.pgerror or str(exc)).strip().replace("\n", " | ")
            log.error("file refused by the database", extra={"file": file.name, "error": reason})
            summary.refused.append(file.name)

    def _load(self, summary: Summary, file: ArchiveFile, path: Path, sha256: str, done: int) -> None:
        rows = inserted = 0
        first_ms: int | None = None
        last_ms: int | None = None
        began = time.monotonic()
        pending: list[tuple[Future[load.BlockResult], int]] = []
        read = 0

        def collect(result: load.BlockResult, size: int) -> None:
            nonlocal rows, inserted, first_ms, last_ms, read
            rows += result.rows
            inserted += result.inserted
            if result.first_ms is not None and result.last_ms is not None:
                first_ms = result.first_ms if first_ms is None else min(first_ms, result.first_ms)
                last_ms = result.last_ms if last_ms is None else max(last_ms, result.last_ms)
            read += size

        with open_csv(path) as (stream, total):
            layout: Layout | None = None
            try:
                for number, block in enumerate(blocks(stream, self._options.block_bytes)):
                    if layout is None:
                        layout = sniff(block, file.kind, file.name)
                    pending.append((self._pool.submit(self._load_block, file, block, layout,
                                                      number == 0 and layout.header), len(block)))
                    # At most one block waits beside those loading: memory stays a few blocks.
                    while len(pending) > self._options.workers:
                        future, size = pending.pop(0)
                        collect(future.result(), size)
                        if self._progress is not None:
                            self._progress.update(done, read / total if total else 1.0, file.name, summary.rows + rows)
                for future, size in pending:
                    collect(future.result(), size)
            finally:
                for future, _ in pending:  # after an error: let the other blocks end first
                    future.cancel()
                wait([future for future, _ in pending])
        load.record(self._conn, file, sha256, rows=rows, inserted=inserted, first_ms=first_ms, last_ms=last_ms)
        summary.imported += 1
        summary.rows += rows
        summary.inserted += inserted
        summary.cover(file.symbol, first_ms, last_ms)
        seconds = time.monotonic() - began
        log.info("file imported", extra={"file": file.name, "rows": rows, "new_rows": inserted,
                                         "seconds": round(seconds, 2),
                                         "rows_per_s": round(rows / seconds) if seconds > 0 else None})
        if self._progress is not None:
            self._progress.update(done + 1, 0.0, file.name, summary.rows, force=True)


def options_from(args: argparse.Namespace) -> Options:
    if args.base_url and args.paths:
        raise SettingsError("--base-url", "give either --base-url or paths, not both")
    if not args.base_url and not args.paths:
        raise SettingsError("--base-url", "give --base-url or the paths of archive files")
    try:
        symbols = tuple(dict.fromkeys(normalise_symbol(s) for s in (args.symbols or "").split(",") if s.strip()))
    except ContractError as exc:
        raise SettingsError("--symbols", exc.reason) from None
    if args.base_url:
        for flag, value in (("--symbols", symbols), ("--kind", args.kind), ("--from", args.first),
                            ("--to", args.last)):
            if not value:
                raise SettingsError(flag, "is required with --base-url")
    if args.first and args.last and args.last < args.first:
        raise SettingsError("--to", "must not be before --from")
    return Options(kind=args.kind, symbols=symbols, first=args.first, last=args.last, base_url=args.base_url,
                   paths=tuple(args.paths), download_dir=args.download_dir, keep_downloads=args.keep_downloads,
                   force=args.force, block_bytes=max(1024, args.block_bytes), workers=args.workers,
                   die_after_blocks=args.die_after_blocks)


class SparkBackfill:
    """The aggregator's backfill, on a Spark session built at the first call (``close()`` stops it)."""

    def __init__(self, environ: dict[str, str] | None) -> None:
        self._environ = environ
        self._aggregator: object | None = None
        self._conn: psycopg2.extensions.connection | None = None

    def __call__(self, symbol: str, start_ms: int, end_ms: int) -> None:
        from candlestack.aggregator.jobs import Aggregator  # noqa: PLC0415 - loads pyspark
        from candlestack.aggregator.main import connect_when_up  # noqa: PLC0415
        from candlestack.aggregator.session import build_session  # noqa: PLC0415
        from candlestack.core.lifecycle import stop_on_signals  # noqa: PLC0415
        from candlestack.core.settings import AggregatorSettings  # noqa: PLC0415

        stop = stop_on_signals(log)
        if self._aggregator is None:
            settings = AggregatorSettings.from_env(self._environ)
            self._conn = connect_when_up(settings, stop)
            self._aggregator = Aggregator(settings, build_session(settings), self._conn)
        assert isinstance(self._aggregator, Aggregator)
        outcome = self._aggregator.backfill(start_ms, end_ms, [symbol], stop=stop)
        if not outcome.finished:
            raise KeyboardInterrupt

    def close(self) -> None:
        if self._aggregator is not None:
            from candlestack.aggregator.session import stop_session  # noqa: PLC0415

            stop_session(self._aggregator.spark)  # type: ignore[attr-defined]
        if self._conn is not None:
            self._conn.close()


def backfill_ranges(summary: Summary, backfill: Backfill) -> None:
    for symbol, (first_ms, last_ms) in sorted(summary.ranges.items()):
        log.info("backfilling the imported range", extra={
            "symbol": symbol, "from": _iso(first_ms), "to": _iso(last_ms + 1)})
        backfill(symbol, first_ms, last_ms + 1)


def _iso(ms: int) -> str:
    return from_ms(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def report(summary: Summary, out: TextIO) -> None:
    """The result on standard output, one fact a line."""
    out.write(f"files: {summary.files} planned, {summary.imported} imported, {summary.skipped} already imported, "
              f"{len(summary.missing)} missing, {len(summary.refused)} refused\n")
    for name in summary.missing:
        out.write(f"missing: {name}\n")
    for name in summary.refused:
        out.write(f"refused: {name}\n")
    out.write(f"rows: {summary.rows:,} read, {summary.inserted:,} new rows "
              f"in {summary.seconds:.1f} s ({summary.rate:,.0f} rows/s)\n")
    for symbol, (first_ms, last_ms) in sorted(summary.ranges.items()):
        out.write(f"range: {symbol} {_iso(first_ms)} .. {_iso(last_ms + 1)}\n")


def import_command(args: argparse.Namespace, environ: dict[str, str] | None = None) -> int:
    """``candlestack import``; database errors become one line and an exit code (see cli.main)."""
    from candlestack.admin import database_errors  # noqa: PLC0415

    env = Env(environ)
    settings = PostgresSettings.from_env(env, application_name="candlestack-import")
    logs.setup(LogSettings.from_env(env))
    options = options_from(args)
    with database_errors(settings, needs="a member of candlestack_ingest"):
        summary = Importer(partial(db.connect, settings), options).run()
    report(summary, sys.stdout)
    sys.stdout.flush()
    if summary.ranges and args.no_backfill:
        for symbol, (first_ms, last_ms) in sorted(summary.ranges.items()):
            print(f"candles not rebuilt (--no-backfill): candlestack aggregator backfill --symbols {symbol} "
                  f"--from {_iso(first_ms)} --to {_iso(last_ms + 1)}")
    elif summary.ranges:
        backfill_environ = environ
        if args.backfill_env_file:
            from candlestack.core.settings import read_env_file  # noqa: PLC0415

            backfill_environ = {**os.environ, **read_env_file(args.backfill_env_file)}
        backfill = SparkBackfill(backfill_environ)
        try:
            backfill_ranges(summary, backfill)
        finally:
            backfill.close()
        print("candles rebuilt for the imported range")
    return EX_DATAERR if summary.refused else 0
