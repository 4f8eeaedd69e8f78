"""`systemd-analyze security` exposure of every unit the roles install through roles/systemd_service.

`render-units/render-units.yml` runs the calling roles' own task files (candlestack, spark, kafka
Apache and Tansu, superset, pgbackrest) against a stand-in systemd_service that only templates
service.j2 (one ansible-playbook run, no host touched). Each unit file is then scored by
`systemd-analyze security --offline=true` (systemd 250 or later) and must stay under
EXPOSURE_LIMIT. Another check makes sure no role includes systemd_service from a task file the
render playbook leaves out, so a new unit cannot escape the score.

Skipped, saying how to install it, without systemd-analyze.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ansible import test_deployment_static as static

ROOT = static.ROOT
RENDER_DIR = Path(__file__).resolve().parent / "render-units"
PLAYBOOK = RENDER_DIR / "render-units.yml"
INVENTORY = RENDER_DIR / "hosts.yml"
# The units score 1.1-1.3. The project asks for less than 3.0; 2.0 also catches losing a whole
# group of options: without the syscall filter a unit scores 2.8.
EXPOSURE_LIMIT = 2.0
# The units of an all-in-one host with the replay feed: at least these must be rendered.
EXPECTED_UNITS = {
    *(f"candlestack-{name}.service"
      for name in ("replay", "producer", "consumer", "aggregator", "reconcile", "retention", "partitions", "audit")),
    "spark-master.service", "spark-worker.service", "kafka.service", "tansu.service", "superset.service",
    "pgbackrest-full.service", "pgbackrest-diff.service",
}
OVERALL = re.compile(r"Overall exposure level for (?P<unit>\S+): (?P<score>[0-9]+\.[0-9]+)")

# The module-scoped venv fixture of the deployment static tests (scripts/ansible-venv.sh).
venv_bin = static.venv_bin


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is missing: apt-get install -y --no-install-recommends systemd")
    return found


@pytest.fixture(scope="module")
def units(venv_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Unit file name -> the rendered file, each alone under its own name (the offline analysis
    loads a unit by its file name)."""
    out = tmp_path_factory.mktemp("units")
    static._ok(static._run(
        ["ansible-playbook", "-i", str(INVENTORY), str(PLAYBOOK), "-e", f"render_dir={out}"], venv_bin))
    rendered: dict[str, str] = json.loads((out / "units.json").read_text())
    files = {}
    for name, text in rendered.items():
        path = out / name
        path.write_text(text)
        files[name] = path
    return files


def _exposure(analyze: str, path: Path) -> tuple[float, bool]:
    """The overall exposure, and whether systemd-analyze's own --threshold check passed."""
    proc = subprocess.run(
        [analyze, "security", "--offline=true", f"--threshold={round(EXPOSURE_LIMIT * 10) - 1}", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    found = OVERALL.search(proc.stdout)
    assert found and found["unit"] == path.name, f"{path.name}: no overall exposure in:\n{proc.stdout}\n{proc.stderr}"
    return float(found["score"]), proc.returncode == 0


def test_every_unit_scores_below_the_limit(units: dict[str, Path]) -> None:
    analyze = _systemd_analyze()
    scores = {name: _exposure(analyze, path) for name, path in sorted(units.items())}
    table = "\n".join(f"  {name:34} {score:.1f}" for name, (score, _) in scores.items())
    too_high = [name for name, (score, passed) in scores.items() if score >= EXPOSURE_LIMIT or not passed]
    assert not too_high, f"exposure {EXPOSURE_LIMIT} or more: {too_high}\n{table}"


def _tasks(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tasks of a task file, those inside blocks included."""
    found = []
    for task in tasks:
        found.append(task)
        for key in ("block", "rescue", "always"):
            found += _tasks(task.get(key) or [])
    return found


def test_every_role_unit_is_rendered(units: dict[str, Path]) -> None:
    # What render-units.yml includes, and every role task file that includes systemd_service.
    rendered = {
        (task["ansible.builtin.include_role"]["name"], task["ansible.builtin.include_role"]["tasks_from"])
        for task in yaml.safe_load(PLAYBOOK.read_text())[0]["tasks"]
        if "ansible.builtin.include_role" in task
    }
    callers = set()
    for path in sorted((ROOT / "roles").glob("*/tasks/*.yml")):
        role = path.parts[-3]
        for task in _tasks(yaml.safe_load(path.read_text()) or []):
            include = task.get("ansible.builtin.include_role") or {}
            if include.get("name") == "systemd_service" and role != "systemd_service":
                callers.add((role, path.name))
    assert callers, "no role includes systemd_service: has the role been renamed?"
    assert callers <= rendered, f"task files that install units but are not rendered: {sorted(callers - rendered)}"
    assert set(units) >= EXPECTED_UNITS, f"not rendered: {sorted(EXPECTED_UNITS - set(units))}"


def test_no_postgres_unit_removes_ipc(units: dict[str, Path]) -> None:
    """RemoveIPC= on a unit running as postgres would remove PostgreSQL's shared memory when it stops."""
    for name, path in units.items():
        lines = path.read_text().splitlines()
        if "User=postgres" in lines:
            assert "RemoveIPC=yes" not in lines, name
