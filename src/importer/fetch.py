"""Where archive files come from: a base URL with the data.binance.vision layout, or local files.

A download goes to a file in the download directory, hashed on the way, so that its checksum is
known before a single line is loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from candlestack.core.backoff import Backoff
from candlestack.core.errors import ArchiveError
from candlestack.importer.archive import ArchiveFile, parse_checksum, parse_name, sha256_of

log = logging.getLogger(__name__)

USER_AGENT = "candlestack-import"
ATTEMPTS = 5


def is_retryable(exc: BaseException) -> bool:
    """Is a failed request worth repeating?"""
    if isinstance(exc, urllib.error.HTTPError):
        # 429/418: rate limited; 5xx: the server's trouble, usually short.
        return exc.code in (418, 429) or exc.code >= 500
    # Connection refused or reset, DNS hiccups, timeouts: the network's, usually short.
    return isinstance(exc, (urllib.error.URLError, TimeoutError, ConnectionError))


@dataclass(frozen=True, slots=True)
class Local:
    """A file on disk, with the sha256 of the ``.CHECKSUM`` beside it (None: there is none)."""

    file: ArchiveFile
    path: Path
    expected_sha256: str | None


def scan(paths: list[Path]) -> list[Local]:
    """The archive files among ``paths`` (directories are searched recursively), sorted by name.

    Raises:
        ArchiveError: a file given by name that does not follow the archives' naming.
    """
    found: dict[str, Local] = {}
    for path in paths:
        if path.is_dir():
            candidates = [p for p in sorted(path.rglob("*")) if p.is_file() and parse_name(p.name) is not None]
        elif path.is_file():
            candidates = [path]
        else:
            raise ArchiveError(str(path), "no such file or directory")
        for candidate in candidates:
            file = parse_name(candidate.name)
            if file is None:
                raise ArchiveError(candidate.name, "not named like an archive file "
                                                   "(SYMBOL-trades|aggTrades-YYYY-MM[-DD].zip|.csv)")
            checksum = candidate.with_name(candidate.name + ".CHECKSUM")
            expected = parse_checksum(checksum.read_text(), candidate.name) if checksum.is_file() else None
            found.setdefault(candidate.name, Local(file, candidate, expected))
    return sorted(found.values(), key=lambda local: (local.file.symbol, local.file.first_day, local.file.name))


def local_sha256(local: Local) -> str:
    return sha256_of(local.path)


class Http:
    """Files under a base URL laid out as data.binance.vision; a 404 means "no such file"."""

    def __init__(self, base_url: str, download_dir: Path, *, timeout_s: float = 60.0,
                 retry_initial_s: float = 1.0) -> None:
        self._base = base_url.rstrip("/")
        self._dir = download_dir
        self._timeout_s = timeout_s
        self._retry_initial_s = retry_initial_s

    def url(self, file: ArchiveFile) -> str:
        return f"{self._base}/{file.url_path}"

    def checksum(self, file: ArchiveFile) -> str | None:
        """The sha256 its ``.CHECKSUM`` gives, or None when there is no such file."""
        body = self._get(self.url(file) + ".CHECKSUM", file.name + ".CHECKSUM")
        if body is None:
            return None
        path, _ = body
        try:
            return parse_checksum(path.read_text(errors="replace"), file.name)
        finally:
            path.unlink(missing_ok=True)

    def download(self, file: ArchiveFile) -> tuple[Path, str] | None:
        """(path, sha256) of the downloaded file, or None when the server has no such file (404)."""
        return self._get(self.url(file), file.name)

    def _get(self, url: str, name: str | None) -> tuple[Path, str] | None:
        backoff = Backoff(self._retry_initial_s, 30.0)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return self._fetch(url, name)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                if not is_retryable(exc) or attempt == ATTEMPTS:
                    raise ArchiveError(url, f"HTTP {exc.code} {exc.reason}") from None
                error = f"HTTP {exc.code}"
            except OSError as exc:
                if not is_retryable(exc) or attempt == ATTEMPTS:
                    raise ArchiveError(url, f"download failed: {exc}") from None
                error = str(exc)
            delay = backoff.next_delay()
            log.warning("download failed; retrying", extra={"url": url, "error": error, "retry_in_s": round(delay, 1)})
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _fetch(self, url: str, name: str | None) -> tuple[Path, str]:
        self._dir.mkdir(parents=True, exist_ok=True)
        target = self._dir / (name or (url.rsplit("/", 1)[-1]))
        partial = target.with_name(target.name + ".part")
        digest = hashlib.sha256()
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with urllib.request.urlopen(request, timeout=self._timeout_s) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        os.replace(partial, target)
        return target, digest.hexdigest()
