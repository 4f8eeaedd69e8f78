"""Binance's ``/api/v3/klines`` within a request-weight budget, honouring 429/418 and Retry-After.

The budget, the used-weight header and the throttling error are the producer's
(:mod:`candlestack.producer.binance`): Binance counts the weight per IP, and the two share one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from candlestack.core.errors import ContractError
from candlestack.core.rest_weight import RestBudget, RestThrottled, check_budget, get_json_list

log = logging.getLogger(__name__)

KLINES_PATH = "/api/v3/klines"
# Request weight of one klines call, whatever its limit (Binance spot API docs, market data endpoints).
KLINES_WEIGHT = 2
KLINES_PAGE_LIMIT = 1000
# A run gives up after this many throttled answers in a row (each waited out first).
MAX_THROTTLES = 5


class KlinesClient:
    """Reads klines page by page; waits (``sleep``) whenever the budget or the server says so."""

    def __init__(self, base_url: str, *, budget: RestBudget, timeout_s: float = 10.0,
                 wall: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self.budget = budget
        self._wall = wall
        self._sleep = sleep
        self.requests = 0
        self.throttled = 0

    def klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> list[list[Any]]:
        """Every kline of ``symbol``/``interval`` opening from ``start_ms`` to ``end_ms`` (inclusive).

        Raises:
            RestThrottled: the server kept saying wait (MAX_THROTTLES answers in a row).
            ContractError: an answer is not a list of arrays.
            urllib.error.URLError, OSError: the server cannot be reached or refuses the request.
        """
        rows: list[list[Any]] = []
        start = start_ms
        while start <= end_ms:
            page = self._page({"symbol": symbol, "interval": interval, "startTime": start, "endTime": end_ms,
                               "limit": KLINES_PAGE_LIMIT})
            rows += page
            if len(page) < KLINES_PAGE_LIMIT:
                break
            start = int(page[-1][0]) + 1
        return rows

    def _page(self, params: dict[str, Any]) -> list[list[Any]]:
        throttles = 0
        while True:
            try:
                return self._request(params)
            except RestThrottled as exc:
                throttles += 1
                self.throttled += 1
                if throttles >= MAX_THROTTLES:
                    raise
                log.warning("klines throttled; waiting", extra={"kind": exc.kind, "wait_s": round(exc.wait_s, 1)})
                self._sleep(exc.wait_s)

    def _request(self, params: dict[str, Any]) -> list[list[Any]]:
        now = self._wall()
        check_budget(self.budget, KLINES_WEIGHT, now)
        self.requests += 1
        rows = get_json_list(self._base_url, KLINES_PATH, params, budget=self.budget, cost=KLINES_WEIGHT, now=now,
                             timeout_s=self._timeout_s)
        if not all(isinstance(row, list) for row in rows):
            raise ContractError("rest", f"expected a JSON list of arrays from {KLINES_PATH}")
        return rows
