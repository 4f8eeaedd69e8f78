"""Binance's ``/api/v3/klines`` within a request-weight budget, honouring 429/418 and Retry-After.

The budget, the used-weight header and the throttling error are the producer's
(:mod:`candlestack.producer.binance`): Binance counts the weight per IP, and the two share one.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from candlestack.core.errors import ContractError
from candlestack.core.rest_weight import RestBudget, RestThrottled, retry_after_s, used_weight

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
        wait = self.budget.wait_s(KLINES_WEIGHT, now)
        if wait > 0:
            raise RestThrottled(wait, "budget", f"request weight budget of {self.budget.limit}/min spent")
        url = f"{self._base_url}{KLINES_PATH}?{urllib.parse.urlencode(params)}"
        self.requests += 1
        try:
            with urllib.request.urlopen(url, timeout=self._timeout_s) as response:
                self.budget.spend(KLINES_WEIGHT, now, reported=used_weight(response.headers))
                rows = json.load(response)
        except urllib.error.HTTPError as exc:
            self.budget.spend(KLINES_WEIGHT, now, reported=used_weight(exc.headers))
            if exc.code in (418, 429):
                # 429: too much weight; 418: banned for ignoring 429s. Both say how long to wait.
                wait = retry_after_s(exc.headers.get("Retry-After") if exc.headers else None)
                self.budget.block(wait, now)
                raise RestThrottled(wait, str(exc.code), f"HTTP {exc.code} from {KLINES_PATH}") from None
            raise
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise ContractError("rest", f"expected a JSON list of arrays from {KLINES_PATH}")
        return rows
