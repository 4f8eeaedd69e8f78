"""What the broker has acknowledged, and the state file that carries it across restarts.

Why a state file rather than reading the tail of the topic at start: the lab and CI broker
(Tansu) keeps messages in memory only, so a broker restart would lose the very record we need;
several symbols share a partition, so finding each symbol's last id means reading back until
every symbol has been seen (unbounded for a quiet symbol); a pending gap is not on the topic as
anything the producer could tell from a gap it gave up on; and the producer would need consumer
rights on its own topic. A few hundred bytes under the unit's ``StateDirectory=`` avoid all that.

Only acknowledged ids are kept: :class:`Progress` is updated from librdkafka delivery reports,
never at publish time, so whatever was queued but not delivered when the process stopped is
fetched again over REST at the next start (the consumer drops the repeats by key).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from candlestack.core.contract import STREAMS, StreamType
from candlestack.core.errors import CandlestackError
from candlestack.producer.gaps import PendingGap

log = logging.getLogger(__name__)

STATE_VERSION = 1
STATE_FILE_NAME = "producer-state.json"
# The state file is rewritten at most this often (and at stop).
SAVE_INTERVAL_S = 1.0


class StateFileError(CandlestackError):
    """The state file exists but cannot be used; ``path`` names it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(slots=True)
class Progress:
    """Per symbol the last trade id the broker acknowledged, and the gaps still pending.

    The idempotent producer delivers in order per partition and a symbol always goes to the
    same partition, so the last acknowledged id of a symbol is contiguous: everything before it
    is on the broker, except the ranges listed in ``pending``. Delivery reports run on the
    producer's own thread (inside ``poll``/``flush``), so no locking is needed.
    """

    stream: StreamType
    acked: dict[str, int] = field(default_factory=dict)
    # Keyed by (symbol, to_id): the end of a pending range never moves, its start does.
    pending: dict[tuple[str, int], PendingGap] = field(default_factory=dict)
    # Bumped on every change, so that an unchanged state is not rewritten.
    changes: int = 0
    _failed: set[str] = field(default_factory=set)

    # -- delivery reports (per message: keep them O(1) while no gap is pending) --------------
    def trade_acked(self, symbol: str, trade_id: int) -> None:
        if self.pending:
            self._fill_acked(symbol, trade_id)
        if trade_id > self.acked.get(symbol, -1) and symbol not in self._failed:
            self.acked[symbol] = trade_id
            self.changes += 1

    def gap_acked(self, symbol: str, to_id: int, *, pending: bool) -> None:
        """A gap message reached the broker; a final one (not pending) ends the pending gap."""
        if not pending and self.pending.pop((symbol, to_id), None) is not None:
            self.changes += 1

    def delivery_failed(self, symbol: str) -> None:
        """A message of ``symbol`` will never reach the broker: stop moving its mark forward,
        so that the next start fetches everything after the last id known to be there."""
        self._failed.add(symbol)

    def _fill_acked(self, symbol: str, trade_id: int) -> None:
        for key, gap in list(self.pending.items()):
            if gap.symbol == symbol and gap.from_id <= trade_id <= gap.to_id:
                gap.from_id = trade_id + 1
                self.changes += 1
                if gap.acknowledged:
                    del self.pending[key]
                    log.info("pending gap filled and acknowledged", extra={
                        "symbol": symbol, "to_id": gap.to_id})

    # -- the stream's side --------------------------------------------------------------------
    def add_pending(self, gap: PendingGap) -> None:
        self.pending[(gap.symbol, gap.to_id)] = gap
        self.changes += 1

    def resume_points(self) -> dict[str, int]:
        """Per symbol, the id after which the live stream and catch-up go on: the last
        acknowledged id, or the end of a pending gap beyond it (the gap is retried on its own)."""
        points = dict(self.acked)
        for gap in self.pending.values():
            points[gap.symbol] = max(points.get(gap.symbol, -1), gap.to_id)
        return points


# -- the file ---------------------------------------------------------------------------------
def encode(progress: Progress, *, saved_at: int) -> bytes:
    """The state file's content: small, sorted, one JSON object."""
    body = {
        "v": STATE_VERSION,
        "stream": progress.stream,
        "saved_at": saved_at,
        "acked": dict(sorted(progress.acked.items())),
        "pending": [
            {"symbol": gap.symbol, "from_id": gap.from_id, "to_id": gap.to_id, "reason": gap.reason,
             "detected_at": gap.detected_at}
            for gap in sorted(progress.pending.values(), key=lambda g: (g.symbol, g.to_id))
        ],
    }
    return json.dumps(body, indent=1).encode() + b"\n"


def decode(data: bytes, path: Path) -> Progress:
    """Parse a state file.

    Raises:
        StateFileError: not a state file of this version.
    """
    try:
        body = json.loads(data)
        if not isinstance(body, dict) or body.get("v") != STATE_VERSION:
            raise StateFileError(path, f"not a version {STATE_VERSION} state file")
        stream = body["stream"]
        if stream not in STREAMS:
            raise StateFileError(path, f"unknown stream type {stream!r}")
        acked = {str(symbol): _id(value) for symbol, value in body["acked"].items()}
        pending = [_pending(item) for item in body["pending"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StateFileError(path, f"malformed: {exc!r}") from None
    progress = Progress(stream, acked)
    for gap in pending:
        progress.add_pending(gap)
    progress.changes = 0
    return progress


def _id(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"bad trade id {value!r}")
    return value


def _pending(item: dict[str, Any]) -> PendingGap:
    gap = PendingGap(symbol=str(item["symbol"]), from_id=_id(item["from_id"]), to_id=_id(item["to_id"]),
                     reason=str(item["reason"]), detected_at=_id(item["detected_at"]))
    if gap.to_id < gap.from_id:
        raise ValueError(f"pending gap ends before it starts: {item!r}")
    return gap


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old file or the new, never half.

    Write a temporary file beside it, fsync it, rename it over the old one, fsync the directory
    (the rename itself must reach the disk).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class StateFile:
    """``producer-state.json`` in the unit's state directory, rewritten when something changed."""

    def __init__(self, directory: Path, *, stream: StreamType, interval_s: float = SAVE_INTERVAL_S) -> None:
        self.path = directory / STATE_FILE_NAME
        self._stream = stream
        self._interval_s = interval_s
        self._saved_changes = -1
        self._next_save = 0.0
        self.failures = 0

    def load(self) -> Progress:
        """The saved progress, or a fresh one when there is no file yet.

        A file of another stream type (trade ids and aggregate trade ids are different
        sequences) is ignored with a warning.

        Raises:
            StateFileError: the file exists but is unreadable or malformed.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            log.info("no producer state file yet; starting from the live stream", extra={"path": str(self.path)})
            return Progress(self._stream)
        except OSError as exc:
            raise StateFileError(self.path, str(exc)) from None
        progress = decode(data, self.path)
        if progress.stream != self._stream:
            log.warning("state file is for another stream type; ignoring it",
                        extra={"path": str(self.path), "file_stream": progress.stream, "stream": self._stream})
            return Progress(self._stream)
        log.info("resuming from the state file", extra={
            "path": str(self.path), "symbols": len(progress.acked), "pending_gaps": len(progress.pending)})
        return progress

    def save(self, progress: Progress, *, saved_at: int) -> bool:
        """Write now if anything changed; False (logged) if the write failed."""
        if progress.changes == self._saved_changes:
            return True
        changes = progress.changes
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, encode(progress, saved_at=saved_at))
        except OSError as exc:
            self.failures += 1
            # A full disk must not flood the journal once a second.
            if self.failures <= 3 or self.failures % 100 == 0:
                log.error("cannot write the state file", extra={"path": str(self.path), "error": str(exc),
                                                               "failures": self.failures})
            with contextlib.suppress(OSError):
                self.path.with_name(f".{self.path.name}.tmp").unlink()
            return False
        self._saved_changes = changes
        return True

    def due(self, now: float) -> bool:
        """Whether :meth:`maybe_save` would write now (``now`` is monotonic)."""
        return now >= self._next_save

    def maybe_save(self, progress: Progress, *, now: float, saved_at: int) -> None:
        """Save at most once per interval (``now`` is monotonic)."""
        if now < self._next_save:
            return
        self._next_save = now + self._interval_s
        self.save(progress, saved_at=saved_at)
