"""The audit's comparison, window arithmetic and REST client, without a database."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from candlestack.audit.client import KlinesClient
from candlestack.audit.command import closed_windows
from candlestack.audit.compare import MISSING, Mismatch, compare, parse_kline
from candlestack.core.epoch import from_ms, to_ms
from candlestack.core.errors import ContractError
from candlestack.core.rest_weight import RestBudget, RestThrottled

ROW = [1570752000000, "0.00141342", "0.00141557", "0.00141266", "0.00141418", "1482.00000000", 1570752059999,
       "2.09678230", 12, "1000.00000000", "1.41418000", "0"]
FIELDS = ("open", "high", "low", "close", "volume", "quote_volume", "trade_count", "taker_buy_volume",
          "taker_buy_quote_volume", "close_time")


def ours(**changes: Any) -> dict[str, Decimal | None]:
    candle: dict[str, Decimal | None] = {
        "open": Decimal("0.00141342"), "high": Decimal("0.001415570"), "low": Decimal("0.00141266"),
        "close": Decimal("0.00141418"), "volume": Decimal("1482.0"), "quote_volume": Decimal("2.0967823"),
        "trade_count": Decimal(12), "taker_buy_volume": Decimal(1000), "taker_buy_quote_volume": Decimal("1.41418"),
        "close_time": Decimal(1570752059999)}
    candle.update(changes)
    return candle


def test_equal_values_in_other_notations_are_equal() -> None:
    assert compare("XRPETH", "1m", parse_kline(ROW), ours(), fields=FIELDS) == []


@pytest.mark.parametrize(("field", "value", "shown"), [
    ("close", Decimal("0.00141419"), "0.00141419"),
    ("volume", Decimal("1482.00000001"), "1482.00000001"),
    ("trade_count", Decimal(11), "11"),
    ("close_time", Decimal(1570752060000), "1570752060000"),
    ("taker_buy_quote_volume", None, None),
])
def test_each_differing_field_is_one_mismatch(field: str, value: Decimal | None, shown: str | None) -> None:
    found = compare("XRPETH", "1m", parse_kline(ROW), ours(**{field: value}), fields=FIELDS)
    assert [(m.field, m.ours) for m in found] == [(field, shown)]
    assert found[0].open_time == 1570752000000


def test_a_kline_we_lack_is_missing_and_only_fields_we_store_are_compared() -> None:
    assert compare("XRPETH", "5m", parse_kline(ROW), None, fields=FIELDS) == [
        Mismatch("XRPETH", "5m", 1570752000000, MISSING, None, "kline")]
    no_taker = ours(taker_buy_volume=None, taker_buy_quote_volume=None)
    assert compare("XRPETH", "1m", parse_kline(ROW), no_taker, fields=FIELDS[:7]) == []


@pytest.mark.parametrize("row", [ROW[:6], {"open": 1}, [*ROW[:1], "x", *ROW[2:]]])
def test_malformed_klines_are_refused(row: object) -> None:
    with pytest.raises(ContractError):
        parse_kline(row)


def test_closed_windows_round_in_and_leave_out_the_open_one() -> None:
    assert closed_windows("1m", 60_001, 300_000) == (120_000, 240_000)
    assert closed_windows("5m", 0, 599_999) == (0, 0)
    assert closed_windows("5m", 1, 599_999) is None
    assert to_ms(from_ms(1570752059999)) == 1570752059999


class _Handler(http.server.BaseHTTPRequestHandler):
    answers: list[tuple[int, dict[str, str], Any]] = []
    paths: list[str] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        status, headers, body = type(self).answers.pop(0)
        data = json.dumps(body).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.answers, _Handler.paths = [], []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_client_waits_out_429_and_418_as_retry_after_says_then_pages(server: str) -> None:
    page = [[i * 60_000, *ROW[1:6], i * 60_000 + 59_999, *ROW[7:]] for i in range(1000)]
    _Handler.answers = [(429, {"Retry-After": "3"}, {"code": -1003}), (418, {"Retry-After": "7"}, {"code": -1003}),
                        (200, {"X-MBX-USED-WEIGHT-1M": "40"}, page), (200, {}, page[:1])]
    slept: list[float] = []
    client = KlinesClient(server, budget=RestBudget(limit=1000), sleep=slept.append,
                          wall=lambda: 1000.0 + sum(slept))
    rows = client.klines("XRPETH", "1m", 0, 10**9)
    assert len(rows) == 1001
    assert slept[0] == pytest.approx(3.0) and slept[1] == pytest.approx(7.0)
    assert "startTime=59940001" in _Handler.paths[-1] and "interval=1m" in _Handler.paths[-1]
    assert client.throttled == 2 and client.budget.used == 42


def test_client_gives_up_when_throttled_throughout(server: str) -> None:
    _Handler.answers = [(429, {"Retry-After": "1"}, {"code": -1003})] * 5
    client = KlinesClient(server, budget=RestBudget(limit=1000), sleep=lambda _s: None)
    with pytest.raises(RestThrottled):
        client.klines("XRPETH", "1m", 0, 60_000)


def test_client_keeps_within_its_weight_budget(server: str) -> None:
    waits: list[float] = []
    budget = RestBudget(limit=2, used=2, minute=int(1000.0 // 60))
    _Handler.answers = [(200, {}, [])]
    client = KlinesClient(server, budget=budget, sleep=waits.append, wall=lambda: 1000.0 + sum(waits))
    client.klines("XRPETH", "1m", 0, 60_000)
    assert waits and waits[0] > 0 and len(_Handler.paths) == 1
