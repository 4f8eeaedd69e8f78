"""roles/monitoring's Prometheus and Alertmanager configurations, rendered for each inventory.

`render-monitoring.yml` templates prometheus.yml.j2, alertmanager.yml.j2 and blackbox.yml.j2 for the inventory's
first monitoring host (no connection to any host, one ansible-playbook run per inventory, on a
copy of the inventory without its vault and with a throwaway one from scripts/make-vault.sh).
Then: `promtool check config --syntax-only` and `amtool check-config` accept them, and the scrape
targets are the ones the inventory's hosts.yml and group_vars describe: one node target per host,
the PostgreSQL, pipeline, Spark, Superset and Kafka targets of their groups' hosts, on the port the
role serving them listens on and at the address it binds to (loopback for an exporter on the
monitoring host itself, the host's private address otherwise). Expected values come from the
inventory files and the roles' defaults, not from lists here, so a host the template drops fails.

Needs promtool (Debian's `prometheus`) and amtool (`prometheus-alertmanager`); each check is
skipped, saying which package is missing, without them.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ansible import test_deployment_static as static

ROOT = static.ROOT
PLAYBOOK = Path(__file__).resolve().parent / "render-monitoring.yml"
INVENTORIES = ["inventory/local", "inventory/lab", "inventory/cluster"]
LOOPBACK = "127.0.0.1"
# The exporters that bind to loopback on the monitoring host (roles/node_exporter,
# roles/postgres_exporter, roles/candlestack); every other service binds to the private address.
EXPORTER_JOBS = {"node", "postgresql", "candlestack_producer", "candlestack_consumer", "candlestack_aggregator"}
PIPELINE_COMPONENTS = ("producer", "consumer", "aggregator")
TRUE = {"true", "yes", "on", "1"}

# The module-scoped venv fixture of the deployment static tests (scripts/ansible-venv.sh).
venv_bin = static.venv_bin
vault_dir = static.vault_dir


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _role_default(role: str, name: str) -> Any:
    return _yaml(ROOT / "roles" / role / "defaults" / "main.yml")[name]


@dataclass
class Inventory:
    """Groups (children resolved) and each host's variables, read from the inventory's YAML files."""

    name: str
    groups: dict[str, list[str]]
    hostvars: dict[str, dict[str, Any]]

    @classmethod
    def read(cls, name: str) -> Inventory:
        directory = ROOT / name
        groups: dict[str, list[str]] = {}
        host_entries: dict[str, dict[str, Any]] = {}

        def walk(group: str, node: dict[str, Any] | None) -> list[str]:
            node = node or {}
            members = []
            for host, settings in (node.get("hosts") or {}).items():
                members.append(host)
                host_entries.setdefault(host, {}).update(settings or {})
            for child, child_node in (node.get("children") or {}).items():
                members += walk(child, child_node)
            groups[group] = sorted(set(groups.get(group, [])) | set(members))
            return members

        walk("all", _yaml(directory / "hosts.yml")["all"])

        def group_vars(group: str) -> dict[str, Any]:
            merged: dict[str, Any] = {}
            files = [directory / "group_vars" / f"{group}.yml",
                     *sorted((directory / "group_vars" / group).glob("*.yml"))]
            for path in files:
                if path.name != "vault.yml":
                    merged.update(_yaml(path) or {})
            return merged

        hostvars: dict[str, dict[str, Any]] = {}
        for host in groups["all"]:
            merged = group_vars("all")
            for group in sorted(g for g, hosts in groups.items() if g != "all" and host in hosts):
                merged.update(group_vars(group))
            merged.update(_yaml(directory / "host_vars" / f"{host}.yml") or {})
            merged.update(host_entries.get(host, {}))
            hostvars[host] = merged
        return cls(name, groups, hostvars)

    def group(self, name: str) -> list[str]:
        return self.groups.get(name, [])

    @property
    def monitoring_host(self) -> str:
        return self.group("monitoring")[0]

    def private(self, host: str) -> str:
        address = self.hostvars[host].get("private_address")
        assert address, f"{self.name}: {host} has no private_address"
        return str(address)

    def exporter_address(self, host: str) -> str:
        """roles/node_exporter's rule: loopback when the monitoring group is this host alone."""
        return LOOPBACK if set(self.group("monitoring")) <= {host} else self.private(host)

    def setting(self, host: str, name: str, role: str) -> Any:
        return self.hostvars[host].get(name, _role_default(role, name))


@dataclass
class Rendered:
    inventory: Inventory
    prometheus_file: Path
    alertmanager_file: Path
    prometheus: dict[str, Any]
    alertmanager: dict[str, Any]
    blackbox: dict[str, Any]

    def job(self, name: str) -> dict[str, Any]:
        jobs: dict[str, dict[str, Any]] = {job["job_name"]: job for job in self.prometheus["scrape_configs"]}
        assert name in jobs, f"{self.inventory.name}: no {name} job in {sorted(jobs)}"
        return jobs[name]

    def targets(self, name: str) -> list[tuple[str, str]]:
        """(instance label, target) of each static target of a job."""
        found = []
        for static_config in self.job(name)["static_configs"]:
            for target in static_config["targets"]:
                found.append((static_config["labels"]["instance"], target))
        return found


def _tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is missing: apt-get install -y --no-install-recommends {package}")
    return found


@pytest.fixture(scope="module", params=INVENTORIES)
def rendered(
    request: pytest.FixtureRequest, venv_bin: Path, vault_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Rendered:
    name: str = request.param
    work = tmp_path_factory.mktemp(name.replace("/", "-"))
    # The inventory without its vault (absent, or encrypted with a password the test does not have).
    copy = work / "inventory"
    shutil.copytree(ROOT / name, copy, ignore=shutil.ignore_patterns("vault.yml"))
    out = work / "rendered"
    out.mkdir()
    proc = static._run(
        ["ansible-playbook", "-i", str(copy), str(PLAYBOOK), "-e", f"render_dir={out}",
         "-e", f"@{vault_dir / 'vault.yml'}", "--vault-password-file", str(vault_dir / "vault-pass")],
        venv_bin,
    )
    static._ok(proc)
    return Rendered(
        inventory=Inventory.read(name),
        prometheus_file=out / "prometheus.yml",
        alertmanager_file=out / "alertmanager.yml",
        prometheus=_yaml(out / "prometheus.yml"),
        alertmanager=_yaml(out / "alertmanager.yml"),
        blackbox=_yaml(out / "blackbox.yml"),
    )


def test_promtool_accepts_the_prometheus_config(rendered: Rendered) -> None:
    promtool = _tool("promtool", "prometheus")
    proc = subprocess.run([promtool, "check", "config", "--syntax-only", str(rendered.prometheus_file)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"{rendered.inventory.name}:\n{proc.stdout}\n{proc.stderr}"


def test_amtool_accepts_the_alertmanager_config(rendered: Rendered) -> None:
    amtool = _tool("amtool", "prometheus-alertmanager")
    proc = subprocess.run([amtool, "check-config", str(rendered.alertmanager_file)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"{rendered.inventory.name}:\n{proc.stdout}\n{proc.stderr}"


def test_alertmanager_routes_go_to_declared_receivers(rendered: Rendered) -> None:
    config = rendered.alertmanager
    receivers = {receiver["name"] for receiver in config["receivers"]}

    def check(route: dict[str, Any]) -> None:
        if "receiver" in route:
            assert route["receiver"] in receivers, route
        for child in route.get("routes") or []:
            check(child)

    check(config["route"])


def test_every_job_is_there_and_no_other(rendered: Rendered) -> None:
    inv = rendered.inventory
    expected = {"prometheus", "alertmanager", "node"}
    expected |= {"postgresql"} if inv.group("postgresql") else set()
    expected |= {f"candlestack_{c}" for c in PIPELINE_COMPONENTS} if inv.group("pipeline") else set()
    expected |= {group for group in ("spark_master", "spark_worker", "superset") if inv.group(group)}
    expected |= {"kafka"} if inv.group("kafka") else set()
    jobs = [job["job_name"] for job in rendered.prometheus["scrape_configs"]]
    assert sorted(jobs) == sorted(expected)


def test_prometheus_and_alertmanager_on_the_monitoring_host(rendered: Rendered) -> None:
    inv = rendered.inventory
    host = inv.monitoring_host
    address = inv.private(host)
    assert rendered.targets("prometheus") == [(host, f"{address}:9090")]
    assert rendered.targets("alertmanager") == [(host, f"{address}:9093")]
    alertmanagers = rendered.prometheus["alerting"]["alertmanagers"]
    assert [t for am in alertmanagers for sc in am["static_configs"] for t in sc["targets"]] == [f"{address}:9093"]


def test_node_job_has_one_target_per_host(rendered: Rendered) -> None:
    inv = rendered.inventory
    targets = rendered.targets("node")
    assert sorted(instance for instance, _ in targets) == sorted(inv.group("all"))
    for instance, target in targets:
        port = inv.setting(instance, "node_exporter_port", "node_exporter")
        assert target == f"{inv.exporter_address(instance)}:{port}", instance
    labels = {sc["labels"]["instance"]: sc["labels"]["groups"] for sc in rendered.job("node")["static_configs"]}
    for host, groups in labels.items():
        expected = sorted(g for g, hosts in inv.groups.items() if g != "all" and host in hosts)
        assert groups.split(",") == expected, host


def test_postgres_exporter_of_every_database_host(rendered: Rendered) -> None:
    inv = rendered.inventory
    targets = rendered.targets("postgresql")
    assert sorted(instance for instance, _ in targets) == inv.group("postgresql")
    for instance, target in targets:
        port = inv.setting(instance, "postgres_exporter_port", "postgres_exporter")
        assert target == f"{inv.exporter_address(instance)}:{port}", instance


@pytest.mark.parametrize("component", PIPELINE_COMPONENTS)
def test_pipeline_metrics_of_every_pipeline_host(rendered: Rendered, component: str) -> None:
    inv = rendered.inventory
    targets = rendered.targets(f"candlestack_{component}")
    # Every pipeline host, unless it turns the component (or its metrics, with port 0) off.
    expected = [host for host in inv.group("pipeline")
                if str(inv.setting(host, f"candlestack_{component}_enabled", "candlestack")).lower() in TRUE
                and int(inv.setting(host, f"candlestack_{component}_metrics_port", "candlestack")) > 0]
    assert sorted(instance for instance, _ in targets) == expected
    for instance, target in targets:
        port = inv.setting(instance, f"candlestack_{component}_metrics_port", "candlestack")
        assert target == f"{inv.exporter_address(instance)}:{port}", instance


@pytest.mark.parametrize(("group", "port_setting"),
                         [("spark_master", "spark_master_webui_port"), ("spark_worker", "spark_worker_webui_port")])
def test_spark_web_uis_of_their_groups(rendered: Rendered, group: str, port_setting: str) -> None:
    inv = rendered.inventory
    targets = rendered.targets(group)
    assert sorted(instance for instance, _ in targets) == inv.group(group)
    for instance, target in targets:
        # roles/spark binds every daemon to the private address (spark_local_ip), even on the
        # monitoring host.
        assert target == f"{inv.private(instance)}:{inv.setting(instance, port_setting, 'spark')}", instance


def _probes_through_local_blackbox(job: dict[str, Any], module: str) -> None:
    blackbox = _yaml(ROOT / "roles" / "monitoring" / "defaults" / "main.yml")
    assert job["metrics_path"] == "/probe"
    assert job["params"] == {"module": [module]}
    assert module in (ROOT / "roles" / "monitoring" / "templates" / "blackbox.yml.j2").read_text()
    replacement = f"{blackbox['monitoring_blackbox_listen_address']}:{blackbox['monitoring_blackbox_port']}"
    assert {"target_label": "__address__", "replacement": replacement} in job["relabel_configs"]
    assert {"source_labels": ["__address__"], "target_label": "__param_target"} in job["relabel_configs"]


def test_superset_health_probe_of_every_superset_host(rendered: Rendered) -> None:
    inv = rendered.inventory
    _probes_through_local_blackbox(rendered.job("superset"), "http_2xx")
    targets = rendered.targets("superset")
    assert sorted(instance for instance, _ in targets) == inv.group("superset")
    for instance, target in targets:
        # Through nginx on the private address (Superset's own port is on loopback).
        port = inv.setting(instance, "nginx_https_port", "nginx")
        suffix = "" if port == 443 else f":{port}"
        assert target == f"https://{inv.private(instance)}{suffix}/health", instance


def test_superset_probe_checks_the_certificate_against_the_ca(rendered: Rendered) -> None:
    """The http_2xx module trusts roles/pki's CA only, and a plain-HTTP answer fails the probe."""
    http = rendered.blackbox["modules"]["http_2xx"]["http"]
    ca = f"{_role_default('pki', 'pki_host_dir')}/ca.crt"
    assert http["tls_config"] == {"ca_file": ca}
    assert http["fail_if_not_ssl"] is True
    assert not http["tls_config"].get("insecure_skip_verify", False)


def test_kafka_listener_probe_of_every_broker(rendered: Rendered) -> None:
    inv = rendered.inventory
    _probes_through_local_blackbox(rendered.job("kafka"), "tcp_connect")
    brokers = inv.group("kafka_broker") or inv.group("kafka")
    targets = rendered.targets("kafka")
    assert sorted(instance for instance, _ in targets) == brokers
    for instance, target in targets:
        assert target == f"{inv.private(instance)}:{inv.setting(instance, 'kafka_port', 'kafka')}", instance


def _host_part(target: str) -> str:
    host_port = target.removeprefix("http://").removeprefix("https://").split("/", 1)[0]
    return host_port.rsplit(":", 1)[0] if ":" in host_port else host_port


def test_loopback_only_where_the_target_is_on_the_monitoring_host(rendered: Rendered) -> None:
    """All-in-one: everything on 127.0.0.1. Elsewhere loopback only for the monitoring host's own exporters."""
    inv = rendered.inventory
    loopback = []
    for job in rendered.prometheus["scrape_configs"]:
        for instance, target in rendered.targets(job["job_name"]):
            if _host_part(target) == LOOPBACK:
                loopback.append((job["job_name"], instance))
            elif inv.name == "inventory/local":
                pytest.fail(f"{job['job_name']} target {target} of {instance} is not on loopback")
    if inv.name == "inventory/local":
        assert loopback
        return
    monitoring = inv.monitoring_host
    for job_name, instance in loopback:
        assert job_name in EXPORTER_JOBS and instance == monitoring, (job_name, instance)
    assert ("node", monitoring) in loopback
