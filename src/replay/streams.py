"""Stream names, WebSocket paths and live (un)subscribe requests, as Binance spells them.

Pure parsing, so the server only has to act on the result.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from candlestack.core.contract import StreamType
from candlestack.replay.model import InvalidStream

# Binance: "All symbols for streams are lowercase"; a connection carries at most 1024 streams.
_STREAM = re.compile(r"^([a-z0-9]{2,20})@(trade|aggTrade)$")
MAX_STREAMS = 1024


@dataclass(frozen=True, slots=True)
class Stream:
    """One subscribed stream: ``xrpeth@aggTrade`` -> symbol ``XRPETH``, kind ``aggTrade``."""

    name: str
    symbol: str
    kind: StreamType


def parse_stream(name: str) -> Stream:
    """Parse ``<symbol>@trade`` or ``<symbol>@aggTrade``.

    Raises:
        InvalidStream: anything else, including upper-case symbols and stream types this feed
            does not serve (depth, kline...).
    """
    match = _STREAM.match(name)
    if match is None:
        raise InvalidStream(name, "Invalid stream name (expected <lowercase symbol>@trade or @aggTrade)")
    kind: StreamType = "trade" if match.group(2) == "trade" else "aggTrade"
    return Stream(name=name, symbol=match.group(1).upper(), kind=kind)


def _parse_streams(names: list[str]) -> tuple[Stream, ...]:
    streams = tuple(dict.fromkeys(parse_stream(name) for name in names if name))
    if len(streams) > MAX_STREAMS:
        raise InvalidStream(f"{len(streams)} streams", f"at most {MAX_STREAMS} streams per connection")
    return streams


def is_websocket_path(path: str) -> bool:
    """Whether a request path belongs to the WebSocket endpoints (``/ws...``, ``/stream...``)."""
    route = urlsplit(path).path
    return route in ("/ws", "/stream") or route.startswith(("/ws/", "/stream/"))


def parse_path(path: str) -> tuple[bool, tuple[Stream, ...]]:
    """Read a WebSocket request path: ``(combined, streams)``.

    ``/stream?streams=a@trade/b@aggTrade`` is a combined stream (frames wrapped in
    ``{"stream", "data"}``); ``/ws/a@trade`` (or ``/ws/a@trade/b@trade``) is raw. Either may
    start empty and subscribe later with a ``SUBSCRIBE`` request.

    Raises:
        InvalidStream: a stream name is invalid, or there are too many.
    """
    parts = urlsplit(path)
    if parts.path.rstrip("/") == "/stream":
        names = "/".join(parse_qs(parts.query).get("streams", [])).split("/")
        return True, _parse_streams(names)
    return False, _parse_streams(parts.path.removeprefix("/ws").split("/"))


@dataclass(frozen=True, slots=True)
class Request:
    """A live control request: SUBSCRIBE, UNSUBSCRIBE or LIST_SUBSCRIPTIONS."""

    method: str
    streams: tuple[Stream, ...]
    id: int | str | None


class RequestError(Exception):
    """A control request Binance would refuse; ``body`` is the error frame to send back."""

    def __init__(self, code: int, msg: str, request_id: int | str | None = None) -> None:
        super().__init__(msg)
        self.body: dict[str, Any] = {"code": code, "msg": msg}
        if request_id is not None:
            self.body["id"] = request_id


def parse_request(text: str | bytes) -> Request:
    """Parse a control request sent by a client over the WebSocket.

    Raises:
        RequestError: with Binance's error codes (3: invalid JSON, 2: invalid request).
    """
    try:
        body = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(3, f"Invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError(2, "Invalid request: expected a JSON object")
    request_id = body.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str | None):
        raise RequestError(2, "Invalid request: request ID must be an unsigned integer")
    method = body.get("method")
    if method not in ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS"):
        raise RequestError(
            2, f"Invalid request: unknown variant {method!r}, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, "
            "`LIST_SUBSCRIPTIONS`", request_id,
        )
    params = body.get("params", [])
    if not isinstance(params, list) or not all(isinstance(name, str) for name in params):
        raise RequestError(2, "Invalid request: params must be a list of stream names", request_id)
    try:
        streams = _parse_streams(params)
    except InvalidStream as exc:
        raise RequestError(2, f"Invalid request: {exc}", request_id) from None
    return Request(method=method, streams=streams, id=request_id)
