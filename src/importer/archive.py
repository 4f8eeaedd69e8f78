"""Binance's public trade archives (the data.binance.vision layout): file names, which files
cover a date range, and reading a file as blocks of whole CSV lines for COPY.

Nothing here touches the network or the database, so it is tested on its own.

The two layouts, with or without a header line (newer files have one)::

    trades:    id,price,qty,quote_qty,time,is_buyer_maker,is_best_match
    aggTrades: agg_trade_id,price,qty,first_trade_id,last_trade_id,time,is_buyer_maker,is_best_match

``time`` is in milliseconds, or in microseconds in the spot archives since 2025; the unit is
told per file from the magnitude of its first time.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Literal

from candlestack.core.contract import StreamType
from candlestack.core.errors import ArchiveError

Kind = Literal["trades", "aggTrades"]
KINDS: dict[Kind, StreamType] = {"trades": "trade", "aggTrades": "aggTrade"}
# Columns of each layout, and which one holds the time.
COLUMNS: dict[Kind, int] = {"trades": 7, "aggTrades": 8}
TIME_COLUMN: dict[Kind, int] = {"trades": 4, "aggTrades": 5}
# A time at or above this is in microseconds: as milliseconds it would be the year 5138, as
# microseconds it is 1973, before any trade on Binance.
MICROS_FROM = 10**14

NAME_PATTERN = re.compile(
    r"^(?P<symbol>[A-Z0-9]{2,20})-(?P<kind>trades|aggTrades)-(?P<year>\d{4})-(?P<month>\d{2})(?:-(?P<day>\d{2}))?"
    r"\.(?P<ext>zip|csv)$")
CHECKSUM_PATTERN = re.compile(r"^([0-9a-fA-F]{64})\s+\*?(\S+)\s*$")


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """One archive file: a symbol's trades of one day (daily) or one calendar month (monthly)."""

    symbol: str
    kind: Kind
    first_day: date
    monthly: bool
    ext: str = "zip"

    @property
    def last_day(self) -> date:
        if not self.monthly:
            return self.first_day
        days = calendar.monthrange(self.first_day.year, self.first_day.month)[1]
        return self.first_day.replace(day=days)

    @property
    def stream(self) -> StreamType:
        return KINDS[self.kind]

    @property
    def name(self) -> str:
        stamp = self.first_day.strftime("%Y-%m" if self.monthly else "%Y-%m-%d")
        return f"{self.symbol}-{self.kind}-{stamp}.{self.ext}"

    @property
    def url_path(self) -> str:
        """Where the file lives under the archive's base URL."""
        period = "monthly" if self.monthly else "daily"
        return f"data/spot/{period}/{self.kind}/{self.symbol}/{self.name}"

    def days(self) -> list[date]:
        return [self.first_day + timedelta(days=n) for n in range((self.last_day - self.first_day).days + 1)]

    def daily_files(self) -> list[ArchiveFile]:
        """The daily files of the same days (what stands in for a monthly file not published yet)."""
        return [ArchiveFile(self.symbol, self.kind, day, monthly=False, ext=self.ext) for day in self.days()]


def parse_name(name: str) -> ArchiveFile | None:
    """The archive file a name stands for (``XRPETH-aggTrades-2019-10-11.zip``), or None."""
    found = NAME_PATTERN.match(name)
    if found is None:
        return None
    try:
        first = date(int(found["year"]), int(found["month"]), int(found["day"] or 1))
    except ValueError:
        return None
    kind: Kind = "trades" if found["kind"] == "trades" else "aggTrades"
    return ArchiveFile(found["symbol"], kind, first, monthly=found["day"] is None, ext=found["ext"])


def plan(symbols: list[str], kind: Kind, first: date, last: date, *, today: date) -> list[ArchiveFile]:
    """The files covering the days ``first``..``last`` (inclusive) of each symbol.

    A calendar month that lies wholly inside the range and has ended before ``today``'s month
    comes as one monthly file; every other day as a daily file (Binance publishes a month's file
    some days after the month ends, a day's file the next day).
    """
    files: list[ArchiveFile] = []
    for symbol in symbols:
        day = first
        while day <= last:
            month_start = day.replace(day=1)
            month_end = month_start.replace(day=calendar.monthrange(day.year, day.month)[1])
            whole = day == month_start and month_end <= last
            if whole and month_end < today.replace(day=1):
                files.append(ArchiveFile(symbol, kind, month_start, monthly=True))
                day = month_end + timedelta(days=1)
            else:
                files.append(ArchiveFile(symbol, kind, day, monthly=False))
                day += timedelta(days=1)
    return files


def parse_checksum(text: str, file: str) -> str:
    """The sha256 of a ``.CHECKSUM`` file (``<sha256>  <file name>``), lower case.

    Raises:
        ArchiveError: the text is not one such line.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    found = CHECKSUM_PATTERN.match(lines[0]) if len(lines) == 1 else None
    if found is None:
        raise ArchiveError(file, f"its .CHECKSUM is not '<sha256>  <name>': {text[:120]!r}")
    return found[1].lower()


def sha256_of(path: Path, *, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def open_csv(path: Path) -> Iterator[tuple[IO[bytes], int]]:
    """The CSV inside ``path`` (a ``.zip`` holding one ``.csv``, or a ``.csv``), and its size."""
    if path.suffix == ".zip":
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ArchiveError(path.name, f"not a readable zip: {exc}") from None
        with archive:
            members = [info for info in archive.infolist() if info.filename.endswith(".csv")]
            if len(members) != 1:
                raise ArchiveError(path.name, f"expected one .csv inside, found {len(members)}")
            with archive.open(members[0]) as stream:
                yield stream, members[0].file_size
    else:
        with open(path, "rb") as stream:
            yield stream, path.stat().st_size


@dataclass(frozen=True, slots=True)
class Layout:
    """What the first lines of a file say: a header line or not, and the unit of its times."""

    header: bool
    micros: bool


def sniff(head: bytes, kind: Kind, file: str) -> Layout:
    """Read the layout from the first block of a file.

    Raises:
        ArchiveError: the first data line does not have the layout's columns.
    """
    lines = head.split(b"\n", 2)
    header = bool(lines[0]) and not lines[0][:1].isdigit()
    data = lines[1] if header and len(lines) > 1 else lines[0]
    fields = data.rstrip(b"\r").split(b",")
    if not data.strip():
        return Layout(header=header, micros=False)  # an empty file: nothing to load
    if len(fields) != COLUMNS[kind] or not fields[TIME_COLUMN[kind]].isdigit():
        raise ArchiveError(file, f"the first data line does not have the {kind} layout "
                                 f"({COLUMNS[kind]} columns): {data[:160]!r}")
    return Layout(header=header, micros=int(fields[TIME_COLUMN[kind]]) >= MICROS_FROM)


def blocks(stream: IO[bytes], size: int) -> Iterator[bytes]:
    """The stream in blocks of about ``size`` bytes, each ending with a whole line.

    Only the current block is in memory; a last line without a newline gets one.
    """
    rest = b""
    while True:
        chunk = stream.read(size)
        if not chunk:
            break
        data = rest + chunk if rest else chunk
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest = data
            continue
        rest = data[cut:]
        yield data[:cut]
    if rest.strip():
        yield rest + b"\n"
