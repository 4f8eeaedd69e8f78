"""Where the consumer starts reading a partition: the database's position, when it can be used.

The group's committed offset in Kafka follows the database (it is committed after each batch's
transaction), so normally both agree. They part after PostgreSQL is restored: the database is
then behind, and starting from the group's offset would skip what the restore lost. Starting from
the database's position re-reads exactly that; the (symbol, trade_id) key drops any overlap.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Start:
    offset: int | None  # None: the group's committed offset (or auto.offset.reset without one)
    reason: str


def start_position(stored: int | None, committed: int | None, low: int, high: int) -> Start:
    """Decide the first offset to read of a partition.

    ``stored`` is the database's next offset for it, ``committed`` the group's (None for none),
    ``low``/``high`` the partition's watermarks (first kept offset, end).
    """
    if stored is None:
        return Start(None, "the database holds no position: the group's offset")
    if stored > high:
        # The broker's log is younger than the database's position: a broker that lost its log
        # (Tansu is memory-only) or a topic re-created. Nothing can be re-read.
        return Start(None, "the database's position is past the end of the partition: the group's offset")
    if stored < low:
        return Start(low, "the database's position is older than the partition's retention: "
                          "the trades in between are lost from Kafka; the first kept offset")
    if committed is not None and stored < committed:
        return Start(stored, "the database is behind the group (a restored database): re-reading")
    return Start(stored, "the database's position")
