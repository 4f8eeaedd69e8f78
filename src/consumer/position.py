"""Where the consumer starts reading a partition: the database's position, when it can be used.

The group's committed offset in Kafka follows the database (it is committed after each batch's
transaction), so normally both agree. They part after PostgreSQL is restored: the database is
then behind, and starting from the group's offset would skip what the restore lost. Starting from
the database's position re-reads exactly that; the (symbol, trade_id) key drops any overlap.
They also part when the consumer died between its database commit and its Kafka commit: the
database is then ahead, and its position saves reading the batch again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Start:
    offset: int | None  # None: the group's committed offset (or auto.offset.reset without one)
    reason: str


def start_position(stored: int | None, committed: int | None, low: int) -> Start:
    """Decide the first offset to read of a partition.

    ``stored`` is the database's next offset for it, ``committed`` the group's (None for none),
    ``low`` the partition's first kept offset.

    Without a group offset the database's position is not used: the broker may have lost its
    log and the group with it (Tansu keeps both in memory), and the position then belongs to
    the old log; reading the partition from its start, as a new group does, loses nothing. The
    end of the log cannot tell the two cases apart here: Tansu answers a ListOffsets for the
    end with a batch's offset, not the partition's end.
    """
    if stored is None:
        return Start(None, "the database holds no position: the group's offset")
    if committed is None:
        return Start(None, "the group has no offset (a new group, or a broker that lost its log): the group's start")
    if stored < low:
        return Start(low, "the database's position is older than the partition's retention: "
                          "the trades in between are lost from Kafka; the first kept offset")
    if stored < committed:
        return Start(stored, "the database is behind the group (a restored database): re-reading")
    return Start(stored, "the database's position")
