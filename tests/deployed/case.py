"""One fault case's bookkeeping: where the feed and the host stood before, the checks after, and
the row it adds to the suite's result table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tests.deployed.checks import compare_ids, duplicates, wait_for_candles
from tests.deployed.host import PIPELINE_UNITS, DeployedHost, deadline_wait


@dataclass
class Row:
    case: str
    fed: int = 0
    stored: int = 0
    missing: int = 0
    in_gaps: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    recovery_s: float = 0.0
    candles_checked: int = 0
    restarts: dict[str, int] = field(default_factory=dict)


RESULTS: list[Row] = []


class Case:
    """One fault case: remembers where the feed and the host stood before, then checks after."""

    def __init__(self, host: DeployedHost, name: str) -> None:
        self.host = host
        self.row = Row(name)
        self.fault_ended: float | None = None
        self.started_at = host.exec(["date", "+%Y-%m-%d %H:%M:%S"]).strip()
        # Ids below these belong to an earlier run of the feed (before a reboot) and are not compared.
        self.floor: dict[str, int] | None = None
        self._baseline()

    def _baseline(self) -> None:
        host = self.host
        status = host.replay("/_replay/status", method="GET")
        self._published_before = int(status["published"])
        self._first_new_id = {s: int(v["last_published_id"] or 0) + 1 for s, v in status["symbols"].items()}
        self._dead_before = int(host.scalar("SELECT count(*) FROM dead_letters"))
        self._restarts_before = {u: host.restarts(u) for u in PIPELINE_UNITS}

    def rebase(self) -> None:
        """The feed restarted as a new market: compare only what it has published since."""
        def first_ids() -> dict[str, int] | None:
            # A feed that has just started reports no first id for a symbol until it publishes one.
            symbols = self.host.replay("/_replay/status", method="GET")["symbols"]
            if any(v["first_id"] is None for v in symbols.values()):
                return None
            return {s: int(v["first_id"]) for s, v in symbols.items()}

        self.floor = deadline_wait(first_ids, timeout=60, interval=0.5, what="the restarted feed's first trades")
        self._published_before = 0
        self._first_new_id = dict(self.floor)
        self._restarts_before = {u: 0 for u in PIPELINE_UNITS}

    def fault_over(self) -> None:
        """Call when the last fault was injected: recovery time counts from here."""
        self.fault_ended = time.monotonic()

    def _caught_up(self) -> bool:
        """The newest trade the feed published a moment ago is stored (or in a gap)."""
        status = self.host.replay("/_replay/status", method="GET")
        for symbol, info in status["symbols"].items():
            newest = int(info["last_published_id"] or 0) - 20  # trades of the last second may be in flight
            stored = self.host.scalar("SELECT coalesce(max(trade_id), 0) FROM trades WHERE symbol = :'symbol'",
                                      symbol=symbol)
            if int(stored) < newest:
                return False
        return True

    def _progress(self) -> str:
        """Where each stage stands, for a failure message: which one stopped moving."""
        status = self.host.replay("/_replay/status", method="GET")
        stored = {row[0]: row[1] for row in self.host.sql("SELECT symbol, max(trade_id) FROM trades GROUP BY symbol")}
        parts = [f"{symbol}: published up to {info['last_published_id']}, stored up to {stored.get(symbol)}"
                 for symbol, info in status["symbols"].items()]
        consumer = self.host.exec(["journalctl", "-u", "candlestack-consumer", "-n", "3", "--no-pager", "-o", "cat"],
                                  check=False).strip().splitlines()
        return "; ".join(parts) + " | consumer's last log lines: " + " / ".join(consumer)

    def check(self, *, expected_dead_letters: int = 0) -> Row:
        host = self.host
        if self.fault_ended is None:
            self.fault_over()
        assert self.fault_ended is not None
        host.wait_active(*PIPELINE_UNITS, *host.platform_units(), timeout=240)
        try:
            deadline_wait(self._caught_up, timeout=240, interval=0.5, what="the pipeline to catch up with the feed")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {self._progress()}") from None
        self.row.recovery_s = round(time.monotonic() - self.fault_ended, 1)
        host.replay("/_replay/pause")
        try:
            report = deadline_wait(lambda: (r := compare_ids(host, since=self.floor)).ok and r, timeout=120,
                                   interval=2, what="every published id stored or in a gap")
        except TimeoutError:
            report = compare_ids(host, since=self.floor)
            raise AssertionError("; ".join(report.unexplained)) from None
        status = host.replay("/_replay/status", method="GET")
        mine = compare_ids(host, since=self._first_new_id)
        self.row.fed = int(status["published"]) - self._published_before
        self.row.stored, self.row.missing, self.row.in_gaps = mine.stored, mine.missing, mine.in_gaps
        self.row.duplicates = duplicates(host)
        self.row.dead_letters = int(host.scalar("SELECT count(*) FROM dead_letters")) - self._dead_before
        self.row.candles_checked = wait_for_candles(host)
        # NRestarts counts systemd's automatic restarts; a manual start sets it back to 0.
        after = {u: host.restarts(u) for u in self._restarts_before}
        self.row.restarts = {u.removeprefix("candlestack-"): after[u] - n
                             for u, n in self._restarts_before.items() if after[u] > n}
        assert report.ok
        assert self.row.duplicates == 0
        assert self.row.dead_letters == expected_dead_letters
        assert host.failed_units() == []
        host.replay("/_replay/resume")
        return self.row
