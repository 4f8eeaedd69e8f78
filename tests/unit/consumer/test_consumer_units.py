"""The consumer's pure parts and the contract's defences against hostile input (no services)."""

from __future__ import annotations

import json
import time
from datetime import date
from typing import Any

import psycopg2
import psycopg2.errors
import pytest

from candlestack.consumer import batch as batch_module
from candlestack.consumer import metrics as consumer_metrics
from candlestack.consumer.batch import Batch, DeadLetter, Record, build_batch
from candlestack.consumer.main import AssignmentWatch
from candlestack.consumer.store import TradeStore, WriteResult, is_data_error
from candlestack.core import contract
from candlestack.core.contract import MAX_ID, NO_BOUNDS, Bounds, Gap, Trade, decode, from_body, nesting_depth
from candlestack.core.errors import ContractError, SettingsError
from candlestack.core.settings import ConsumerSettings

NOW_MS = 1_764_547_200_000  # 2025-12-01T00:00:00Z
BOUNDS = Bounds.at(NOW_MS, symbols=("XRPETH",))
TRADE: dict[str, Any] = {
    "v": 1, "kind": "trade", "symbol": "XRPETH", "stream": "aggTrade", "trade_id": 13519807,
    "first_trade_id": 15373518, "last_trade_id": 15373518, "price": "0.00141342", "qty": "23.00000000",
    "trade_time": NOW_MS - 1000, "event_time": NOW_MS - 1000, "buyer_is_maker": True, "ingest_time": NOW_MS,
}
GAP: dict[str, Any] = {"v": 1, "kind": "gap", "symbol": "XRPETH", "stream": "trade", "from_id": 5, "to_id": 9,
                       "reason": "REST down", "detected_at": NOW_MS, "pending": False}


def body(base: dict[str, Any] = TRADE, **changes: Any) -> bytes:
    return json.dumps({**base, **changes}).encode()


def refused_field(payload: bytes, bounds: Bounds = BOUNDS) -> str:
    with pytest.raises(ContractError) as error:
        decode(payload, bounds)
    return error.value.field


# -- hostile payloads ----------------------------------------------------------------------------
@pytest.mark.parametrize(("payload", "field"), [
    (body(trade_id=2**63), "trade_id"),
    (body(trade_id=-1), "trade_id"),
    (body(first_trade_id=0, last_trade_id=2**63), "last_trade_id"),
    (body(GAP, to_id=2**63), "to_id"),
    (body(GAP, from_id=2**63, to_id=2**63), "from_id"),
    (b"[" * 5000 + b"]" * 5000, "value"),
    (b'{"v": 1, "kind": "trade", "x": ' + b"[" * 3000 + b"]" * 3000 + b"}", "value"),
    (body(trade_id=int("7" * 4000)), "value"),
    (b'{"v": 1, "kind": "trade", "trade_id": ' + b"9" * 5000 + b"}", "value"),
    (body(trade_id=10**20), "trade_id"),  # beyond 64 bits: the parser makes it a float
    (body(symbol="XRP\x00ETH"), "symbol"),
    (body(GAP, reason="REST\x00down"), "reason"),
    (body(price="0.1\n"), "price"),
    (body(trade_time=4_070_908_800_000), "trade_time"),  # 2099-01-01
    (body(event_time=NOW_MS + 86_400_001), "event_time"),
    (body(ingest_time=NOW_MS + 86_400_001), "ingest_time"),
    (body(GAP, detected_at=NOW_MS + 86_400_001), "detected_at"),
    (body(trade_time=1_498_867_199_999), "trade_time"),  # just before 2017-07-01
    (body(symbol="BTCUSDT"), "symbol"),
    (body(GAP, symbol="BTCUSDT"), "symbol"),
    (b"\xff\xfe{}", "value"),
    (b'{"v": 1, "kind": "trade"' + b" " * 20_000 + b"}", "value"),
    (None, "value"),
])
def test_hostile_payloads_are_refused_with_the_field_at_fault(payload: bytes | None, field: str) -> None:
    assert refused_field(payload, BOUNDS) == field  # type: ignore[arg-type]


def test_limits_admit_what_is_ours() -> None:
    assert decode(body(trade_id=MAX_ID, first_trade_id=MAX_ID, last_trade_id=MAX_ID), BOUNDS).trade_id == MAX_ID  # type: ignore[union-attr]
    assert decode(body(trade_time=NOW_MS + 86_400_000), BOUNDS).trade_time == NOW_MS + 86_400_000  # type: ignore[union-attr]
    assert decode(body(trade_time=1_498_867_200_000), BOUNDS).trade_time == 1_498_867_200_000  # type: ignore[union-attr]
    assert isinstance(decode(body(GAP, reason="[" * 100 + "{\\\"" * 50), BOUNDS), Gap)
    assert decode(body(symbol="BTCUSDT"), NO_BOUNDS).symbol == "BTCUSDT"  # type: ignore[union-attr]
    assert decode(body(symbol=" xrpeth\n"), BOUNDS).symbol == "XRPETH"  # type: ignore[union-attr]
    assert decode(body(trade_time=4_070_908_800_000), NO_BOUNDS).trade_time == 4_070_908_800_000  # type: ignore[union-attr]


def test_nesting_depth_counts_brackets_outside_strings_only() -> None:
    assert nesting_depth(b'{"a": [1, {"b": "]]]}}[[[\\"[["}]}') == 3
    assert nesting_depth(b"[" * 100_000) == 100_000
    assert nesting_depth(b'"\\\\" [[') == 2


def test_bounds_follow_the_clock_but_never_pass_the_hard_ceiling() -> None:
    assert Bounds.at(NOW_MS).max_time_ms == NOW_MS + 86_400_000
    assert Bounds.at(NOW_MS).symbols is None
    assert Bounds.at(10**14).max_time_ms == contract.MAX_TIME_MS


# -- the fast path accepts exactly what the careful path accepts --------------------------------
VARIANTS: list[dict[str, Any]] = [
    {}, {"symbol": "xrpeth"}, {"symbol": "BTCUSDT"}, {"symbol": "XRP\x00ETH"}, {"symbol": "XRPETH\n"},
    {"trade_id": MAX_ID}, {"trade_id": MAX_ID + 1}, {"trade_id": -1}, {"trade_id": True}, {"trade_id": 1.0},
    {"first_trade_id": None, "last_trade_id": None}, {"first_trade_id": 5, "last_trade_id": 4},
    {"first_trade_id": 0, "last_trade_id": MAX_ID}, {"first_trade_id": 0, "last_trade_id": MAX_ID + 1},
    {"first_trade_id": -1, "last_trade_id": 3}, {"first_trade_id": 1, "last_trade_id": None},
    {"price": "0.000"}, {"price": "1.0\n"}, {"price": "1e3"}, {"qty": "0"}, {"qty": "-1"},
    {"trade_time": NOW_MS + 86_400_000}, {"trade_time": NOW_MS + 86_400_001}, {"trade_time": 1_498_867_200_000},
    {"trade_time": 1_498_867_199_999}, {"event_time": NOW_MS + 86_400_001}, {"ingest_time": 4_102_444_800_001},
    {"buyer_is_maker": 1}, {"stream": "depth"}, {"stream": None},
]


def outcome(payload: dict[str, Any], bounds: Bounds) -> object:
    try:
        return from_body(payload, bounds)
    except ContractError as exc:
        return exc.field


@pytest.mark.parametrize("change", VARIANTS)
@pytest.mark.parametrize("bounds", [BOUNDS, NO_BOUNDS, Bounds.at(NOW_MS)])
def test_fast_path_decides_as_the_careful_path(change: dict[str, Any], bounds: Bounds,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    payload = {**TRADE, **change}
    fast = contract._fast_trade(payload, bounds)
    monkeypatch.setattr(contract, "_fast_trade", lambda _body, _bounds: None)
    careful = outcome(payload, bounds)
    if fast is not None:
        assert careful == fast
    else:
        # Refused by the fast path: either refused by the careful one, or accepted after
        # upper-casing the symbol (the only normalisation the careful path does).
        assert not isinstance(careful, Trade) or payload["symbol"] != careful.symbol


# -- batches ------------------------------------------------------------------------------------
def record(offset: int, value: bytes | None, partition: int = 0) -> Record:
    return Record("trades", partition, offset, b"XRPETH", value)


def test_build_batch_keeps_each_message_with_its_record() -> None:
    records = [record(0, body(trade_id=1)), record(1, body(trade_id=2**63)), record(2, body(GAP)),
               record(3, b"[" * 5000), record(4, body(trade_id=3)), record(0, body(trade_id=4), partition=1)]
    batch = build_batch(records, BOUNDS)
    assert [t.trade_id for t in batch.trades] == [1, 3, 4]
    assert [r.offset for r in batch.trade_records] == [0, 4, 0]
    assert batch.gap_records == [records[2]]
    assert [(d.record.offset, d.field) for d in batch.dead_letters] == [(1, "trade_id"), (3, "value")]
    assert batch.next_offsets == {("trades", 0): 5, ("trades", 1): 1}
    assert (batch.size, batch.messages) == (6, 4)


def test_anything_a_payload_raises_makes_a_dead_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(_payload: bytes | None, _bounds: Bounds) -> Trade:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(batch_module, "decode", explode)
    batch = build_batch([record(7, b"{}")], BOUNDS)
    assert [(d.record.offset, d.field, d.reason) for d in batch.dead_letters] == [
        (7, "value", "undecodable: RecursionError: maximum recursion depth exceeded")]


def test_dead_letter_reasons_are_short_and_storable() -> None:
    letter = DeadLetter.of(record(0, None), "value", "a\x00b" + "x" * 1000)
    assert letter.reason.startswith("a\\x00b") and "\x00" not in letter.reason
    assert len(letter.reason) <= batch_module.MAX_REASON_CHARS + 3


def test_trade_days_are_the_distinct_days_not_the_span() -> None:
    batch = build_batch([record(0, body(trade_time=4_070_908_800_000)), record(1, body(trade_id=2)),
                         record(2, body(trade_id=3))], NO_BOUNDS)
    assert batch.trade_days() == [date(2025, 11, 30), date(2099, 1, 1)]  # TRADE's time is 1 s before NOW_MS
    assert Batch().trade_days() == []


def test_halves_split_messages_and_keep_records_aligned() -> None:
    records = [record(n, body(trade_id=n)) for n in range(5)] + [record(5 + n, body(GAP, from_id=n)) for n in range(3)]
    batch = build_batch(records, BOUNDS)
    first, second = batch.halves()
    assert (first.messages, second.messages) == (4, 4)
    assert [t.trade_id for t in first.trades] == [r.offset for r in first.trade_records] == [0, 1, 2, 3]
    assert [t.trade_id for t in second.trades] == [4] and [r.offset for r in second.gap_records] == [5, 6, 7]
    assert not first.next_offsets and not second.dead_letters
    empty, single = build_batch(records[:1], BOUNDS).halves()
    assert (empty.messages, single.messages, single.only_record()) == (0, 1, records[0])


def test_data_errors_are_told_from_connection_trouble() -> None:
    assert is_data_error(psycopg2.DataError()) and is_data_error(psycopg2.IntegrityError())
    assert is_data_error(psycopg2.errors.NumericValueOutOfRange()) and is_data_error(psycopg2.errors.RaiseException())
    assert not is_data_error(psycopg2.OperationalError()) and not is_data_error(psycopg2.InterfaceError())
    assert not is_data_error(psycopg2.errors.LockNotAvailable())
    assert not is_data_error(psycopg2.errors.DeadlockDetected())
    # A schema or privilege problem would refuse every message: not the messages' fault.
    assert not is_data_error(psycopg2.errors.UndefinedFunction()) and not is_data_error(psycopg2.ProgrammingError())
    assert not is_data_error(psycopg2.errors.InsufficientPrivilege())


class FakeStore(TradeStore):
    """Refuses any batch holding one of ``bad`` trade ids, as PostgreSQL would; records commits."""

    def __init__(self, bad: set[int]) -> None:
        super().__init__(ConsumerSettings.from_env({"CANDLESTACK_PG_HOST": "/nowhere"}).postgres)
        self.bad = bad
        self.committed: list[Batch] = []

    def write(self, batch: Batch) -> WriteResult:
        if any(t.trade_id in self.bad for t in batch.trades):
            raise psycopg2.errors.NumericValueOutOfRange("value out of range")
        self.committed.append(batch)
        return WriteResult(inserted=len(batch.trades), duplicates=0, dead_letters=len(batch.dead_letters),
                           gaps=len(batch.gaps))


@pytest.mark.parametrize("bad", [set(), {0}, {99}, {13, 14}, {5, 50, 97}, set(range(100))])
def test_bisecting_stores_every_good_message_once_and_sets_aside_exactly_the_bad(bad: set[int]) -> None:
    records = [record(n, body(trade_id=n)) for n in range(100)] + [record(100, b"nope")]
    store = FakeStore(bad)
    result = store.write_isolating(build_batch(records, BOUNDS))
    stored = sorted(t.trade_id for b in store.committed for t in b.trades)
    letters = [d for b in store.committed for d in b.dead_letters]
    assert stored == [n for n in range(100) if n not in bad]
    assert sorted(d.record.offset for d in letters) == sorted([*bad, 100])
    assert sorted(d.record.offset for d in result.refused) == sorted(bad)
    assert all(d.reason.startswith("refused by the database: NumericValueOutOfRange") for d in result.refused)
    assert (result.inserted, result.dead_letters) == (100 - len(bad), len(bad) + 1)
    # Cost: about 2 log2(n) transactions per bad message, one when none is bad.
    assert len(store.committed) <= 1 + len(bad) * 16


def test_connection_trouble_is_not_bisected() -> None:
    class Down(FakeStore):
        def write(self, batch: Batch) -> WriteResult:
            raise psycopg2.OperationalError("server closed the connection")

    with pytest.raises(psycopg2.OperationalError):
        Down(set()).write_isolating(build_batch([record(0, body()), record(1, body(trade_id=2))], BOUNDS))


# -- settings -----------------------------------------------------------------------------------
def test_consumer_stores_the_configured_symbols_unless_told_to_accept_any() -> None:
    base = {"CANDLESTACK_PG_HOST": "/run/postgresql"}
    assert ConsumerSettings.from_env(base).symbols == ("BTCUSDT", "ETHUSDT")
    assert ConsumerSettings.from_env({**base, "CANDLESTACK_SYMBOLS": "xrpeth"}).symbols == ("XRPETH",)
    assert ConsumerSettings.from_env({**base, "CANDLESTACK_CONSUMER_ACCEPT_ANY_SYMBOL": "true"}).symbols is None
    assert Bounds.at(int(time.time() * 1000), symbols=None).symbols is None


def test_accept_any_symbol_must_be_a_boolean() -> None:
    with pytest.raises(SettingsError) as error:
        ConsumerSettings.from_env({"CANDLESTACK_PG_HOST": "/run/postgresql",
                                   "CANDLESTACK_CONSUMER_ACCEPT_ANY_SYMBOL": "maybe"})
    assert error.value.variable == "CANDLESTACK_CONSUMER_ACCEPT_ANY_SYMBOL"


def test_a_consumer_without_partitions_says_so_once_a_minute_after_the_first_minute() -> None:
    now = [0.0]
    watch = AssignmentWatch(warn_after_s=60, clock=lambda: now[0])
    now[0] = 59
    assert watch.overdue_s() is None
    now[0] = 61
    assert watch.overdue_s() == 61
    now[0] = 100
    assert watch.overdue_s() is None, "a second warning within the minute"
    now[0] = 122
    assert watch.overdue_s() == 122
    watch.assigned(3)
    now[0] = 1000
    assert watch.overdue_s() is None
    assert consumer_metrics.ASSIGNED._value.get() == 3
    watch.assigned(0)  # revoked: the clock starts again
    now[0] = 1059
    assert watch.overdue_s() is None
    now[0] = 1061
    assert watch.overdue_s() == 61
    assert consumer_metrics.ASSIGNED._value.get() == 0
