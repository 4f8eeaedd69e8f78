"""Frame-level fault injection on one connection: duplicate and malformed frames.

Connection-level faults (disconnects, ``serverShutdown``, the connection age limit) need timers
and sockets and live in :mod:`replay.server`.
"""

from __future__ import annotations

from dataclasses import dataclass

from replay.events import malformed_frame
from replay.streams import Stream


@dataclass(slots=True)
class FrameFaults:
    """Counts the trade frames sent on one connection and adds the injected ones after them.

    Args:
        duplicate_every: send every Nth trade frame twice; ``None`` disables.
        malformed_every: send a junk frame after every Nth trade frame; ``None`` disables.
    """

    duplicate_every: int | None = None
    malformed_every: int | None = None
    trade_frames: int = 0
    duplicates: int = 0
    malformed: int = 0

    def add(self, out: list[bytes], frame: bytes, stream: Stream, *, combined: bool) -> None:
        """Append ``frame`` to ``out``, then whatever the injection plan adds after it."""
        out.append(frame)
        self.trade_frames += 1
        if self.duplicate_every and self.trade_frames % self.duplicate_every == 0:
            out.append(frame)
            self.duplicates += 1
        if self.malformed_every and self.trade_frames % self.malformed_every == 0:
            out.append(self.junk(stream, combined=combined))

    def junk(self, stream: Stream | None, *, combined: bool) -> bytes:
        """The next malformed frame (the kinds rotate), counted."""
        frame = malformed_frame(self.malformed, stream, combined=combined)
        self.malformed += 1
        return frame
