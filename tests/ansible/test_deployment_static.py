"""Static checks of the deployment code (roles, playbooks, inventories, Vagrantfile).

Runs the pinned linters from .venv-ansible/ (created by scripts/ansible-venv.sh on first
use), the playbook syntax check against both inventories, `vagrant validate`, and checks
that the Vagrantfile, the inventories and molecule/cluster describe the same hosts and groups.
Skipped when the tools cannot be installed (no network and no venv yet).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_GROUPS = {"postgresql", "kafka", "spark_master", "spark_worker", "superset", "pipeline", "monitoring"}


@pytest.fixture(scope="module")
def venv_bin() -> Path:
    try:
        out = subprocess.run(
            [str(ROOT / "scripts" / "ansible-venv.sh")], check=True, capture_output=True, text=True, timeout=900
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:  # pragma: no cover
        pytest.skip(f"cannot install the Ansible tooling: {exc}")
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def vault_dir(venv_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Throwaway vault secrets (scripts/make-vault.sh) for rendering an inventory's templates."""
    directory = tmp_path_factory.mktemp("vault")
    _ok(_run([str(ROOT / "scripts" / "make-vault.sh"), str(directory)], venv_bin))
    return directory


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


@pytest.mark.parametrize("inventory", ["inventory/local", "inventory/lab", "inventory/cluster"])
def test_site_syntax(venv_bin: Path, inventory: str) -> None:
    _ok(_run(["ansible-playbook", "--syntax-check", "-i", inventory, "site.yml"], venv_bin))


@pytest.mark.parametrize(
    "playbook", ["database", "kafka", "spark", "superset", "pipeline", "monitoring", "restore"]
)
def test_layer_playbooks_syntax(venv_bin: Path, playbook: str) -> None:
    _ok(_run(["ansible-playbook", "--syntax-check", "-i", "inventory/cluster", f"playbooks/{playbook}.yml"], venv_bin))


def _vagrant_shape(tmp_path: Path, inventory: str | None) -> dict[str, object]:
    """Run `vagrant validate` (with CANDLESTACK_INVENTORY, or its default when None) and read the VMs it defines."""
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed (apt-get install -y --no-install-recommends vagrant)")
    dump = tmp_path / f"vagrant-{(inventory or 'default').replace('/', '-')}.json"
    env = dict(os.environ, CANDLESTACK_VAGRANT_DUMP=str(dump))
    env.pop("CANDLESTACK_INVENTORY", None)
    if inventory:
        env["CANDLESTACK_INVENTORY"] = inventory
    proc = subprocess.run(
        ["vagrant", "validate", "--ignore-provider"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False, env=env,
    )
    _ok(proc)
    return json.loads(dump.read_text())


def _inventory(inventory: str, venv_bin: Path) -> tuple[dict[str, list[str]], dict[str, dict[str, object]]]:
    """Groups (children resolved) and host vars as Ansible itself reads the inventory."""
    proc = _run(["ansible-inventory", "-i", inventory, "--list"], venv_bin)
    _ok(proc)
    inv = json.loads(proc.stdout)

    def members(group: str) -> list[str]:
        node = inv.get(group, {})
        hosts = list(node.get("hosts", []))
        for child in node.get("children", []):
            hosts += members(child)
        return sorted(set(hosts))

    groups = {group: members(group) for group in CLUSTER_GROUPS}
    return groups, inv["_meta"]["hostvars"]


@pytest.mark.parametrize("inventory", ["inventory/lab", "inventory/cluster"])
def test_vagrantfile_matches_inventory(venv_bin: Path, tmp_path: Path, inventory: str) -> None:
    vagrant = _vagrant_shape(tmp_path, inventory)
    groups, hostvars = _inventory(inventory, venv_bin)
    assert sorted(vagrant["hosts"]) == sorted(hostvars)
    assert set(vagrant["groups"]) >= CLUSTER_GROUPS
    for group, hosts in vagrant["groups"].items():
        assert sorted(hosts) == groups.get(group, []), group
    for group in CLUSTER_GROUPS:
        assert groups[group], f"{inventory} has no host in {group}"


def test_vagrant_defaults_to_the_lab_that_molecule_tests(tmp_path: Path) -> None:
    assert _vagrant_shape(tmp_path, None) == _vagrant_shape(tmp_path, "inventory/lab")


def test_molecule_cluster_is_the_lab_inventory(venv_bin: Path) -> None:
    """molecule/cluster runs the lab's hosts, groups and addresses: what CI proves is what `vagrant up` builds."""
    # PyYAML lives in the Ansible venv, not in the project's.
    to_json = "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"
    scenario_file = ROOT / "molecule" / "cluster" / "molecule.yml"
    proc = _run([str(venv_bin / "python"), "-c", to_json], venv_bin, input=scenario_file.read_text())
    _ok(proc)
    scenario = json.loads(proc.stdout)
    groups, hostvars = _inventory("inventory/lab", venv_bin)
    platforms = {p["name"]: p for p in scenario["platforms"]}
    assert sorted(platforms) == sorted(hostvars)
    for group, hosts in groups.items():
        assert sorted(n for n, p in platforms.items() if group in p["groups"]) == hosts, group
    for name, platform in platforms.items():
        assert f"--ip={hostvars[name]['private_address']}" in platform["extra_opts"], name
    links = scenario["provisioner"]["inventory"]["links"]
    assert links == {"hosts": "../../inventory/lab/hosts.yml", "group_vars": "../../inventory/lab/group_vars/"}


def test_kafka_scenario_is_the_cluster_inventorys_kafka(venv_bin: Path) -> None:
    """roles/kafka's scenario deploys inventory/cluster's Kafka hosts, node ids, addresses and settings."""
    scenario_dir = ROOT / "roles" / "kafka" / "molecule" / "default"
    scenario = yaml.safe_load((scenario_dir / "molecule.yml").read_text())
    groups, hostvars = _inventory("inventory/cluster", venv_bin)
    copy = yaml.safe_load((scenario_dir / "inventory" / "hosts.yml").read_text())["all"]["children"]["kafka"]["hosts"]
    assert sorted(copy) == groups["kafka"]
    for name, settings in copy.items():
        assert settings == {k: hostvars[name][k] for k in ("private_address", "kafka_node_id")}, name
    platforms = {p["name"]: p for p in scenario["platforms"]}
    assert sorted(platforms) == groups["kafka"]
    for name, platform in platforms.items():
        assert f"--ip={copy[name]['private_address']}" in platform["extra_opts"], name
    assert scenario["provisioner"]["inventory"]["links"] == {
        "hosts": "inventory/hosts.yml", "group_vars": "../../../../inventory/cluster/group_vars/"}


def test_kafka_first_install_starts_every_node_together() -> None:
    """A KRaft broker waits for a majority of the controllers: a `serial` Kafka play never comes up."""
    plays = [p for p in yaml.safe_load((ROOT / "playbooks" / "kafka.yml").read_text()) if p.get("hosts") == "kafka"]
    assert plays and all("serial" not in play for play in plays)


def test_local_inventory_has_one_host_in_every_group(venv_bin: Path) -> None:
    proc = _run(["ansible-inventory", "-i", "inventory/local", "--list"], venv_bin)
    _ok(proc)
    inv = json.loads(proc.stdout)
    assert list(inv["_meta"]["hostvars"]) == ["candlestack-aio"]
    for group in CLUSTER_GROUPS:
        assert inv[group]["hosts"] == ["candlestack-aio"], group


def test_make_test_leaves_the_make_up_host_alone(venv_bin: Path) -> None:
    """`make up` runs inventory/local's host as a container of the same name; the Molecule
    scenarios (which `make test` destroys and re-creates) must never use that name."""
    make_up_name = re.search(r"^AIO_NAME \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert make_up_name is not None
    inv = json.loads(_run(["ansible-inventory", "-i", "inventory/local", "--list"], venv_bin).stdout)
    assert list(inv["_meta"]["hostvars"]) == [make_up_name.group(1)]
    scenario_names = set()
    for molecule_yml in [*ROOT.glob("molecule/*/molecule.yml"), *ROOT.glob("roles/*/molecule/*/molecule.yml")]:
        scenario_names.update(re.findall(r"^\s+- name: (\S+)$", molecule_yml.read_text(), re.M))
    assert scenario_names, "no Molecule platforms found"
    assert make_up_name.group(1) not in scenario_names
    assert make_up_name.group(1) not in (ROOT / "tests" / "ansible" / "run-molecule.sh").read_text()


MOLECULE_FILES = sorted([*ROOT.glob("molecule/*/molecule.yml"), *ROOT.glob("roles/*/molecule/*/molecule.yml")])


@pytest.mark.parametrize("molecule_yml", MOLECULE_FILES, ids=lambda p: str(p.relative_to(ROOT).parent))
def test_every_scenario_runs_on_the_selected_debian_release(molecule_yml: Path) -> None:
    """run-molecule.sh picks the release with CANDLESTACK_DEBIAN: a platform with a fixed image
    would run one release whatever the matrix says, and one without CAP_SYS_ADMIN would fail
    every hardened unit on Debian 13."""
    platforms = yaml.safe_load(molecule_yml.read_text())["platforms"]
    assert platforms
    for platform in platforms:
        assert platform["image"] == "localhost/debian-${CANDLESTACK_DEBIAN:-trixie}-systemd:latest", platform["name"]
        assert "SYS_ADMIN" in platform.get("capabilities", []), platform["name"]
        apt = [v for v in platform.get("volumes", []) if v.endswith(":/var/cache/apt/archives")]
        assert apt and "/apt/${CANDLESTACK_DEBIAN:-trixie}/" in apt[0], platform["name"]


def _referenced_vault_names(inventory: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / inventory / "group_vars").rglob("*.yml"):
        found |= set(re.findall(r"\bvault_[a-z0-9_]+", path.read_text()))
    return found


def _make_vault_names() -> set[str]:
    """The vault_* names scripts/make-vault.sh generates for the tests' throwaway vaults."""
    script = (ROOT / "scripts" / "make-vault.sh").read_text()
    passwords = re.search(r"passwords=\((.*?)\)", script, re.S)
    assert passwords is not None
    return ({f"vault_{key}_password" for key in passwords.group(1).split()}
            | set(re.findall(r"'(vault_[a-z0-9_]+): ", script)))


@pytest.mark.parametrize("inventory", ["inventory/local", "inventory/lab", "inventory/cluster"])
def test_every_vault_secret_is_documented_and_generated(inventory: str) -> None:
    referenced = _referenced_vault_names(inventory)
    example = set(re.findall(r"^(vault_[a-z0-9_]+):", (ROOT / inventory / "group_vars" / "all" / "vault.yml.example")
                             .read_text(), re.M))
    assert {"vault_candlestack_status_db_password", "vault_candlestack_retention_db_password"} <= referenced
    assert referenced <= example, referenced - example
    assert referenced <= _make_vault_names(), referenced - _make_vault_names()


@pytest.mark.parametrize("inventory", ["inventory/local", "inventory/lab", "inventory/cluster"])
def test_every_inventory_deploys_the_retention_login(venv_bin: Path, inventory: str) -> None:
    """The retention job logs in as its own user, granted only candlestack_prune (which
    drop_trade_partitions_before needs since migration 0007), from every pipeline host."""
    groups, hostvars = _inventory(inventory, venv_bin)
    role_defaults = yaml.safe_load((ROOT / "roles" / "postgresql" / "defaults" / "main.yml").read_text())
    for host in groups["pipeline"]:
        assert hostvars[host]["candlestack_pg_retention_password"] == (
            "{{ vault_candlestack_retention_db_password }}"), host
    for host in groups["postgresql"]:
        # Pre-created by the role: the owner that runs the migration has no CREATEROLE.
        group_roles = hostvars[host].get("postgresql_group_roles", role_defaults["postgresql_group_roles"])
        assert "candlestack_prune" in group_roles, host  # type: ignore[operator]
        users = {user["name"]: user for user in hostvars[host]["postgresql_users"]}
        assert users["candlestack_retention"]["groups"] == ["candlestack_prune"], host
        assert users["candlestack_retention"]["databases"] == ["candlestack"], host
        assert "candlestack_prune" not in users["candlestack_aggregator"]["groups"], host
        for client in hostvars[host].get("postgresql_hba_clients", []):
            if "candlestack_owner" in client["users"]:
                assert "candlestack_retention" in client["users"], (host, client)


@pytest.mark.parametrize("inventory", ["inventory/local", "inventory/lab", "inventory/cluster"])
def test_every_inventory_deploys_the_read_only_status_login(venv_bin: Path, inventory: str) -> None:
    """candlestack-status works on every pipeline host: its secret, its user in candlestack_read, pg_hba."""
    groups, hostvars = _inventory(inventory, venv_bin)
    for host in groups["pipeline"]:
        assert hostvars[host]["candlestack_pg_status_password"] == "{{ vault_candlestack_status_db_password }}", host
    for host in groups["postgresql"]:
        users = {user["name"]: user for user in hostvars[host]["postgresql_users"]}
        assert users["candlestack_status"]["groups"] == ["candlestack_read"], host
        assert users["candlestack_status"]["databases"] == ["candlestack"], host
        for client in hostvars[host].get("postgresql_hba_clients", []):
            if "candlestack_owner" in client["users"]:
                assert "candlestack_status" in client["users"], (host, client)
