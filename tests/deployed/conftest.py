"""The deployed host the fault suite drives, and the per-case bookkeeping and final table."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.deployed.case import RESULTS, Case
from tests.deployed.host import PIPELINE_UNITS, DeployedHost

HOST_VARIABLE = "CANDLESTACK_DEPLOYED_HOST"
RESULTS_VARIABLE = "CANDLESTACK_FAULT_RESULTS"


@pytest.fixture(scope="session")
def host() -> DeployedHost:
    name = os.environ.get(HOST_VARIABLE)
    if not name:
        pytest.fail(f"{HOST_VARIABLE} must name the podman container of a converged all-in-one host")
    deployed = DeployedHost(name)
    deployed.wait_active(*PIPELINE_UNITS, *deployed.platform_units())
    deployed.replay("/_replay/resume")
    return deployed


@pytest.fixture
def case(host: DeployedHost, request: pytest.FixtureRequest) -> Iterator[Case]:
    running = Case(host, request.node.name.removeprefix("test_"))
    try:
        yield running
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print_journal(host, running.started_at)
        host.replay("/_replay/resume")
        RESULTS.append(running.row)


def print_journal(host: DeployedHost, since: str) -> None:
    """What the pipeline's units logged during a failed case (the host's journal is volatile)."""
    units = [arg for unit in PIPELINE_UNITS for arg in ("-u", unit)]
    out = host.exec(["journalctl", *units, "--since", since, "--no-pager", "-o", "short-iso"], check=False)
    lines = [line for line in out.splitlines() if "msg=\"tick\"" not in line]
    print(f"\n--- journal of the pipeline units since {since} (last 150 lines, ticks left out) ---")
    print("\n".join(lines[-150:]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not RESULTS:
        return
    header = ("case", "fed", "stored", "missing", "gap", "dup", "dead", "recovery s", "candles", "restarts")
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for row in RESULTS:
        lines.append(" | ".join(str(v) for v in (
            row.case, row.fed, row.stored, row.missing, row.in_gaps, row.duplicates, row.dead_letters,
            row.recovery_s, row.candles_checked, ",".join(f"{k}+{v}" for k, v in row.restarts.items()) or "-")))
    print("\n\nfault suite results\n" + "\n".join(lines))
    target = os.environ.get(RESULTS_VARIABLE)
    if target:
        Path(target).write_text(json.dumps([asdict(r) for r in RESULTS], indent=2))
