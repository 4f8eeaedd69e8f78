"""The alert rules of roles/monitoring: valid, documented, and each covered by a promtool unit test
that can fail.

Needs ``promtool`` (Debian's ``prometheus`` package; .ci/run installs it). Without it the tests
fail rather than skip: an untested rule file must not pass CI.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "roles" / "monitoring" / "files" / "rules"
TESTS_DIR = Path(__file__).resolve().parent
RUNBOOK = ROOT / "docs" / "operations.md"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
TEST_FILES = sorted(TESTS_DIR.glob("*.test.yml"))
SEVERITIES = {"critical", "warning"}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _alerts() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, rule) for path in RULE_FILES for group in _load(path)["groups"] for rule in group["rules"]
            if "alert" in rule]


ALERTS = _alerts()


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: apt-get install -y --no-install-recommends prometheus"
    return found


def _run(promtool: str, *args: str | Path, cwd: Path = TESTS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_there_are_rules_and_tests() -> None:
    assert RULE_FILES and TEST_FILES and ALERTS


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_accepts_the_rule_file(promtool: str, path: Path) -> None:
    proc = _run(promtool, "check", "rules", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(promtool: str, path: Path) -> None:
    proc = _run(promtool, "test", "rules", path.name)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("path", "rule"), ALERTS, ids=[rule["alert"] for _, rule in ALERTS])
def test_the_alert_has_a_severity_a_summary_and_a_runbook_in_the_guide(path: Path, rule: dict[str, Any]) -> None:
    assert rule.get("labels", {}).get("severity") in SEVERITIES, rule["alert"]
    annotations = rule.get("annotations", {})
    assert annotations.get("summary"), rule["alert"]
    runbook = annotations.get("runbook", "")
    assert runbook == f"docs/operations.md#{rule['alert'].lower()}", runbook
    assert runbook.partition("#")[2] in _anchors(RUNBOOK.read_text()), f"{runbook}: no such heading"


def _firing_tests() -> dict[str, set[Path]]:
    """Alert name -> test files with an alert_rule_test that expects it to fire."""
    found: dict[str, set[Path]] = {}
    for path in TEST_FILES:
        for test in _load(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                if case.get("exp_alerts"):
                    found.setdefault(case["alertname"], set()).add(path)
    return found


def test_every_alert_has_a_test_that_expects_it_to_fire() -> None:
    untested = {rule["alert"] for _, rule in ALERTS} - set(_firing_tests())
    assert not untested, f"no promtool test expects these alerts to fire: {sorted(untested)}"


@pytest.mark.parametrize(("path", "rule"), ALERTS, ids=[rule["alert"] for _, rule in ALERTS])
def test_the_tests_fail_when_the_alert_never_fires(promtool: str, tmp_path: Path, path: Path,
                                                    rule: dict[str, Any]) -> None:
    """Break one alert (an expression that never returns anything) and run its tests against the
    broken copy: they must fail."""
    broken = _load(path)
    for group in broken["groups"]:
        for other in group["rules"]:
            if other.get("alert") == rule["alert"]:
                other["expr"] = "vector(1) == 0"
    rules_dir = tmp_path / "roles" / "monitoring" / "files" / "rules"
    rules_dir.mkdir(parents=True)
    (rules_dir / path.name).write_text(yaml.safe_dump(broken))
    tests_dir = tmp_path / "tests" / "monitoring"
    tests_dir.mkdir(parents=True)
    for test_file in _firing_tests()[rule["alert"]]:
        shutil.copy(test_file, tests_dir / test_file.name)
        proc = _run(promtool, "test", "rules", test_file.name, cwd=tests_dir)
        assert proc.returncode != 0, f"{test_file.name} passes with {rule['alert']} broken"
        assert rule["alert"] in proc.stdout + proc.stderr
