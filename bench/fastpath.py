"""A prototype of a cheaper consumer hot path, measured against the current one (not used by src/).

The current path, per message: a ``Record`` dataclass, ``contract.decode`` (json.loads, then a
generic ``_require`` call per field, a frozen ``Trade`` dataclass), then one COPY text line built
from the Trade. The prototype validates the same rules with inline type checks straight from
the parsed dict to the COPY line, without intermediate objects, and falls back to
``contract.decode`` (for the exact error) on anything unusual. Both produce identical COPY text
for valid messages (checked below).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

from candlestack.contract import DECIMAL_PATTERN, MAX_TIME_MS, MIN_TIME_MS, SYMBOL_PATTERN, VERSION, Trade, decode
from consumer.batch import Record, build_batch
from consumer.store import copy_line

_symbol = SYMBOL_PATTERN.match
_decimal = DECIMAL_PATTERN.match
_STREAMS = frozenset(("trade", "aggTrade"))


def current_lines(payloads: Sequence[bytes]) -> str:
    """What consumer.batch + consumer.store do today for a batch of valid trades."""
    records = [Record("t", 0, n, None, value) for n, value in enumerate(payloads)]
    batch = build_batch(records)
    return "".join(map(copy_line, batch.trades))


def _line(payload: bytes, loads: Callable[[bytes], object] = json.loads) -> str | None:
    """The COPY line of a valid trade message; None sends the message down the slow path."""
    try:
        body = loads(payload)
        if type(body) is not dict or body.get("v") != VERSION or body.get("kind") != "trade":
            return None
        symbol, stream, trade_id = body["symbol"], body["stream"], body["trade_id"]
        price, qty, maker = body["price"], body["qty"], body["buyer_is_maker"]
        trade_ms, event_ms, ingest_ms = body["trade_time"], body["event_time"], body["ingest_time"]
        first, last = body.get("first_trade_id"), body.get("last_trade_id")
    except (KeyError, ValueError, TypeError):
        return None
    if not (type(symbol) is str and _symbol(symbol) and stream in _STREAMS
            and type(trade_id) is int and trade_id >= 0 and type(maker) is bool
            and type(price) is str and _decimal(price) and price.strip("0.")
            and type(qty) is str and _decimal(qty)
            and type(trade_ms) is int and MIN_TIME_MS <= trade_ms <= MAX_TIME_MS
            and type(event_ms) is int and MIN_TIME_MS <= event_ms <= MAX_TIME_MS
            and type(ingest_ms) is int and MIN_TIME_MS <= ingest_ms <= MAX_TIME_MS):
        return None
    if first is None and last is None:
        ids = "\\N\t\\N"
    elif type(first) is int and type(last) is int and 0 <= first <= last:
        ids = f"{first}\t{last}"
    else:
        return None
    return (f"{symbol}\t{trade_id}\t{stream}\t{price}\t{qty}\t{ids}\t{trade_ms}\t{event_ms}\t"
            f"{'t' if maker else 'f'}\t{ingest_ms}\n")


def prototype_lines(payloads: Sequence[bytes]) -> str:
    parts = []
    for payload in payloads:
        line = _line(payload)
        if line is None:  # the slow path: exact error (dead letter) or an unusual-but-valid message
            message = decode(payload)
            assert isinstance(message, Trade)
            line = copy_line(message)
        parts.append(line)
    return "".join(parts)


def micro(payloads: Sequence[bytes], *, rounds: int = 3) -> dict[str, float]:
    """Best-of-``rounds`` µs per message for json.loads alone, the current path and the prototype."""
    if current_lines(payloads[:2000]) != prototype_lines(payloads[:2000]):
        raise AssertionError("prototype COPY text differs from the current path")

    def best(fn: Callable[[Sequence[bytes]], object]) -> float:
        times = []
        for _ in range(rounds):
            began = time.perf_counter()
            fn(payloads)
            times.append(time.perf_counter() - began)
        return min(times) / len(payloads) * 1e6

    return {"json_loads_us": best(lambda p: [json.loads(v) for v in p]),
            "current_us": best(current_lines), "prototype_us": best(prototype_lines)}
