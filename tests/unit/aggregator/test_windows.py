"""Pure pieces: window arithmetic, id tracking, backoff, batch sorting."""

from __future__ import annotations

import itertools
import random

from candlestack.aggregator.sink import Region, regions
from candlestack.aggregator.windows import (
    Span,
    chunks,
    covering_step,
    floor_to,
    merge_windows,
    pause_before_tick,
    uncovered,
)
from candlestack.consumer.batch import Record, build_batch
from candlestack.core.backoff import Backoff
from candlestack.producer.gaps import IdTracker, Missing


def test_windows_align_to_the_epoch_like_binance() -> None:
    assert floor_to(1570752011620, 60_000) == 1570752000000
    assert floor_to(1570752011620, 300_000) == 1570752000000
    assert covering_step(["1m", "5m", "15m"]) == 900_000


def test_touched_windows_merge_into_contiguous_spans() -> None:
    assert merge_windows("X", [600, 0, 300, 300, 1500], 300) == [Span("X", 0, 900), Span("X", 1500, 1800)]


def test_chunks_cover_the_range_aligned() -> None:
    pieces = list(chunks(1_000, 3_500_000, 1_000_000, 300_000))
    assert pieces[0][0] == 0 and pieces[-1][1] == 3_600_000
    assert all(b - a <= 900_000 and a % 300_000 == 0 for a, b in pieces)
    assert all(pieces[i][1] == pieces[i + 1][0] for i in range(len(pieces) - 1))


def test_id_tracker_finds_exact_gaps_and_repeats() -> None:
    ids = IdTracker()
    assert ids.missing_before("X", 10) is None
    ids.advance("X", 10)
    assert ids.missing_before("X", 11) is None
    assert ids.missing_before("X", 15) == Missing("X", 11, 14)
    assert not ids.is_new("X", 10) and ids.is_new("X", 11)
    ids.advance("X", 9)
    assert ids.last_ids["X"] == 10


def test_backoff_is_capped_and_jittered() -> None:
    backoff = Backoff(0.5, 4.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(10)]
    assert all(0 < d <= 4.0 for d in delays) and delays[-1] >= 2.0
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_batch_sorts_messages_and_tracks_next_offsets() -> None:
    good = (b'{"v":1,"kind":"trade","symbol":"XRPETH","stream":"trade","trade_id":1,"price":"1.5","qty":"2",'
            b'"trade_time":1570752011620,"event_time":1570752011620,"buyer_is_maker":true,"ingest_time":1570752011620}')
    batch = build_batch([Record("t", 0, 5, b"XRPETH", good), Record("t", 0, 6, None, b"{"),
                         Record("t", 1, 3, b"XRPETH", good)])
    assert len(batch.trades) == 2 and len(batch.dead_letters) == 1
    assert batch.dead_letters[0].field == "value"
    assert batch.next_offsets == {("t", 0): 7, ("t", 1): 4}


def test_filler_regions_span_each_symbol_and_timeframe() -> None:
    rows = [("X", "1m", 120_000, 60_000), ("X", "1m", 0, 60_000), ("Y", "5m", 300_000, 300_000)]
    assert regions(rows) == [Region("X", "1m", 60_000, 0, 120_000), Region("Y", "5m", 300_000, 300_000, 300_000)]


def test_uncovered_tiles_the_covering_windows_with_the_spans() -> None:
    minute, five = 60_000, 300_000
    spans = [Span("A", 2 * minute, 3 * minute), Span("A", 4 * minute, 6 * minute), Span("B", 9 * minute, 10 * minute)]
    assert uncovered(spans, five) == [
        Span("A", 0, 2 * minute), Span("A", 3 * minute, 4 * minute), Span("A", 6 * minute, 10 * minute),
        Span("B", 5 * minute, 9 * minute),
    ]
    rng = random.Random(3)
    for _ in range(200):
        starts = {rng.randrange(0, 40) * minute for _ in range(rng.randrange(1, 12))}
        touched = merge_windows("S", starts, minute)
        around = uncovered(touched, five)
        covered = sorted((s.start_ms, s.end_ms) for s in [*touched, *around])
        windows = {floor_to(ms, five) for ms in starts}
        # Disjoint, and together exactly the five-minute windows the touched minutes are in.
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(covered))
        assert sum(hi - lo for lo, hi in covered) == len(windows) * five
        assert {floor_to(lo, five) for lo, _ in covered} == windows
        assert not {s.start_ms for s in around} & starts


def test_a_tick_follows_each_window_close_after_the_settle_time() -> None:
    minute = 60_000
    # Far from a close: the tick interval, less the time the tick took.
    assert pause_before_tick(2.0, 0.5, 10 * minute + 20_000, minute, 0.5) == 1.5
    # A close 0.3 s ahead: 0.3 s + the settle time, before the interval is up.
    assert abs(pause_before_tick(2.0, 0.0, 11 * minute - 300, minute, 0.5) - 0.8) < 1e-9
    # A tick that took longer than the interval: no wait.
    assert pause_before_tick(2.0, 3.0, 10 * minute + 20_000, minute, 0.5) == 0.0
