"""The aggregator's pure pieces: what a failed tick calls for, and the retry loop around it."""

from __future__ import annotations

import threading
from typing import Any

import psycopg2
import pytest
from py4j.protocol import Py4JNetworkError  # type: ignore[import-untyped]

from candlestack.aggregator import faults
from candlestack.aggregator.faults import (
    JobTimeoutError,
    Recovery,
    TickError,
    describe,
    needs_new_session,
    recovery_for,
)
from candlestack.aggregator.jobs import Aggregator
from candlestack.aggregator.windows import Span
from candlestack.core.settings import AggregatorSettings

T0 = 1570752000000  # 2019-10-11T00:00:00Z


def tick_error(cause: BaseException, spans: list[Span] | None = None) -> TickError:
    try:
        raise TickError(spans or []) from cause
    except TickError as exc:
        return exc


def test_each_error_calls_for_its_own_renewal() -> None:
    assert recovery_for(psycopg2.OperationalError("server closed the connection")) is Recovery.RECONNECT
    assert recovery_for(tick_error(psycopg2.InterfaceError("connection already closed"))) is Recovery.RECONNECT
    assert recovery_for(tick_error(Py4JNetworkError("Answer from Java side is empty"))) is Recovery.NEW_SESSION
    assert recovery_for(tick_error(ConnectionRefusedError())) is Recovery.NEW_SESSION
    assert recovery_for(tick_error(JobTimeoutError(300.0))) is Recovery.NEW_SESSION
    assert recovery_for(tick_error(RuntimeError("Job aborted due to stage failure"))) is Recovery.RETRY
    assert recovery_for(tick_error(psycopg2.errors.DivisionByZero())) is Recovery.RETRY


def test_the_session_is_rebuilt_when_unreachable_and_after_every_few_failures_in_a_row() -> None:
    assert needs_new_session(Recovery.NEW_SESSION, 1)
    assert [n for n in range(1, 12) if needs_new_session(Recovery.RETRY, n, rebuild_after=5)] == [5, 10]
    assert not needs_new_session(Recovery.RECONNECT, faults.REBUILD_SESSION_AFTER - 1)


def test_failed_windows_are_described_in_utc_and_bounded() -> None:
    spans = [Span("XRPETH", T0, T0 + 300_000), Span("BTCUSDT", T0, T0 + 600_000)]
    assert describe(spans) == ("XRPETH 2019-10-11T00:00:00+00:00..2019-10-11T00:05:00+00:00, "
                               "BTCUSDT 2019-10-11T00:00:00+00:00..2019-10-11T00:10:00+00:00")
    assert describe(spans * 6, limit=3).endswith(" and 9 more")
    assert describe([]) == "no windows"
    assert tick_error(RuntimeError("x"), spans).spans == tuple(spans)
    assert str(tick_error(RuntimeError("x"), spans[:1])).startswith("recomputing XRPETH 2019-10-11T00:00:00")


class _NoWait(threading.Event):
    """A stop event whose waits return at once, recording how long they would have been."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        return self.is_set()


def test_the_retry_loop_backs_off_capped_and_returns_the_first_success() -> None:
    settings = AggregatorSettings.from_env({"CANDLESTACK_PG_HOST": "/nonexistent", "CANDLESTACK_METRICS_PORT": "0"})
    renewed: list[Any] = []
    aggregator = Aggregator(settings, None, None,  # type: ignore[arg-type]  # the loop needs neither
                            session_factory=lambda old: renewed.append(old) or old,
                            retry_initial_s=0.5, retry_max_s=4.0)
    outcomes: list[Exception | str] = [tick_error(RuntimeError(f"failure {n}")) for n in range(7)] + ["done"]

    def attempt() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    stop = _NoWait()
    assert aggregator._retrying(stop, attempt) == "done"
    assert len(stop.waits) == 7
    assert all(0 < w <= 4.0 for w in stop.waits) and stop.waits[0] <= 0.5 and stop.waits[-1] >= 2.0
    assert len(renewed) == 1  # after the fifth failure in a row

    stop.set()
    assert aggregator._retrying(stop, attempt) is None  # stopped: no attempt at all


@pytest.mark.parametrize("count", [1, 3])
def test_a_stop_during_the_backoff_ends_the_loop(count: int) -> None:
    settings = AggregatorSettings.from_env({"CANDLESTACK_PG_HOST": "/nonexistent", "CANDLESTACK_METRICS_PORT": "0"})
    aggregator = Aggregator(settings, None, None, retry_initial_s=0.01)  # type: ignore[arg-type]
    stop = _NoWait()
    calls: list[int] = []

    def failing() -> str:
        calls.append(1)
        if len(calls) == count:
            stop.set()
        raise tick_error(RuntimeError("still failing"))

    assert aggregator._retrying(stop, failing) is None
    assert len(calls) == count
