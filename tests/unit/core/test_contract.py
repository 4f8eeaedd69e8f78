"""The wire contract and Binance frame parsing (no services)."""

from __future__ import annotations

import json

import pytest

from candlestack.core.contract import Gap, Trade, decode, trade_from_binance, trade_from_rest
from candlestack.core.errors import ContractError
from candlestack.producer.binance import ServerShutdown, combined_stream_url, unwrap
from tests.harness.services import DATA


def frame(name: str) -> str:
    return (DATA / "ws" / name).read_text()


def test_real_trade_frame_parses_and_ignores_removed_order_id_fields() -> None:
    event = unwrap(frame("ws_spot_trade.json"))
    assert isinstance(event, dict) and "b" in event and "a" in event  # fields we do not know
    trade = trade_from_binance(event, ingest_time=1_700_000_000_000)
    assert trade == Trade(symbol="ETHUSDT", stream="trade", trade_id=705291099, price="4149.74000000",
                          qty="0.43870000", trade_time=1639351062243, event_time=1639351062244,
                          buyer_is_maker=True, ingest_time=1_700_000_000_000)


def test_real_agg_trade_frame_parses_with_its_raw_trade_range() -> None:
    event = unwrap(frame("ws_spot_agg_trade.json"))
    assert isinstance(event, dict)
    trade = trade_from_binance(event, ingest_time=1_700_000_000_000)
    ids = (trade.stream, trade.trade_id, trade.first_trade_id, trade.last_trade_id)
    assert ids == ("aggTrade", 226532, 228423, 228423)
    assert trade.price == "1632.46000000" and trade.buyer_is_maker is False


def test_messages_round_trip_exactly() -> None:
    trade = trade_from_binance(unwrap(frame("ws_spot_agg_trade.json")), ingest_time=1_700_000_000_000)  # type: ignore[arg-type]
    assert decode(trade.to_json()) == trade
    gap = Gap(symbol="XRPETH", stream="trade", from_id=5, to_id=9, reason="REST down", detected_at=1_700_000_000_000)
    assert decode(gap.to_json()) == gap
    assert b"4149" not in trade.to_json() and b'"price":"1632.46000000"' in trade.to_json()


@pytest.mark.parametrize(("change", "field"), [
    ({"price": 1632.46}, "price"),
    ({"price": "1e3"}, "price"),
    ({"price": "0.00000000"}, "price"),
    ({"qty": "-1"}, "qty"),
    ({"trade_id": True}, "trade_id"),
    ({"trade_id": -1}, "trade_id"),
    ({"trade_time": 1639351062243000}, "trade_time"),
    ({"buyer_is_maker": 1}, "buyer_is_maker"),
    ({"symbol": "ETH-USDT"}, "symbol"),
    ({"stream": "kline"}, "stream"),
    ({"v": 2}, "v"),
    ({"kind": "order"}, "kind"),
    ({"first_trade_id": 10, "last_trade_id": None}, "last_trade_id"),
])
def test_invalid_messages_name_the_offending_field(change: dict[str, object], field: str) -> None:
    body = json.loads(trade_from_binance(unwrap(frame("ws_spot_agg_trade.json")),  # type: ignore[arg-type]
                                         ingest_time=1_700_000_000_000).to_json())
    body.update(change)
    with pytest.raises(ContractError) as error:
        decode(json.dumps(body).encode())
    assert error.value.field == field


@pytest.mark.parametrize("payload", [None, b"", b"\xff\xfe", b"[1, 2]", b"null"])
def test_non_objects_are_rejected(payload: bytes | None) -> None:
    with pytest.raises(ContractError):
        decode(payload)


def test_server_shutdown_is_recognised_bare_and_wrapped() -> None:
    assert unwrap('{"e":"serverShutdown","E":1}') == ServerShutdown(1)
    assert unwrap('{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":2}}') == ServerShutdown(2)


def test_rest_rows_map_to_the_same_trade_as_stream_events() -> None:
    row = {"id": 705291099, "price": "4149.74000000", "qty": "0.43870000", "quoteQty": "1820.47",
           "time": 1639351062243, "isBuyerMaker": True, "isBestMatch": True}
    trade = trade_from_rest(row, symbol="ETHUSDT", stream="trade", ingest_time=1_700_000_000_000)
    assert (trade.trade_id, trade.price, trade.trade_time, trade.event_time) == (705291099, "4149.74000000",
                                                                                 1639351062243, 1639351062243)


def test_combined_stream_url_lists_every_symbol() -> None:
    assert combined_stream_url("wss://stream.binance.com:9443/", ("BTCUSDT", "ETHUSDT"), "trade") == \
        "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/ethusdt@trade"
