"""Binance's REST request weight: the budget a client spends per clock minute, and the waits
the server asks for (429 and 418 with ``Retry-After``).

Shared by every client of Binance's REST API: the producer's gap fill and the kline audit.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from typing import Any

from candlestack.core.errors import CandlestackError, ContractError

# Binance counts weight per IP in fixed clock minutes and reports the minute's total so far.
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
WEIGHT_WINDOW_S = 60.0
# Our clock and Binance's differ a little: wait this much past the minute before trusting a reset.
WEIGHT_RESET_MARGIN_S = 1.0
# When a 429/418 comes without a usable Retry-After (Binance always sends one).
DEFAULT_RETRY_AFTER_S = 10.0


class RestThrottled(CandlestackError):
    """REST must not be asked for ``wait_s`` seconds; ``kind`` is ``"429"``, ``"418"`` (an answer
    with that status) or ``"budget"`` (our own weight budget is spent)."""

    def __init__(self, wait_s: float, kind: str, reason: str) -> None:
        super().__init__(f"{reason}; retry in {wait_s:.1f} s")
        self.wait_s = wait_s
        self.kind = kind
        self.reason = reason


def retry_after_s(value: str | None, *, default: float = DEFAULT_RETRY_AFTER_S) -> float:
    """The wait a ``Retry-After`` header asks for, in seconds (Binance sends whole seconds)."""
    if value is None:
        return default
    try:
        seconds = float(value.strip())
    except ValueError:
        return default
    return seconds if seconds >= 0 else default


def used_weight(headers: Message | None) -> int | None:
    """The ``X-MBX-USED-WEIGHT-1M`` of an answer, if it carries one."""
    raw = headers.get(USED_WEIGHT_HEADER) if headers is not None else None
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


@dataclass(slots=True)
class RestBudget:
    """Request weight spent in the current clock minute, and any ban the server announced.

    Times are wall-clock seconds (Binance's minutes are clock minutes). The server's own count
    (the used-weight header) replaces ours whenever an answer carries it, so that other clients
    on the same IP are accounted for.
    """

    limit: int
    used: int = 0
    minute: int = -1
    blocked_until: float = 0.0

    def _used_now(self, now: float) -> int:
        return self.used if int(now // WEIGHT_WINDOW_S) == self.minute else 0

    def wait_s(self, cost: int, now: float) -> float:
        """How long to wait before a request of weight ``cost`` keeps within the limit (0: go)."""
        wait = max(0.0, self.blocked_until - now)
        if self._used_now(now) + cost > self.limit:
            wait = max(wait, WEIGHT_WINDOW_S - now % WEIGHT_WINDOW_S + WEIGHT_RESET_MARGIN_S)
        return wait

    def spend(self, cost: int, now: float, *, reported: int | None) -> None:
        minute = int(now // WEIGHT_WINDOW_S)
        self.used = reported if reported is not None else self._used_now(now) + cost
        self.minute = minute

    def block(self, seconds: float, now: float) -> None:
        self.blocked_until = max(self.blocked_until, now + seconds)


def check_budget(budget: RestBudget, cost: int, now: float) -> None:
    """Refuse a request of weight ``cost`` that the budget cannot take now.

    Raises:
        RestThrottled: (kind ``"budget"``) with the wait before it can.
    """
    wait = budget.wait_s(cost, now)
    if wait > 0:
        raise RestThrottled(wait, "budget", f"request weight budget of {budget.limit}/min spent")


def get_json_list(base_url: str, path: str, params: dict[str, Any], *, budget: RestBudget, cost: int, now: float,
                  timeout_s: float) -> list[Any]:
    """GET ``path`` (a :func:`check_budget`-ed request of weight ``cost``), spending its weight.

    The server's used-weight header, on success or error, becomes the budget's count; a 429 or
    418 blocks the budget for as long as its ``Retry-After`` says.

    Raises:
        RestThrottled: the server answered 429 or 418.
        ContractError: the answer is not a JSON list.
        urllib.error.HTTPError, OSError: any other failure.
    """
    url = f"{base_url}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            budget.spend(cost, now, reported=used_weight(response.headers))
            rows = json.load(response)
    except urllib.error.HTTPError as exc:
        budget.spend(cost, now, reported=used_weight(exc.headers))
        if exc.code in (418, 429):
            # 429: too much weight; 418: banned for ignoring 429s. Both say how long to wait.
            wait = retry_after_s(exc.headers.get("Retry-After") if exc.headers else None)
            budget.block(wait, now)
            raise RestThrottled(wait, str(exc.code), f"HTTP {exc.code} from {path}") from None
        raise
    if not isinstance(rows, list):
        raise ContractError("rest", f"expected a JSON list from {path}")
    return rows
