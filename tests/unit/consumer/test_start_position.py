"""Where the consumer starts a partition, from the database's position and the group's offset."""

from __future__ import annotations

from candlestack.consumer.position import start_position


def test_in_step_the_database_position_is_used() -> None:
    assert start_position(500, 500, 0).offset == 500


def test_a_restored_database_behind_the_group_re_reads_from_its_own_position() -> None:
    start = start_position(300, 500, 0)
    assert start.offset == 300 and "restored" in start.reason


def test_a_database_ahead_of_the_group_skips_only_what_it_stored() -> None:
    # The consumer died between its database commit and its Kafka commit.
    assert start_position(500, 450, 0).offset == 500


def test_without_a_stored_position_the_group_decides() -> None:
    assert start_position(None, 500, 0).offset is None


def test_without_a_group_offset_the_position_may_belong_to_a_lost_log_and_is_not_used() -> None:
    assert start_position(5000, None, 0).offset is None


def test_a_position_older_than_retention_starts_at_the_first_kept_offset() -> None:
    start = start_position(100, 500, 250)
    assert start.offset == 250 and "lost" in start.reason
