"""The producer's pure pieces, without services: id and gap bookkeeping, the state file, the
REST etiquette policy, and the pending-gap flow of the stream against a fake REST and publisher."""

from __future__ import annotations

import email.message
import http.client
import http.server
import json
import os
import ssl
import threading
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from candlestack.core.contract import Gap, Trade
from candlestack.core.errors import ContractError, SettingsError
from candlestack.core.rest_weight import USED_WEIGHT_HEADER, RestBudget, RestThrottled, retry_after_s, used_weight
from candlestack.core.settings import Env, KafkaSettings, LogSettings, MetricsSettings, ProducerSettings
from candlestack.producer import state as state_module
from candlestack.producer.binance import (
    AGG_TRADES_WEIGHT,
    HISTORICAL_TRADES_WEIGHT,
    RestClient,
    is_retryable_rest,
    page_weight,
)
from candlestack.producer.gaps import IdTracker, Missing, PendingGap, pending_retry_delay_s
from candlestack.producer.main import open_state
from candlestack.producer.publisher import Publisher
from candlestack.producer.state import Progress, StateFile, StateFileError, decode, encode, write_atomic
from candlestack.producer.stream import TradeStream
from tests.harness.services import free_port

T0 = 1_700_000_000_000


# -- gaps -------------------------------------------------------------------------------------
def test_missing_size_and_tracker_repeats() -> None:
    ids = IdTracker({"X": 10})
    assert Missing("X", 11, 14).size == 4
    assert ids.missing_before("X", 15) == Missing("X", 11, 14)
    assert ids.missing_before("Y", 15) is None
    assert not ids.is_new("X", 10)
    ids.advance("X", 5)
    assert ids.last_ids == {"X": 10}


def test_pending_retry_delay_grows_is_capped_and_never_undercuts_retry_after() -> None:
    delays = [pending_retry_delay_s(n) for n in range(10)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(delays) == 60.0
    assert pending_retry_delay_s(0, retry_after_s=120) == 120
    assert pending_retry_delay_s(6, retry_after_s=3) == 60
    assert pending_retry_delay_s(10_000) == 60


def test_pending_gap_cursor_and_acknowledgement() -> None:
    gap = PendingGap("X", 100, 102, "HTTP 429", T0)
    assert gap.cursor == 100 and not gap.published and not gap.acknowledged
    assert gap.unpublished() == Missing("X", 100, 102)
    gap.cursor = 103
    assert gap.published and not gap.acknowledged


# -- progress (delivery reports) --------------------------------------------------------------
def test_acked_id_is_the_highest_delivered_and_freezes_after_a_failed_delivery() -> None:
    progress = Progress("trade")
    progress.trade_acked("X", 5)
    progress.trade_acked("X", 6)
    progress.trade_acked("X", 3)
    assert progress.acked == {"X": 6}
    progress.delivery_failed("X")
    progress.trade_acked("X", 7)
    progress.trade_acked("Y", 1)
    assert progress.acked == {"X": 6, "Y": 1}


def test_pending_gap_shrinks_as_its_trades_are_acked_and_ends_when_all_are() -> None:
    progress = Progress("trade", {"X": 200})
    progress.add_pending(PendingGap("X", 100, 102, "HTTP 429", T0))
    progress.add_pending(PendingGap("Y", 1, 1, "HTTP 429", T0))
    assert progress.resume_points() == {"X": 200, "Y": 1}
    progress.trade_acked("X", 100)
    assert progress.pending[("X", 102)].from_id == 101
    progress.trade_acked("X", 101)
    progress.trade_acked("X", 102)
    assert ("X", 102) not in progress.pending
    assert progress.acked["X"] == 200
    progress.gap_acked("Y", 1, pending=True)
    assert ("Y", 1) in progress.pending
    progress.gap_acked("Y", 1, pending=False)
    assert not progress.pending


def test_publisher_reports_acks_by_kind_and_failures() -> None:
    class Listener:
        def __init__(self) -> None:
            self.events: list[tuple[Any, ...]] = []

        def trade_acked(self, symbol: str, trade_id: int) -> None:
            self.events.append(("trade", symbol, trade_id))

        def gap_acked(self, symbol: str, to_id: int, *, pending: bool) -> None:
            self.events.append(("gap", symbol, to_id, pending))

        def delivery_failed(self, symbol: str) -> None:
            self.events.append(("failed", symbol))

    class Msg:
        def key(self) -> bytes:
            return b"X"

    listener = Listener()
    publisher = Publisher.__new__(Publisher)
    publisher._listener = listener
    publisher.delivery_errors = 0
    publisher._on_delivery(trade("X", 7), None, Msg())
    publisher._on_delivery(Gap("X", "trade", 1, 3, "r", T0, pending=True), None, Msg())
    publisher._on_delivery(trade("X", 8), "broker gone", Msg())  # type: ignore[arg-type]
    assert listener.events == [("trade", "X", 7), ("gap", "X", 3, True), ("failed", "X")]
    assert publisher.delivery_errors == 1


# -- the state file ---------------------------------------------------------------------------
def test_state_round_trip(tmp_path: Path) -> None:
    progress = Progress("aggTrade", {"BTCUSDT": 10, "ETHUSDT": 20})
    progress.add_pending(PendingGap("ETHUSDT", 5, 8, "HTTP 429", T0))
    data = encode(progress, saved_at=T0)
    body = json.loads(data)
    assert body == {"v": 1, "stream": "aggTrade", "saved_at": T0, "acked": {"BTCUSDT": 10, "ETHUSDT": 20},
                    "pending": [{"symbol": "ETHUSDT", "from_id": 5, "to_id": 8, "reason": "HTTP 429",
                                 "detected_at": T0}]}
    back = decode(data, tmp_path / "f")
    assert back.acked == progress.acked and back.stream == "aggTrade"
    assert [(g.symbol, g.from_id, g.to_id, g.cursor) for g in back.pending.values()] == [("ETHUSDT", 5, 8, 5)]


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"v":2}', b'{"v":1,"stream":"x","acked":{},"pending":[]}',
                                     b'{"v":1,"stream":"trade","acked":{"X":-1},"pending":[]}',
                                     b'{"v":1,"stream":"trade","acked":{"X":"1"},"pending":[]}',
                                     b'{"v":1,"stream":"trade","acked":{},"pending":[{"symbol":"X"}]}',
                                     b'{"v":1,"stream":"trade","acked":{},"pending":[{"symbol":"X","from_id":5,'
                                     b'"to_id":4,"reason":"r","detected_at":1}]}'])
def test_malformed_state_files_are_refused(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(StateFileError):
        decode(content, tmp_path / "f")


def test_state_file_load_save_and_throttle(tmp_path: Path) -> None:
    state_file = StateFile(tmp_path / "state", stream="trade", interval_s=1.0)
    progress = state_file.load()
    assert progress.acked == {} and not state_file.path.exists()
    progress.trade_acked("X", 1)
    state_file.maybe_save(progress, now=100.0, saved_at=T0)
    assert json.loads(state_file.path.read_bytes())["acked"] == {"X": 1}
    progress.trade_acked("X", 2)
    state_file.maybe_save(progress, now=100.5, saved_at=T0)  # within the interval: not yet
    assert json.loads(state_file.path.read_bytes())["acked"] == {"X": 1}
    assert not state_file.due(100.5) and state_file.due(101.0)
    state_file.maybe_save(progress, now=101.0, saved_at=T0)
    assert StateFile(tmp_path / "state", stream="trade").load().acked == {"X": 2}
    # Another stream type's ids mean nothing here.
    assert StateFile(tmp_path / "state", stream="aggTrade").load().acked == {}
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["producer-state.json"]


def test_state_file_is_not_rewritten_when_nothing_changed(tmp_path: Path) -> None:
    state_file = StateFile(tmp_path, stream="trade")
    progress = Progress("trade", {"X": 1})
    progress.changes = 1
    assert state_file.save(progress, saved_at=T0)
    mtime = state_file.path.stat().st_mtime_ns
    os.utime(state_file.path, ns=(0, 0))
    assert state_file.save(progress, saved_at=T0)
    assert state_file.path.stat().st_mtime_ns == 0 != mtime


def test_write_atomic_keeps_the_old_file_when_the_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "producer-state.json"
    write_atomic(path, b"old\n")
    assert path.read_bytes() == b"old\n"

    def crash(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state_module.os, "fsync", crash)
    with pytest.raises(OSError):
        write_atomic(path, b"new\n")
    assert path.read_bytes() == b"old\n"


def test_a_failed_save_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    state_file = StateFile(blocker, stream="trade")
    progress = Progress("trade", {"X": 1})
    progress.changes = 1
    assert not state_file.save(progress, saved_at=T0)
    assert state_file.failures == 1


def test_unreadable_state_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "producer-state.json").write_bytes(b"{")
    with pytest.raises(StateFileError):
        StateFile(tmp_path, stream="trade").load()


# -- REST etiquette ---------------------------------------------------------------------------
def http_error(code: int, **headers: str) -> urllib.error.HTTPError:
    message = email.message.Message()
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    return urllib.error.HTTPError("http://x", code, "x", message, None)


@pytest.mark.parametrize(("exc", "retryable"), [
    (http_error(429), True), (http_error(418), True), (http_error(503), True), (http_error(400), False),
    (http_error(404), False), (RestThrottled(3, "429", "x"), True),
    (urllib.error.URLError("refused"), True), (TimeoutError(), True), (ConnectionResetError(), True),
    (ssl.SSLError("bad record mac"), True), (http.client.IncompleteRead(b"[{"), True),
    (json.JSONDecodeError("Expecting value", "[{", 2), True),
    (ContractError("rest", "expected a JSON list"), False), (ValueError("bad"), False),
])
def test_which_rest_failures_are_retried(exc: BaseException, retryable: bool) -> None:
    assert is_retryable_rest(exc) is retryable


def test_retry_after_and_used_weight_headers() -> None:
    assert retry_after_s("7") == 7.0
    assert retry_after_s(None, default=10) == 10
    assert retry_after_s("soon", default=10) == 10
    assert retry_after_s("-1", default=10) == 10
    assert used_weight(http_error(200, X_MBX_USED_WEIGHT_1M="1234").headers) == 1234
    assert used_weight(http_error(200).headers) is None
    assert used_weight(None) is None
    assert (page_weight("trade"), page_weight("aggTrade")) == (HISTORICAL_TRADES_WEIGHT, AGG_TRADES_WEIGHT) == (25, 4)


def test_weight_budget_waits_for_the_next_minute_and_honours_bans() -> None:
    budget = RestBudget(limit=100)
    minute = 1_700_000_040.0  # a clock minute starts here
    assert minute % 60 == 0
    assert budget.wait_s(25, minute + 10) == 0
    budget.spend(25, minute + 10, reported=None)
    budget.spend(25, minute + 11, reported=80)  # the server's count wins
    assert budget.used == 80
    assert budget.wait_s(20, minute + 12) == 0
    assert budget.wait_s(25, minute + 12) == pytest.approx(48 + 1)
    assert budget.wait_s(25, minute + 60) == 0  # a new minute
    budget.block(30, minute + 70)
    assert budget.wait_s(4, minute + 80) == pytest.approx(20)
    budget.block(5, minute + 80)  # a shorter ban does not shorten the longer one
    assert budget.wait_s(4, minute + 80) == pytest.approx(20)
    assert budget.wait_s(4, minute + 100) == 0


# -- settings ---------------------------------------------------------------------------------
def test_state_dir_and_weight_limit_settings(tmp_path: Path) -> None:
    assert ProducerSettings.from_env({}).state_dir is None
    assert ProducerSettings.from_env({}).rest_weight_limit == 5000
    assert ProducerSettings.from_env({"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}).state_dir == Path("/var/lib/a")
    env = {"STATE_DIRECTORY": "/var/lib/a", "CANDLESTACK_PRODUCER_STATE_DIR": str(tmp_path)}
    assert ProducerSettings.from_env(env).state_dir == tmp_path
    env["CANDLESTACK_PRODUCER_STATE_DIR"] = "off"
    assert ProducerSettings.from_env(env).state_dir is None
    with pytest.raises(SettingsError, match="PRODUCER_STATE_DIR"):
        ProducerSettings.from_env({"CANDLESTACK_PRODUCER_STATE_DIR": "relative/dir"})
    with pytest.raises(SettingsError, match="PRODUCER_REST_WEIGHT_LIMIT"):
        ProducerSettings.from_env({"CANDLESTACK_PRODUCER_REST_WEIGHT_LIMIT": "10"})
    assert Env({"STATE_DIRECTORY": " "}).unprefixed("STATE_DIRECTORY") is None


# -- the stream's gap handling, against fakes -------------------------------------------------
def trade(symbol: str, trade_id: int) -> Trade:
    return Trade(symbol, "trade", trade_id, "1.5", "2", T0, T0, True, T0)


class FakePublisher:
    def __init__(self) -> None:
        self.messages: list[Trade | Gap] = []

    def publish(self, message: Trade | Gap) -> None:
        self.messages.append(message)

    def poll(self) -> None:
        pass


class FakeRest:
    """Serves trades 1..newest of every symbol; ``fail`` is raised (then cleared) by the next page."""

    def __init__(self, newest: int) -> None:
        self.newest = newest
        self.fail: BaseException | None = None
        self.requests = 0

    def newest_id(self, symbol: str) -> int | None:
        self._maybe_fail()
        return self.newest

    def trades(self, symbol: str, from_id: int, to_id: int | None, *, ingest_time: int) -> Iterator[Trade]:
        self._maybe_fail()
        last = self.newest if to_id is None else min(to_id, self.newest)
        for trade_id in range(from_id, last + 1):
            yield trade(symbol, trade_id)

    def _maybe_fail(self) -> None:
        self.requests += 1
        if self.fail is not None:
            fail, self.fail = self.fail, None
            raise fail


def stream_with(rest: FakeRest, progress: Progress, *, max_trades: int = 100_000) -> tuple[TradeStream, FakePublisher]:
    settings = ProducerSettings(symbols=("X",), stream="trade", ws_url="ws://x", rest_url="http://x",
                                kafka=KafkaSettings(), metrics=MetricsSettings(), log=LogSettings(),
                                gap_fill_max_trades=max_trades)
    publisher = FakePublisher()
    stream = TradeStream(settings, publisher, stop=threading.Event(), progress=progress)  # type: ignore[arg-type]
    stream._rest = rest  # type: ignore[assignment]
    return stream, publisher


def ids(messages: list[Trade | Gap]) -> list[int]:
    return [m.trade_id for m in messages if isinstance(m, Trade)]


def gaps(messages: list[Trade | Gap]) -> list[tuple[int, int, bool]]:
    return [(m.from_id, m.to_id, m.pending) for m in messages if isinstance(m, Gap)]


def test_catch_up_starts_after_the_saved_acked_id() -> None:
    stream, publisher = stream_with(FakeRest(newest=120), Progress("trade", {"X": 100}))
    stream._catch_up()
    assert ids(publisher.messages) == list(range(101, 121))
    assert gaps(publisher.messages) == []


def test_catch_up_beyond_the_limit_is_one_exact_gap_and_nothing_fetched() -> None:
    rest = FakeRest(newest=1_000)
    stream, publisher = stream_with(rest, Progress("trade", {"X": 100}), max_trades=50)
    stream._catch_up()
    assert publisher.messages and gaps(publisher.messages) == [(101, 1000, False)]
    assert ids(publisher.messages) == []
    assert rest.requests == 1  # the newest id only


def test_throttled_fill_becomes_one_pending_gap_then_fills_bypassing_the_live_ids() -> None:
    rest = FakeRest(newest=120)
    progress = Progress("trade", {"X": 100})
    stream, publisher = stream_with(rest, progress)
    rest.fail = RestThrottled(5.0, "429", "HTTP 429")
    stream._fill(Missing("X", 101, 110))
    assert gaps(publisher.messages) == [(101, 110, True)]
    gap = progress.pending[("X", 110)]
    # Retry-After 5 s: not sooner.
    now = time.monotonic()
    assert gap.due >= now + 4.9
    stream.accept(trade("X", 111), source="ws")  # the live stream goes on meanwhile
    stream._retry_pending(now)
    assert ids(publisher.messages) == [111]
    stream._retry_pending(gap.due)
    assert ids(publisher.messages) == [111, *range(101, 111)]
    assert gap.published and ("X", 110) in progress.pending  # until acknowledged
    for trade_id in (111, *range(101, 111)):
        progress.trade_acked("X", trade_id)
    assert not progress.pending and progress.acked == {"X": 111}
    assert gaps(publisher.messages) == [(101, 110, True)]


def test_a_pending_gap_that_can_never_be_filled_is_recorded_final() -> None:
    rest = FakeRest(newest=120)
    progress = Progress("trade", {"X": 100})
    progress.add_pending(PendingGap("X", 50, 60, "HTTP 429", T0))
    stream, publisher = stream_with(rest, progress)
    rest.fail = http_error(400)
    stream._retry_pending(1e12)
    assert gaps(publisher.messages) == [(50, 60, False)]
    progress.gap_acked("X", 60, pending=False)
    assert not progress.pending


def test_a_pending_gap_still_throttled_backs_off_without_a_new_message() -> None:
    rest = FakeRest(newest=120)
    progress = Progress("trade", {"X": 100})
    progress.add_pending(PendingGap("X", 50, 60, "HTTP 429", T0))
    stream, publisher = stream_with(rest, progress)
    rest.fail = urllib.error.URLError("refused")
    stream._retry_pending(1000.0)
    gap = progress.pending[("X", 60)]
    assert gap.attempts == 1 and gap.due >= 1001.0 and publisher.messages == []


def test_loaded_pending_gaps_are_announced_and_resume_after_their_end() -> None:
    progress = Progress("trade", {"X": 40})
    progress.add_pending(PendingGap("X", 50, 60, "HTTP 429", T0))
    stream, publisher = stream_with(FakeRest(newest=70), progress)
    stream._announce_loaded_gaps()
    assert gaps(publisher.messages) == [(50, 60, True)]
    assert stream._ids.last_ids == {"X": 60}


def test_an_unexpected_error_in_a_session_is_a_reconnect_not_an_exit() -> None:
    stream, _publisher = stream_with(FakeRest(newest=1), Progress("trade"))
    calls = 0

    def session() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            stream._stop.set()
        raise json.JSONDecodeError("Expecting value", "", 0)

    stream._session = session  # type: ignore[method-assign]
    stream._backoff.initial_s = stream._backoff.max_s = 0.001
    stream.run()
    assert calls == 3 and stream.session_errors == 3


# -- the REST client against a local HTTP server ----------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    answers: list[tuple[int, dict[str, str], bytes]] = []
    paths: list[str] = []

    def do_GET(self) -> None:
        self.paths.append(self.path)
        status, headers, body = self.answers.pop(0)
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        # A Content-Length longer than the body: the answer ends early, as a cut connection.
        self.wfile.write(body[: int(headers.get("X-Send", len(body)))])

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def rest_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"answers": [], "paths": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_rest_client_honours_retry_after_and_the_weight_header(rest_server: tuple[str, type[_Handler]]) -> None:
    url, handler = rest_server
    clock = [1_700_000_040.0]
    client = RestClient(url, "trade", budget=RestBudget(limit=100), wall=lambda: clock[0])
    row = {"id": 7, "price": "1.5", "qty": "2", "time": T0, "isBuyerMaker": True}
    handler.answers += [
        (429, {"Retry-After": "3"}, b'{"code":-1003,"msg":"Too much request weight used"}'),
        (200, {USED_WEIGHT_HEADER: "90"}, json.dumps([row]).encode()),
    ]
    with pytest.raises(RestThrottled) as throttled:
        client.page("X", 5)
    assert (throttled.value.kind, throttled.value.wait_s) == ("429", 3.0)
    clock[0] += 2.5
    with pytest.raises(RestThrottled) as held:  # still inside Retry-After: not even sent
        client.page("X", 5)
    assert held.value.kind == "budget" and held.value.wait_s == pytest.approx(0.5)
    assert len(handler.paths) == 1
    clock[0] += 0.5
    assert client.newest_id("XY") == 7
    assert handler.paths[-1] == "/api/v3/historicalTrades?symbol=XY&limit=1"
    assert client.budget.used == 90
    with pytest.raises(RestThrottled):  # 90 + 25 > 100 until the next minute
        client.page("X", 8)


def test_rest_client_truncated_and_garbled_answers_are_retryable(rest_server: tuple[str, type[_Handler]]) -> None:
    url, handler = rest_server
    client = RestClient(url, "aggTrade", budget=RestBudget(limit=1000))
    handler.answers += [(200, {"X-Send": "5"}, b'[{"a":1,"p":"1"}]'), (200, {}, b'[{"a":1,')]
    for _ in range(2):
        with pytest.raises((http.client.IncompleteRead, json.JSONDecodeError)) as failure:
            client.page("X", 1)
        assert is_retryable_rest(failure.value)


def test_a_pending_gap_beyond_a_lowered_limit_is_recorded_final() -> None:
    progress = Progress("trade", {"X": 100})
    progress.add_pending(PendingGap("X", 10, 60, "HTTP 429", T0))
    stream, publisher = stream_with(FakeRest(newest=120), progress, max_trades=20)
    stream._retry_pending(1e12)
    assert gaps(publisher.messages) == [(10, 60, False)] and ids(publisher.messages) == []


def test_an_unusable_state_file_is_kept_aside_and_the_producer_starts_fresh(tmp_path: Path) -> None:
    (tmp_path / "producer-state.json").write_bytes(b"{half")
    settings = ProducerSettings.from_env({"CANDLESTACK_PRODUCER_STATE_DIR": str(tmp_path)})
    progress, state_file = open_state(settings)
    assert progress.acked == {} and state_file is not None
    assert (tmp_path / "producer-state.json.bad").read_bytes() == b"{half"
    assert open_state(ProducerSettings.from_env({}))[1] is None


def test_what_the_broker_never_acknowledged_is_not_in_the_state_file(tmp_path: Path) -> None:
    # Nothing listens on this port: the message stays queued and no delivery report comes.
    progress = Progress("trade", {"X": 4})
    publisher = Publisher(KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", topic="t"),
                          buffer_max_messages=10, listener=progress)
    publisher.publish(trade("X", 5))
    assert publisher.flush(0.2) == 1
    state_file = StateFile(tmp_path, stream="trade")
    progress.changes += 1
    assert state_file.save(progress, saved_at=T0)
    assert StateFile(tmp_path, stream="trade").load().acked == {"X": 4}
