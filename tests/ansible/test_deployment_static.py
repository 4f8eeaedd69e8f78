"""Static checks of the deployment code (roles, playbooks, inventories, Vagrantfile).

Runs the pinned linters from .venv-ansible/ (created by scripts/ansible-venv.sh on first
use), the playbook syntax check against both inventories, `vagrant validate`, and checks
that the Vagrantfile and inventory/cluster describe the same hosts and groups.
Skipped when the tools cannot be installed (no network and no venv yet).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_GROUPS = {"postgresql", "kafka", "spark_master", "spark_worker", "superset", "pipeline"}


@pytest.fixture(scope="module")
def venv_bin() -> Path:
    try:
        out = subprocess.run(
            [str(ROOT / "scripts" / "ansible-venv.sh")], check=True, capture_output=True, text=True, timeout=900
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:  # pragma: no cover
        pytest.skip(f"cannot install the Ansible tooling: {exc}")
    return Path(out.stdout.strip().splitlines()[-1])


def _run(cmd: list[str], venv_bin: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{venv_bin}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1", PY_COLORS="0")
    env.pop("ANSIBLE_VAULT_PASSWORD_FILE", None)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False, **kwargs)


def _ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"{proc.args} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"


def test_yamllint(venv_bin: Path) -> None:
    _ok(_run(["yamllint", "--strict", "."], venv_bin))


def test_ansible_lint_production_profile(venv_bin: Path) -> None:
    _ok(_run(["ansible-lint", "--profile", "production", "--offline"], venv_bin))


@pytest.mark.parametrize("inventory", ["inventory/local", "inventory/cluster"])
def test_site_syntax(venv_bin: Path, inventory: str) -> None:
    _ok(_run(["ansible-playbook", "--syntax-check", "-i", inventory, "site.yml"], venv_bin))


@pytest.mark.parametrize(
    "playbook", ["database", "kafka", "spark", "superset", "pipeline"]
)
def test_layer_playbooks_syntax(venv_bin: Path, playbook: str) -> None:
    _ok(_run(["ansible-playbook", "--syntax-check", "-i", "inventory/cluster", f"playbooks/{playbook}.yml"], venv_bin))


def _vagrant_shape(tmp_path: Path) -> dict[str, object]:
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed (apt-get install -y --no-install-recommends vagrant)")
    dump = tmp_path / "vagrant.json"
    proc = subprocess.run(
        ["vagrant", "validate", "--ignore-provider"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env=dict(os.environ, CANDLESTACK_VAGRANT_DUMP=str(dump)),
    )
    _ok(proc)
    return json.loads(dump.read_text())


def test_vagrant_validate(tmp_path: Path) -> None:
    _vagrant_shape(tmp_path)


def test_vagrantfile_matches_cluster_inventory(venv_bin: Path, tmp_path: Path) -> None:
    vagrant = _vagrant_shape(tmp_path)
    proc = _run(["ansible-inventory", "-i", "inventory/cluster", "--list"], venv_bin)
    _ok(proc)
    inv = json.loads(proc.stdout)
    inventory_hosts = sorted(inv["_meta"]["hostvars"])

    def members(group: str) -> list[str]:
        node = inv.get(group, {})
        hosts = list(node.get("hosts", []))
        for child in node.get("children", []):
            hosts += members(child)
        return sorted(set(hosts))

    assert sorted(vagrant["hosts"]) == inventory_hosts
    assert set(vagrant["groups"]) >= CLUSTER_GROUPS
    for group, hosts in vagrant["groups"].items():
        assert sorted(hosts) == members(group), group
    for group in CLUSTER_GROUPS:
        assert members(group), f"inventory/cluster has no host in {group}"


def test_local_inventory_has_one_host_in_every_group(venv_bin: Path) -> None:
    proc = _run(["ansible-inventory", "-i", "inventory/local", "--list"], venv_bin)
    _ok(proc)
    inv = json.loads(proc.stdout)
    assert list(inv["_meta"]["hostvars"]) == ["candlestack-aio"]
    for group in CLUSTER_GROUPS:
        assert inv[group]["hosts"] == ["candlestack-aio"], group
