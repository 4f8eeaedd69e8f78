"""roles/firewall's nftables scripts, rendered for every host of inventory/lab, cluster and local.

`render-firewall.yml` runs the role's own rules.yml and template for each host (no connection, one
ansible-playbook run per inventory, on a copy of the inventory without its vault). Then:

- `nft -c -f` accepts each script (in a network namespace of its own, so nothing of this
  machine's ruleset is read or changed; skipped without nft, Debian's `nftables`);
- each inventory/lab host opens exactly the ports listed here, to exactly these sources: the
  expectations are written out by hand from the architecture (docs/network.md), not computed the
  way the role computes them, so a flow the role loses or adds fails;
- every scrape target of roles/monitoring's prometheus.yml (rendered by render-monitoring.yml)
  that is on another host accepts the monitoring host, for lab and cluster;
- on every host: SSH open, inbound policy drop, no rule from the host's own address, and nothing
  open to any source but SSH and the public web ports.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.ansible import test_deployment_static as static
from tests.ansible.test_systemd_units_static import EXPOSURE_LIMIT, OVERALL

ROOT = static.ROOT
PLAYBOOK = Path(__file__).resolve().parent / "render-firewall.yml"
MONITORING_PLAYBOOK = Path(__file__).resolve().parent / "render-monitoring.yml"
INVENTORIES = ["inventory/lab", "inventory/cluster", "inventory/local"]
ANY = "any"
PUBLIC_PORTS = {"22", "80", "443"}

venv_bin = static.venv_bin
vault_dir = static.vault_dir

# A flow's rule as the template writes it: `[ip|ip6 saddr { a, b }] tcp dport { p, first-last } accept`.
RULE = re.compile(r"^(?:(?P<family>ip6?) saddr \{ (?P<sources>[^}]+) \} )?"
                  r"(?P<proto>tcp|udp) dport \{ (?P<ports>[^}]+) \} accept$")

# inventory/lab (hosts.yml): what each host must accept, port (or range) -> sources.
DATA, COMPUTE_1, COMPUTE_2 = "192.168.57.11", "192.168.57.12", "192.168.57.13"
LAB_EXPECTED: dict[str, dict[str, set[str]]] = {
    # postgresql, kafka, superset
    "lab-data": {
        "22": {ANY},
        "80": {ANY, COMPUTE_2},  # users, and the health probe from monitoring
        "443": {ANY, COMPUTE_2},
        "5432": {COMPUTE_1, COMPUTE_2},  # pipeline + spark worker, spark worker
        "9092": {COMPUTE_1, COMPUTE_2},  # pipeline, blackbox probe from monitoring
        "9187": {COMPUTE_2},  # postgres_exporter
        "8088": {COMPUTE_2},  # Superset /health through the blackbox exporter
        "9100": {COMPUTE_2},  # node_exporter
    },
    # spark_master, spark_worker, pipeline
    "lab-compute-1": {
        "22": {ANY},
        "7077": {COMPUTE_2},  # the other worker registers
        "7079-7089": {COMPUTE_2},  # executors call the aggregator's driver back
        "7090-7110": {COMPUTE_2},  # the executors' block managers (shuffle, results to the driver)
        "8080": {COMPUTE_2},
        "8081": {COMPUTE_2},
        "9100": {COMPUTE_2},
        "9101": {COMPUTE_2},
        "9102": {COMPUTE_2},
        "9103": {COMPUTE_2},
    },
    # spark_worker, monitoring: its own exporters are reached over loopback
    "lab-compute-2": {
        "22": {ANY},
        "7078": {COMPUTE_1},  # the master launches executors
        "7090-7110": {COMPUTE_1},  # shuffle from the other worker, results to the driver
    },
}


@dataclass
class Rule:
    proto: str
    ports: list[str]
    sources: set[str]  # {"any"} for every source

    def covers(self, port: int) -> bool:
        for spec in self.ports:
            first, _, last = spec.partition("-")
            if int(first) <= port <= int(last or first):
                return True
        return False

    def admits(self, address: str) -> bool:
        return ANY in self.sources or any(
            ipaddress.ip_address(address) in ipaddress.ip_network(source, strict=False) for source in self.sources)


@dataclass
class Host:
    name: str
    path: Path
    text: str
    rules: list[Rule]

    def opened(self) -> dict[str, set[str]]:
        """Port or range -> sources, over every rule."""
        found: dict[str, set[str]] = {}
        for rule in self.rules:
            for spec in rule.ports:
                found.setdefault(spec, set()).update(rule.sources)
        return found

    def accepts(self, address: str, port: int, proto: str = "tcp") -> bool:
        return any(rule.proto == proto and rule.covers(port) and rule.admits(address) for rule in self.rules)


def _parse(path: Path) -> Host:
    text = path.read_text()
    rules = []
    for line in text.splitlines():
        match = RULE.match(line.strip())
        if match:
            sources = {s.strip() for s in match["sources"].split(",")} if match["sources"] else {ANY}
            rules.append(Rule(match["proto"], [p.strip() for p in match["ports"].split(",")], sources))
    return Host(path.stem, path, text, rules)


def _render(name: str, playbook: Path, venv_bin: Path, work: Path, vault_dir: Path) -> Path:
    # The inventory without its vault (absent, or encrypted with a password the test does not have).
    copy = work / "inventory"
    if not copy.exists():
        shutil.copytree(ROOT / name, copy, ignore=shutil.ignore_patterns("vault.yml"))
    out = work / playbook.stem
    out.mkdir()
    static._ok(static._run(
        ["ansible-playbook", "-i", str(copy), str(playbook), "-e", f"render_dir={out}",
         "-e", f"@{vault_dir / 'vault.yml'}", "--vault-password-file", str(vault_dir / "vault-pass")],
        venv_bin,
    ))
    return out


def _inventory_list(work: Path, venv_bin: Path) -> dict[str, Any]:
    proc = static._run(["ansible-inventory", "-i", str(work / "inventory"), "--list"], venv_bin)
    static._ok(proc)
    listing: dict[str, Any] = json.loads(proc.stdout)
    return listing


@pytest.fixture(scope="module", params=INVENTORIES)
def inventory(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return request.param, tmp_path_factory.mktemp(request.param.replace("/", "-"))


@pytest.fixture(scope="module")
def hosts(inventory: tuple[str, Path], venv_bin: Path, vault_dir: Path) -> dict[str, Host]:
    name, work = inventory
    out = _render(name, PLAYBOOK, venv_bin, work, vault_dir)
    found = {path.stem: _parse(path) for path in sorted(out.glob("*.nft"))}
    inventory_hosts = _inventory_list(work, venv_bin)["_meta"]["hostvars"]
    assert sorted(found) == sorted(inventory_hosts), f"{name}: a host has no rendered script"
    return found


def _nft_check_command(path: Path) -> list[str]:
    nft = shutil.which("nft") or ("/usr/sbin/nft" if Path("/usr/sbin/nft").exists() else None)
    if nft is None:
        pytest.skip("nft is missing: apt-get install -y --no-install-recommends nftables")
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is missing")
    # A network namespace of its own (as an unprivileged user: a user namespace too), so that the
    # check sees an empty ruleset and needs no privilege over this machine's.
    return [unshare, "-n" if os.geteuid() == 0 else "-rn", nft, "-c", "-f", str(path)]


def test_nft_accepts_every_script(inventory: tuple[str, Path], hosts: dict[str, Host]) -> None:
    for host in hosts.values():
        proc = subprocess.run(_nft_check_command(host.path), capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0 and "Operation not permitted" in proc.stderr and "unshare" in proc.stderr:
            pytest.skip(f"no network namespace for the check here: {proc.stderr.strip()}")
        assert proc.returncode == 0, f"{inventory[0]} {host.name}: nft -c -f failed:\n{proc.stderr}\n{host.text}"


def test_every_host_drops_inbound_by_default_and_keeps_ssh(inventory: tuple[str, Path], hosts: dict[str, Host]) -> None:
    for host in hosts.values():
        assert "type filter hook input priority filter; policy drop;" in host.text, host.name
        assert "ct state established,related accept" in host.text, host.name
        assert host.accepts("203.0.113.7", 22), f"{inventory[0]} {host.name}: SSH is not open"
        # Only the table candlestack, never the whole ruleset.
        assert "flush ruleset" not in host.text, host.name
        assert re.search(r"^delete table inet candlestack$", host.text, re.MULTILINE), host.name


def test_nothing_but_ssh_and_web_is_open_to_anyone(inventory: tuple[str, Path], hosts: dict[str, Host]) -> None:
    for host in hosts.values():
        wide = {spec for spec, sources in host.opened().items() if ANY in sources}
        assert wide <= PUBLIC_PORTS, f"{inventory[0]} {host.name}: open to any source: {sorted(wide - PUBLIC_PORTS)}"
        assert ("80" in wide) == ("# superset web" in host.text), host.name


def test_no_host_lists_itself_as_a_source(inventory: tuple[str, Path], hosts: dict[str, Host]) -> None:
    name, work = inventory
    hostvars = yaml.safe_load((work / "inventory" / "hosts.yml").read_text())
    addresses = {h: str(v["private_address"]) for group in hostvars["all"]["children"].values()
                 for h, v in ((group or {}).get("hosts") or {}).items() if v and "private_address" in v}
    for host in hosts.values():
        if host.name in addresses:
            own = addresses[host.name]
            assert not any(own in rule.sources for rule in host.rules), f"{name} {host.name} lists its own address"


# Parametrized by name rather than skipped elsewhere: CI fails a run with a skipped test.
@pytest.mark.parametrize("inventory", ["inventory/lab"], indirect=True)
def test_lab_hosts_open_exactly_the_expected_ports(inventory: tuple[str, Path], hosts: dict[str, Host]) -> None:
    assert sorted(hosts) == sorted(LAB_EXPECTED)
    for name, expected in LAB_EXPECTED.items():
        assert hosts[name].opened() == expected, f"{name}:\n{hosts[name].text}"


@pytest.mark.parametrize("inventory", ["inventory/local"], indirect=True)
def test_local_host_opens_only_ssh_and_web(inventory: tuple[str, Path], hosts: dict[str, Host]) -> None:
    # One host: every flow is the host talking to itself, over loopback.
    assert {name: host.opened() for name, host in hosts.items()} == {
        "candlestack-aio": {"22": {ANY}, "80": {ANY}, "443": {ANY}}}


# inventory/local is one host: every target is on loopback.
@pytest.mark.parametrize("inventory", ["inventory/lab", "inventory/cluster"], indirect=True)
def test_every_scrape_target_accepts_the_monitoring_host(
    inventory: tuple[str, Path], hosts: dict[str, Host], venv_bin: Path, vault_dir: Path
) -> None:
    name, work = inventory
    out = _render(name, MONITORING_PLAYBOOK, venv_bin, work, vault_dir)
    prometheus = yaml.safe_load((out / "prometheus.yml").read_text())
    listing = _inventory_list(work, venv_bin)
    hostvars = listing["_meta"]["hostvars"]
    by_address = {str(v["private_address"]): h for h, v in hostvars.items() if "private_address" in v}
    monitoring_host = listing["monitoring"]["hosts"][0]
    source = str(hostvars[monitoring_host]["private_address"])
    checked = 0
    for job in prometheus["scrape_configs"]:
        for static_config in job["static_configs"]:
            for target in static_config["targets"]:
                split = urlsplit(target if "://" in target else f"tcp://{target}")
                default_port = {"https": 443, "http": 80}.get(split.scheme)
                address, port = split.hostname, split.port or default_port
                assert address and port, f"{job['job_name']}: {target}"
                if address.startswith("127.") or by_address.get(address) == monitoring_host:
                    continue  # the monitoring host's own exporters, over loopback
                host = by_address[address]
                assert hosts[host].accepts(source, port), (
                    f"{name}: {job['job_name']} target {target} on {host} is closed to {monitoring_host} ({source})")
                checked += 1
    assert checked >= len(hostvars) - 1, f"{name}: only {checked} targets checked"


@pytest.mark.parametrize("inventory", ["inventory/lab"], indirect=True)
def test_the_firewall_unit_is_sandboxed_like_the_others(inventory: tuple[str, Path], hosts: dict[str, Host]) -> None:
    """The unit runs nft as root: it must still score under the limit of the roles' units."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install -y --no-install-recommends systemd"
    unit = next(iter(hosts.values())).path.parent / "candlestack-firewall.service"
    proc = subprocess.run([analyze, "security", "--offline=true", str(unit)],
                          capture_output=True, text=True, timeout=60, check=False)
    found = OVERALL.search(proc.stdout)
    assert found, f"no overall exposure in:\n{proc.stdout}\n{proc.stderr}"
    assert float(found["score"]) < EXPOSURE_LIMIT, proc.stdout
