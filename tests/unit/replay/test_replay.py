"""The Binance-protocol replay feed (``src/replay``).

Pure parts are tested directly; the server is started as a subprocess
(``python -m candlestack.replay --listen 127.0.0.1:0``) and read with websocket-client and urllib, as the
producer reads Binance.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

from candlestack.core.contract import trade_from_binance
from candlestack.core.errors import ContractError
from candlestack.replay.events import encode_frame, event, malformed_frame, server_shutdown_frame
from candlestack.replay.faults import RestFaultError, RestFaults
from candlestack.replay.feed import Feed, Pace, SymbolHistory
from candlestack.replay.model import InvalidStream, ReplayTrade, SourceError
from candlestack.replay.sources import CsvSource, SyntheticSource, looped, parse_csv_argument, symbol_from_path
from candlestack.replay.streams import RequestError, Stream, parse_path, parse_request

ROOT = Path(__file__).resolve().parents[3]
XRPETH_CSV = ROOT / "tests" / "data" / "binance" / "XRPETH-aggTrades-2019-10-11_to_2019-10-13.csv"
XRPETH_ROWS = 12_477
XRPETH_FIRST_ID = 13_519_807
NOW_MS = 1_700_000_000_000



def _trade(symbol: str = "BTCUSDT", trade_id: int = 1, time_ms: int = NOW_MS, **changes: Any) -> ReplayTrade:
    fields: dict[str, Any] = {
        "symbol": symbol, "kind": "trade", "trade_id": trade_id, "price": "100.50000000", "qty": "0.25000000",
        "time": time_ms, "is_buyer_maker": False, "first_id": trade_id, "last_id": trade_id,
    }
    fields.update(changes)
    return ReplayTrade(**fields)


# -- sources ----------------------------------------------------------------------------------


def test_aggtrades_csv_is_read_with_exact_strings_and_symbol_from_file_name() -> None:
    source = CsvSource(XRPETH_CSV, symbol_from_path(XRPETH_CSV))
    trades = list(source)
    assert source.symbol == "XRPETH"
    assert len(trades) == source.count() == XRPETH_ROWS
    first = trades[0]
    assert (first.kind, first.trade_id, first.price, first.qty) == (
        "aggTrade", XRPETH_FIRST_ID, "0.00141342", "23.00000000")
    assert (first.first_id, first.last_id, first.time, first.is_buyer_maker) == (
        15373518, 15373518, 1570752011620, True)
    assert [t.trade_id for t in trades] == list(range(XRPETH_FIRST_ID, XRPETH_FIRST_ID + XRPETH_ROWS))


def test_trades_csv_with_microseconds_and_explicit_symbol(tmp_path: Path) -> None:
    path = tmp_path / "whatever.csv"
    path.write_text(
        "100,0.5,2.0,1.0,1700000000000123,True,True\n"
        "101,0.6,1.0,0.6,1700000000001999,false,True\n"
    )
    assert parse_csv_argument(f"{path}=ethbtc") == (path, "ETHBTC")
    trades = list(CsvSource(path, "ETHBTC"))
    assert [(t.kind, t.trade_id, t.time, t.first_id, t.last_id) for t in trades] == [
        ("trade", 100, 1700000000000, 100, 100), ("trade", 101, 1700000000001, 101, 101)]
    assert trades[0].quote_qty == "1.0" and trades[1].is_buyer_maker is False


@pytest.mark.parametrize(("content", "line", "reason"), [
    ("1,2,3\n", 1, "3 columns"),
    ("1,0.1,1,1,1,1570752011620,True,True\n2,0.1,1,2,2,1570752011620,maybe,True\n", 2, "isBuyerMaker"),
    ("5,0.1,1,1,1,1570752011620,True,True\n5,0.1,1,2,2,1570752011620,True,True\n", 2, "does not follow"),
    ('1,"0.1",1,1,1,1570752011620,True,True\n', 1, "plain decimal"),
])
def test_bad_csv_rows_name_the_line(tmp_path: Path, content: str, line: int, reason: str) -> None:
    path = tmp_path / "BTCUSDT-trades.csv"
    path.write_text(content)
    with pytest.raises(SourceError) as caught:
        list(CsvSource(path, symbol_from_path(path)))
    assert caught.value.line == line and reason in caught.value.reason


def test_symbol_must_be_derivable_from_the_file_name() -> None:
    with pytest.raises(SourceError):
        symbol_from_path(Path("/data/x.csv"))


def test_synthetic_trades_are_seeded_consecutive_and_well_formed() -> None:
    ticks = iter(range(NOW_MS, NOW_MS + 10_000))
    source = SyntheticSource(("BTCUSDT", "ETHUSDT"), seed=7, count=400, clock=lambda: next(ticks))
    trades = list(source)
    assert len(trades) == 400
    for symbol in ("BTCUSDT", "ETHUSDT"):
        ids = [t.trade_id for t in trades if t.symbol == symbol]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert all(re.fullmatch(r"\d+\.\d{8}", t.price) and re.fullmatch(r"\d+\.\d{8}", t.qty) for t in trades)
    assert all(float(t.qty) > 0 and float(t.price) > 0 for t in trades)
    assert [t.time for t in trades] == sorted(t.time for t in trades)
    again = list(SyntheticSource(("BTCUSDT", "ETHUSDT"), seed=7, count=400, clock=lambda: NOW_MS))
    assert [(t.symbol, t.trade_id, t.price) for t in again] == [(t.symbol, t.trade_id, t.price) for t in trades]
    assert next(iter(SyntheticSource(("BTCUSDT",), start_id=42))).trade_id == 42


def test_loop_shifts_ids_and_times_forward() -> None:
    base = [_trade("XRPETH", 10, 1000, kind="aggTrade", first_id=100, last_id=101),
            _trade("XRPETH", 11, 1010, kind="aggTrade", first_id=102, last_id=102)]
    trades = [trade for _, trade in zip(range(6), looped(base), strict=False)]
    assert [t.trade_id for t in trades] == [10, 11, 12, 13, 14, 15]
    assert [(t.first_id, t.last_id) for t in trades[:4]] == [(100, 101), (102, 102), (103, 104), (105, 105)]
    assert [t.time for t in trades] == [1000, 1010, 1020, 1030, 1040, 1050]


# -- events, stream names ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["trade", "aggTrade"])
@pytest.mark.parametrize("stream", [None, "btcusdt@x"])
def test_fast_frame_encoding_is_exactly_the_json_of_the_event(kind: Any, stream: str | None) -> None:
    trade = _trade(kind="aggTrade", first_id=5, last_id=9, is_buyer_maker=True)
    body: Any = event(trade, kind)
    if stream is not None:
        body = {"stream": stream, "data": body}
    assert encode_frame(trade, kind, stream) == json.dumps(body, separators=(",", ":")).encode()


def test_events_follow_binance_field_mapping() -> None:
    raw = _trade(trade_id=7)
    assert event(raw, "aggTrade") == {
        "e": "aggTrade", "E": NOW_MS, "s": "BTCUSDT", "a": 7, "p": "100.50000000", "q": "0.25000000",
        "f": 7, "l": 7, "T": NOW_MS, "m": False, "M": True}
    aggregate = _trade(trade_id=7, kind="aggTrade", first_id=70, last_id=75)
    assert event(aggregate, "trade")["t"] == 7
    assert trade_from_binance(event(aggregate, "aggTrade"), ingest_time=NOW_MS).last_trade_id == 75


def test_every_malformed_frame_is_refused_by_the_contract() -> None:
    stream = Stream("btcusdt@aggTrade", "BTCUSDT", "aggTrade")
    for combined in (True, False):
        for number in range(8):
            frame = malformed_frame(number, stream, combined=combined)
            frame.decode("utf-8")  # a text frame must stay valid UTF-8
            try:
                body = json.loads(frame)
            except json.JSONDecodeError:
                continue
            data = body["data"] if combined else body
            with pytest.raises(ContractError):
                trade_from_binance(data, ingest_time=NOW_MS)


def test_server_shutdown_frame_shapes() -> None:
    assert json.loads(server_shutdown_frame(5, combined=False)) == {"e": "serverShutdown", "E": 5}
    assert json.loads(server_shutdown_frame(5, combined=True)) == {
        "stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": 5}}


def test_paths_and_stream_names() -> None:
    combined, streams = parse_path("/stream?streams=xrpeth@aggTrade/btcusdt@trade")
    assert combined and [(s.symbol, s.kind) for s in streams] == [("XRPETH", "aggTrade"), ("BTCUSDT", "trade")]
    assert parse_path("/ws/btcusdt@trade") == (False, (Stream("btcusdt@trade", "BTCUSDT", "trade"),))
    assert parse_path("/stream") == (True, ())
    for bad in ("/ws/BTCUSDT@trade", "/ws/btcusdt@depth", "/stream?streams=btcusdt"):
        with pytest.raises(InvalidStream):
            parse_path(bad)
    assert parse_request('{"method":"SUBSCRIBE","params":["a1@trade"],"id":3}').streams[0].symbol == "A1"
    with pytest.raises(RequestError) as caught:
        parse_request("{nope")
    assert caught.value.body["code"] == 3


# -- feed ---------------------------------------------------------------------------------------


def test_rate_pacing_publishes_n_per_second_and_pause_stops_the_clock() -> None:
    feed = Feed(SyntheticSource(("BTCUSDT",), seed=1, clock=lambda: NOW_MS), symbols=["BTCUSDT"],
                pace=Pace(speed=None, rate=100))
    assert feed.take_due(0.0, 1000) == []  # not started
    feed.start(10.0, NOW_MS)
    assert len(feed.take_due(10.0, 1000)) == 1
    assert len(feed.take_due(10.5, 1000)) == 50
    feed.pause(10.5)
    assert feed.take_due(20.0, 1000) == [] and feed.wait_time(20.0) is None
    feed.resume(20.0)
    assert len(feed.take_due(20.25, 1000)) == 25
    history = feed.history["BTCUSDT"]
    assert feed.published == len(history) == 76
    assert [t.trade_id for t in history.recent(76)] == list(range(history.ids()[0], history.ids()[0] + 76))


def test_speed_pacing_and_retime() -> None:
    source = [_trade(trade_id=i, time_ms=1_000_000 + 1000 * i) for i in range(5)]
    feed = Feed(source, symbols=["BTCUSDT"], pace=Pace(speed=10.0), retime=True, total=5)
    feed.start(0.0, NOW_MS)
    assert [t.time for t in feed.take_due(0.0, 100)] == [NOW_MS]
    assert feed.wait_time(0.0) == pytest.approx(0.1)
    assert [t.trade_id for t in feed.take_due(0.25, 100)] == [1, 2]
    assert [t.trade_id for t in feed.take_due(9.0, 100)] == [3, 4] and feed.done


def test_history_lookups_are_by_id_and_capped() -> None:
    history = SymbolHistory(max_size=10)
    for trade_id in range(100, 125):
        history.add(_trade(trade_id=trade_id, time_ms=NOW_MS + trade_id))
    assert 10 <= len(history) < 20 and history.dropped + len(history) == 25
    assert [t.trade_id for t in history.from_id(118, 3)] == [118, 119, 120]
    assert [t.trade_id for t in history.recent(2)] == [123, 124]
    assert [t.trade_id for t in history.between(NOW_MS + 122, NOW_MS + 123, 10)] == [122, 123]
    with pytest.raises(SourceError):
        history.add(_trade(trade_id=124))


# -- the server, as a subprocess ------------------------------------------------------------------


class Replay:
    """``candlestack replay`` in a subprocess on a free port, with HTTP helpers."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "CANDLESTACK_LOG_LEVEL": "INFO", "CANDLESTACK_LOG_FORMAT": "text"}
        command = [sys.executable, "-m", "replay", "--listen", "127.0.0.1:0", "--progress-every", "0", *args]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.lines: list[str] = []
        self._listening = threading.Event()
        self.port = 0
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 15
        while not self._listening.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                break
        if not self._listening.is_set():
            self.process.kill()
            raise AssertionError("replay did not start:\n" + "".join(self.lines))

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if (match := re.search(r'msg="replay feed listening".* port=(\d+)', line)) is not None:
                self.port = int(match.group(1))
                self._listening.set()

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def request(self, path: str, method: str = "GET") -> tuple[int, Any]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.headers["Content-Type"].startswith("application/json")
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def get(self, path: str) -> Any:
        status, body = self.request(path)
        assert status == 200, body
        return body

    def post(self, path: str) -> Any:
        status, body = self.request(path, "POST")
        assert status == 200, body
        return body

    def status(self) -> dict[str, Any]:
        return self.get("/_replay/status")  # type: ignore[no-any-return]

    def wait_for(self, condition: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if condition(status):
                return status
            assert time.monotonic() < deadline, f"timed out; last status {status}"
            time.sleep(0.05)

    def wait(self) -> int:
        """The exit status, once the process has ended and all its log lines are in."""
        status = self.process.wait(10)
        self._reader.join(5)
        return status

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait()


@pytest.fixture
def replay() -> Iterator[Callable[..., Replay]]:
    started: list[Replay] = []

    def start(*args: str) -> Replay:
        server = Replay(*args)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(5)


def connect(url: str) -> websocket.WebSocket:
    return websocket.create_connection(url, timeout=5, skip_utf8_validation=True)


def read(ws: websocket.WebSocket, *, count: int | None = None, timeout: float = 10.0) -> tuple[list[bytes], int | None]:
    """Text frames until ``count`` of them, the server's close (its code is returned) or ``timeout``."""
    frames: list[bytes] = []
    deadline = time.monotonic() + timeout
    while count is None or len(frames) < count:
        ws.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            opcode, frame = ws.recv_data_frame()
        except websocket.WebSocketTimeoutException:
            return frames, None
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            return frames, 1006
        if opcode == websocket.ABNF.OPCODE_CLOSE:  # websocket-client has answered it; hang up as a client does
            ws.shutdown()  # type: ignore[no-untyped-call]
            return frames, struct.unpack("!H", frame.data[:2])[0] if len(frame.data) >= 2 else 1005
        frames.append(bytes(frame.data))
    return frames, None


def ids_of(frames: list[bytes], field: str = "a") -> list[int]:
    return [json.loads(frame)["data"][field] for frame in frames]


def test_real_csv_as_fast_as_possible_delivers_every_aggtrade_in_order(replay: Callable[..., Replay]) -> None:
    server = replay("--csv", str(XRPETH_CSV), "--as-fast-as-possible")
    assert server.status()["published"] == 0  # the clock waits for a subscriber
    ws = connect(f"{server.ws}/stream?streams=xrpeth@aggTrade")
    frames, closed = read(ws, count=XRPETH_ROWS, timeout=30)
    assert closed is None
    assert ids_of(frames) == list(range(XRPETH_FIRST_ID, XRPETH_FIRST_ID + XRPETH_ROWS))
    first = json.loads(frames[0])
    assert first == {"stream": "xrpeth@aggTrade", "data": {
        "e": "aggTrade", "E": 1570752011620, "s": "XRPETH", "a": XRPETH_FIRST_ID, "p": "0.00141342",
        "q": "23.00000000", "f": 15373518, "l": 15373518, "T": 1570752011620, "m": True, "M": True}}
    assert trade_from_binance(first["data"], ingest_time=NOW_MS).price == "0.00141342"
    status = server.wait_for(lambda s: s["done"])
    assert status["published"] == status["total"] == XRPETH_ROWS
    assert status["symbols"]["XRPETH"] == {"first_id": XRPETH_FIRST_ID, "published": XRPETH_ROWS,
                                           "last_published_id": XRPETH_FIRST_ID + XRPETH_ROWS - 1}
    assert status["connections"] == 1 and status["frames_sent"] == XRPETH_ROWS
    ws.close()
    assert server.stop() == 0
    assert any("replay done" in line for line in server.lines)


def test_combined_stream_of_synthetic_trades_parses_with_the_contract(replay: Callable[..., Replay]) -> None:
    server = replay("--synthetic", "BTCUSDT,ETHUSDT", "--rate", "500", "--seed", "3", "--count", "150")
    ws = connect(f"{server.ws}/stream?streams=btcusdt@trade/ethusdt@aggTrade/dogeusdt@trade")
    frames, _ = read(ws, count=150)
    assert len(frames) == 150
    seen: dict[str, list[int]] = {"BTCUSDT": [], "ETHUSDT": []}
    before = time.time_ns() // 1_000_000
    for frame in frames:
        body = json.loads(frame)
        trade = trade_from_binance(body["data"], ingest_time=before)
        assert body["stream"] == f"{trade.symbol.lower()}@{trade.stream}"
        assert trade.stream == ("trade" if trade.symbol == "BTCUSDT" else "aggTrade")
        assert abs(trade.trade_time - before) < 60_000  # "now"
        seen[trade.symbol].append(trade.trade_id)
    for ids in seen.values():  # DOGEUSDT is not traded: no frames, no error
        assert ids and ids == list(range(ids[0], ids[0] + len(ids)))
    assert server.wait_for(lambda s: s["done"])["published"] == 150


def test_rest_pages_by_from_id_and_shows_only_published_trades(replay: Callable[..., Replay]) -> None:
    server = replay("--csv", str(XRPETH_CSV), "--rate", "5000", "--start", "immediately")
    server.wait_for(lambda s: s["published"] >= 1500)
    server.post("/_replay/pause")
    last = server.status()["symbols"]["XRPETH"]["last_published_id"]
    time.sleep(0.1)
    assert server.status()["symbols"]["XRPETH"]["last_published_id"] == last  # paused
    rows: list[dict[str, Any]] = []
    while True:
        page = server.get(f"/api/v3/aggTrades?symbol=XRPETH&fromId={XRPETH_FIRST_ID + len(rows)}&limit=1000")
        rows += page
        if len(page) < 1000:
            break
    assert [row["a"] for row in rows] == list(range(XRPETH_FIRST_ID, last + 1))
    csv_rows = {t.trade_id: t for t in CsvSource(XRPETH_CSV, "XRPETH")}
    sample = rows[1234]
    expected = csv_rows[sample["a"]]
    assert sample == {"a": expected.trade_id, "p": expected.price, "q": expected.qty, "f": expected.first_id,
                      "l": expected.last_id, "T": expected.time, "m": expected.is_buyer_maker, "M": True}
    assert server.get(f"/api/v3/aggTrades?symbol=XRPETH&fromId={last + 1}") == []
    assert len(server.get(f"/api/v3/aggTrades?symbol=XRPETH&fromId={XRPETH_FIRST_ID}")) == 500  # default limit
    historical = server.get(f"/api/v3/historicalTrades?symbol=XRPETH&fromId={last - 1}&limit=5")
    assert [row["id"] for row in historical] == [last - 1, last]
    assert set(historical[0]) == {"id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"}
    assert [row["id"] for row in server.get("/api/v3/trades?symbol=XRPETH&limit=3")] == [last - 2, last - 1, last]
    assert server.get("/api/v3/ping") == {}
    assert abs(server.get("/api/v3/time")["serverTime"] - time.time() * 1000) < 60_000
    assert server.request("/api/v3/aggTrades?symbol=XRPETH&limit=1001") == (
        400, {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."})
    assert server.request("/api/v3/aggTrades?fromId=1")[1]["code"] == -1102
    assert server.request("/api/v3/aggTrades?symbol=XRPETH&fromId=-1")[1]["code"] == -1100
    assert server.get("/_replay/trades?symbol=XRPETH") == list(range(XRPETH_FIRST_ID, last + 1))
    server.post("/_replay/resume")
    server.wait_for(lambda s: s["symbols"]["XRPETH"]["last_published_id"] > last)


def test_unknown_symbol_is_a_binance_400_and_bad_streams_are_closed(replay: Callable[..., Replay]) -> None:
    server = replay("--synthetic", "BTCUSDT", "--rate", "50")
    invalid = {"code": -1121, "msg": "Invalid symbol."}
    for path in ("/api/v3/aggTrades?symbol=XRPETH&fromId=1", "/api/v3/historicalTrades?symbol=XRPETH",
                 "/api/v3/trades?symbol=XRPETH", "/_replay/trades?symbol=XRPETH"):
        assert server.request(path) == (400, invalid)
    assert server.request("/api/v3/nothing")[0] == 404
    assert server.request("/_replay/pause")[0] == 405  # control actions are POSTs
    ws = connect(f"{server.ws}/stream?streams=btcusdt@depth")
    assert read(ws)[1] == 1008
    assert server.status()["started"] is False  # a refused connection does not start the market


def test_disconnect_every_drops_clients_and_rest_fills_the_gaps(replay: Callable[..., Replay]) -> None:
    server = replay("--synthetic", "BTCUSDT", "--rate", "400", "--seed", "5", "--disconnect-every", "0.6")
    received: list[int] = []
    codes: list[int | None] = []
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        ws = connect(f"{server.ws}/ws/btcusdt@trade")
        frames, code = read(ws, timeout=max(0.1, deadline - time.monotonic()))
        received += [json.loads(frame)["t"] for frame in frames]
        codes.append(code)
        time.sleep(0.2)  # away while the market moves on
    assert codes.count(1001) >= 3
    status = server.status()
    assert status["disconnects"] >= 3
    published = server.get("/_replay/trades?symbol=BTCUSDT")
    assert received == sorted(set(received)) and set(received) <= set(published)
    missed = sorted(set(range(received[0], received[-1] + 1)) - set(received))
    assert len(missed) > 100  # 0.2 s away at 400 trades/s, several times
    rest_ids: list[int] = []
    while len(rest_ids) < len(published):
        page = server.get(f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={published[0] + len(rest_ids)}&limit=1000")
        rest_ids += [row["id"] for row in page]
        if len(page) < 1000:
            break
    assert set(missed) <= set(rest_ids)


def test_malformed_and_duplicate_frames_come_at_the_requested_frequency(replay: Callable[..., Replay]) -> None:
    server = replay("--synthetic", "ETHUSDT", "--count", "210", "--as-fast-as-possible",
                    "--malformed-every", "10", "--duplicate-every", "7")
    ws = connect(f"{server.ws}/stream?streams=ethusdt@aggTrade")
    frames, _ = read(ws, count=210 + 30 + 21)
    good: list[int] = []
    junk = Counter[str]()
    for frame in frames:
        try:
            body = json.loads(frame)
            good.append(trade_from_binance(body["data"], ingest_time=time.time_ns() // 1_000_000).trade_id)
        except json.JSONDecodeError:
            junk["not json"] += 1
        except ContractError:
            junk["wrong types"] += 1
    assert len(good) == 240 and len(set(good)) == 210
    duplicated = [trade_id for trade_id, n in Counter(good).items() if n == 2]
    assert duplicated == [good[0] + k - 1 for k in range(7, 211, 7)]  # every 7th frame, twice
    assert sum(junk.values()) == 21 and junk["not json"] > 0 and junk["wrong types"] > 0
    assert server.post("/_replay/malformed") == {"sent": 1}
    extra, _ = read(ws, count=1, timeout=5)
    with pytest.raises((json.JSONDecodeError, ContractError, KeyError, TypeError)):
        trade_from_binance(json.loads(extra[0])["data"], ingest_time=NOW_MS)
    status = server.status()
    assert (status["trade_frames"], status["duplicates_sent"], status["malformed_sent"]) == (210, 30, 22)


def test_server_shutdown_is_sent_before_the_close(replay: Callable[..., Replay]) -> None:
    server = replay("--synthetic", "BTCUSDT", "--rate", "100", "--shutdown-after", "0.6", "--shutdown-grace", "0.3")
    combined = connect(f"{server.ws}/stream?streams=btcusdt@trade")
    raw = connect(f"{server.ws}/ws/btcusdt@trade")
    for ws, envelope in ((combined, True), (raw, False)):
        frames, code = read(ws, timeout=5)
        assert code == 1001
        bodies = [json.loads(frame) for frame in frames]
        notices = [i for i, body in enumerate(bodies) if "serverShutdown" in json.dumps(body)]
        assert len(notices) == 1 and notices[0] > 0
        notice = bodies[notices[0]]
        if envelope:
            assert notice["stream"] == "!serverShutdown" and set(notice["data"]) == {"e", "E"}
            assert notice["data"]["e"] == "serverShutdown"
        else:
            assert set(notice) == {"e", "E"} and notice["e"] == "serverShutdown"
    assert server.status()["shutdowns_sent"] == 2
    # and on demand
    ws = connect(f"{server.ws}/ws/btcusdt@trade")
    assert server.post("/_replay/shutdown") == {"shutdown": 1}
    frames, code = read(ws, timeout=5)
    assert code == 1001 and {"e", "E"} in [set(json.loads(frame)) for frame in frames]


def test_live_subscribe_on_a_raw_connection(replay: Callable[..., Replay]) -> None:
    server = replay("--synthetic", "BTCUSDT,ETHUSDT", "--rate", "200")
    ws = connect(f"{server.ws}/ws")
    time.sleep(0.2)
    assert server.status()["published"] == 0  # nobody subscribed yet
    ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 1}))
    frames, _ = read(ws, count=20)
    assert json.loads(frames[0]) == {"result": None, "id": 1}
    assert {json.loads(frame)["s"] for frame in frames[1:]} == {"ETHUSDT"}
    ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
    replies: list[Any] = []
    while not replies:
        frames, _ = read(ws, count=1, timeout=2)
        replies = [body for body in map(json.loads, frames) if "result" in body]
    assert replies == [{"result": ["ethusdt@trade"], "id": 2}]


def test_connections_are_closed_at_the_age_limit(replay: Callable[..., Replay]) -> None:
    server = replay("--synthetic", "BTCUSDT", "--rate", "20", "--max-connection-age", "0.5")
    ws = connect(f"{server.ws}/ws/btcusdt@trade")
    started = time.monotonic()
    frames, code = read(ws, timeout=5)
    assert code == 1001 and 0.4 < time.monotonic() - started < 3 and frames


def test_a_client_that_does_not_pong_is_dropped(replay: Callable[..., Replay]) -> None:
    server = replay("--synthetic", "BTCUSDT", "--rate", "20", "--ping-interval", "0.2", "--ping-timeout", "0.3")
    reader = connect(f"{server.ws}/ws/btcusdt@trade")  # websocket-client answers pings while it reads
    silent = connect(f"{server.ws}/ws/btcusdt@trade")  # reads nothing for a while, so sends no pong
    frames, code = read(reader, timeout=1.2)
    assert code is None and len(frames) > 10
    frames, code = read(silent, timeout=3)
    assert frames and code == 1011  # websockets' "keepalive ping timeout"
    status = server.wait_for(lambda s: s["connections"] == 1)
    assert status["connections_total"] == 2


def test_loop_keeps_ids_consecutive_and_times_in_ms(replay: Callable[..., Replay], tmp_path: Path) -> None:
    path = tmp_path / "SOLBTC-trades-2025-01-01.csv"
    path.write_text("7,0.001,1.0,0.001,1735689600000000,True,True\n8,0.002,2.0,0.004,1735689600500000,False,True\n")
    server = replay("--csv", str(path), "--loop", "--rate", "1000", "--start", "immediately")
    status = server.wait_for(lambda s: s["published"] >= 9)
    assert status["total"] is None and not status["done"]
    rows = server.get("/api/v3/historicalTrades?symbol=SOLBTC&fromId=7&limit=9")
    assert [row["id"] for row in rows] == list(range(7, 16))
    assert [row["time"] for row in rows[:4]] == [1735689600000, 1735689600500, 1735689601000, 1735689601500]
    assert [row["price"] for row in rows[:3]] == ["0.001", "0.002", "0.001"]


def test_sigterm_closes_clients_and_exits_zero(replay: Callable[..., Replay]) -> None:
    server = replay("--synthetic", "BTCUSDT", "--rate", "100")
    ws = connect(f"{server.ws}/ws/btcusdt@trade")
    read(ws, count=3)
    server.process.send_signal(signal.SIGTERM)
    _, code = read(ws, timeout=5)
    assert code == 1001
    assert server.wait() == 0


def test_bad_options_are_configuration_errors() -> None:
    for args in (["--rate", "5"], ["--synthetic", "BTCUSDT", "--speed", "2"], ["--csv", "/nonexistent/XRPETH-1.csv"]):
        done = subprocess.run([sys.executable, "-m", "replay", *args], capture_output=True, text=True, cwd=ROOT,
                              timeout=30, check=False)
        assert done.returncode == 78, done.stderr
        assert "configuration error" in done.stderr


def test_the_candlestack_command_runs_replay() -> None:
    done = subprocess.run([sys.executable, "-m", "candlestack.cli", "replay", "--synthetic", "BTCUSDT", "--speed", "2"],
                          capture_output=True, text=True, cwd=ROOT, timeout=30, check=False)
    assert done.returncode == 78, done.stderr  # parsed by replay.cli, refused by its checks
    assert "--speed" in done.stderr


def test_a_broken_row_stops_the_feed_with_status_1(replay: Callable[..., Replay], tmp_path: Path) -> None:
    path = tmp_path / "ADAUSDT-trades.csv"
    path.write_text("1,0.5,1,0.5,1700000000000,True,True\n2,0.5,1,0.5,1700000000001,True,True\n3,x,1,0.5,1,True,True\n")
    server = replay("--csv", str(path), "--speed", "0", "--start", "immediately")
    assert server.wait() == 1
    assert any("replay feed failed" in line for line in server.lines)
    assert any(f"{path}:3" in line for line in server.lines)  # names the file and line


def test_rest_fault_switch_counts_down_and_parses() -> None:
    faults = RestFaults.parse("429", "2", "7")
    assert [faults.take(), faults.take(), faults.take()] == ["429", "429", None]
    assert faults.describe() == {"mode": "429", "count": 0, "retry_after": 7, "served": 2}
    assert RestFaults.parse("truncate", None, None).take() == "truncate"
    assert RestFaults.parse("off", None, None).take() is None
    for mode, count, retry_after in (("500", None, None), ("429", "-1", None), ("429", None, "x")):
        with pytest.raises(RestFaultError):
            RestFaults.parse(mode, count, retry_after)


def test_rest_answers_429_418_and_truncated_bodies_on_demand(replay: Callable[..., Replay]) -> None:
    server = replay("--synthetic", "BTCUSDT", "--rate", "200", "--start", "immediately", "--seed", "3",
                    "--rest-fault", "429", "--rest-fault-count", "1", "--rest-retry-after", "4")
    server.wait_for(lambda s: s["published"] >= 20)
    url = f"http://127.0.0.1:{server.port}/api/v3/historicalTrades?symbol=BTCUSDT&limit=5"

    def fetch() -> tuple[int, dict[str, str], bytes]:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    status, headers, body = fetch()
    assert (status, headers["Retry-After"], json.loads(body)["code"]) == (429, "4", -1003)
    status, headers, body = fetch()
    assert status == 200 and len(json.loads(body)) == 5
    assert int(headers["X-MBX-USED-WEIGHT-1M"]) >= 50  # two historicalTrades calls at 25 each
    assert server.post("/_replay/rest-fault?mode=418&count=1&retry_after=9")["mode"] == "418"
    status, headers, _body = fetch()
    assert (status, headers["Retry-After"]) == (418, "9")
    server.post("/_replay/rest-fault?mode=truncate&count=1")
    with pytest.raises(http.client.IncompleteRead), urllib.request.urlopen(url, timeout=5) as response:
        response.read()
    assert fetch()[0] == 200
    server.post("/_replay/rest-fault?mode=429")
    assert fetch()[0] == fetch()[0] == 429  # no count: every answer
    server.post("/_replay/rest-fault?mode=off")
    assert fetch()[0] == 200
    assert server.request("/_replay/rest-fault?mode=503", "POST")[0] == 400
    assert server.request("/_replay/rest-fault?mode=off")[0] == 405
    log = server.get("/_replay/rest-log")
    assert [entry["status"] for entry in log] == [429, 200, 418, 200, 200, 429, 429, 200]
    assert [entry["fault"] for entry in log][:4] == ["429", None, "418", "truncate"]
    assert server.status()["rest_fault"]["mode"] == "off"
