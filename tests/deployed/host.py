"""Driving a deployed candlestack host from outside: a podman systemd container converged by
site.yml (the Molecule all-in-one scenario, or `make up`).

Everything goes through ``podman exec``: systemctl and kill as an operator would use them,
psql as the postgres superuser, and the replay feed's control endpoints on the host's loopback.
"""

from __future__ import annotations

import functools
import json
import shlex
import subprocess
from dataclasses import dataclass
from typing import Any

# The component tests' poll-until-true helper: one deadline, the last error in the message.
from tests.harness.services import wait_for as deadline_wait

REPLAY_URL = "http://127.0.0.1:9443"
DATABASE = "candlestack"
TOPIC = "candlestack.trades"
KAFKA_BOOTSTRAP = "127.0.0.1:9092"
CANDLESTACK_PYTHON = "/opt/candlestack/venv/bin/python"

PIPELINE_UNITS = ("candlestack-replay", "candlestack-producer", "candlestack-consumer", "candlestack-aggregator")
# With the PostgreSQL instance, whose name carries the release's major version: see postgres_unit.
PLATFORM_SERVICES = ("tansu", "spark-master", "spark-worker", "superset", "nginx")


class HostCommandError(RuntimeError):
    def __init__(self, command: str, returncode: int, output: str) -> None:
        super().__init__(f"{command!r} exited {returncode}: {output.strip()[-2000:]}")
        self.returncode = returncode
        self.output = output


@dataclass(frozen=True)
class DeployedHost:
    """One podman container running the whole pipeline under systemd."""

    name: str

    def exec(self, argv: list[str], *, stdin: str | None = None, timeout: float = 120, check: bool = True) -> str:
        command = ["podman", "exec", *(["-i"] if stdin is not None else []), self.name, *argv]
        done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise HostCommandError(shlex.join(argv), done.returncode, done.stdout + done.stderr)
        return done.stdout

    def sh(self, script: str, *, timeout: float = 120, check: bool = True) -> str:
        return self.exec(["bash", "-c", script], timeout=timeout, check=check)

    # -- systemd --------------------------------------------------------------------------------
    def systemctl(self, *args: str, timeout: float = 180) -> str:
        return self.exec(["systemctl", *args], timeout=timeout)

    def is_active(self, unit: str) -> bool:
        return self.exec(["systemctl", "is-active", unit], check=False).strip() == "active"

    def restarts(self, unit: str) -> int:
        return int(self.exec(["systemctl", "show", "-P", "NRestarts", unit]).strip() or 0)

    def main_pid(self, unit: str) -> int:
        return int(self.exec(["systemctl", "show", "-P", "MainPID", unit]).strip() or 0)

    def wait_active(self, *units: str, timeout: float = 180) -> None:
        for unit in units:
            deadline_wait(lambda unit=unit: self.is_active(unit), timeout=timeout, interval=1.0, what=f"{unit} active")

    @functools.cached_property
    def postgres_unit(self) -> str:
        """The PostgreSQL instance: postgresql@15-main on Debian 12, postgresql@17-main on 13."""
        out = self.exec(["systemctl", "list-units", "--all", "--plain", "--no-legend", "postgresql@*-main.service"])
        units = [line.split()[0] for line in out.splitlines() if line.strip()]
        if len(units) != 1:
            raise HostCommandError("systemctl list-units postgresql@*-main.service", 0, out or "no unit")
        return units[0].removesuffix(".service")

    def platform_units(self) -> tuple[str, ...]:
        return (self.postgres_unit, *PLATFORM_SERVICES)

    def failed_units(self) -> list[str]:
        out = self.exec(["systemctl", "list-units", "--failed", "--plain", "--no-legend"])
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def journal(self, unit: str, since: str) -> str:
        return self.exec(["journalctl", "-u", unit, "--since", since, "--no-pager", "-o", "cat"], check=False)

    # -- PostgreSQL -------------------------------------------------------------------------------
    def sql(self, query: str, timeout: float = 60, **params: object) -> list[list[str]]:
        """Rows of one statement, as the postgres superuser, fields as text.

        ``params`` become psql variables: write ``:'name'`` in the query for a quoted literal.
        """
        variables = [arg for name, value in params.items() for arg in ("-v", f"{name}={value}")]
        out = self.exec(["runuser", "-u", "postgres", "--", "psql", "-d", DATABASE, "-AtX", "-F", "\t",
                         "-v", "ON_ERROR_STOP=1", *variables, "-f", "-"], stdin=query, timeout=timeout)
        return [line.split("\t") for line in out.splitlines() if line != ""]

    def scalar(self, query: str, **params: object) -> str:
        rows = self.sql(query, **params)
        return rows[0][0] if rows else ""

    # -- the replay feed --------------------------------------------------------------------------
    def replay(self, path: str, *, method: str = "POST") -> Any:
        script = (
            "import sys, urllib.request\n"
            f"r = urllib.request.Request({REPLAY_URL + path!r}, method={method!r})\n"
            "sys.stdout.write(urllib.request.urlopen(r, timeout=30).read().decode())\n"
        )
        out = self.exec(["python3", "-c", script])
        return json.loads(out) if out.strip().startswith(("{", "[")) else out

    def published_ids(self, symbol: str) -> list[int]:
        ids: list[int] = self.replay(f"/_replay/trades?symbol={symbol}", method="GET")
        return ids

    def symbols(self) -> list[str]:
        status = self.replay("/_replay/status", method="GET")
        return sorted(status["symbols"])

    # -- Kafka ------------------------------------------------------------------------------------
    def produce_raw(self, messages: list[tuple[bytes, bytes]]) -> None:
        """Write (key, value) pairs straight to the trades topic, bypassing the producer."""
        payload = json.dumps([[k.decode("latin-1"), v.decode("latin-1")] for k, v in messages])
        script = (
            "import json, sys\n"
            "from confluent_kafka import Producer\n"
            f"p = Producer({{'bootstrap.servers': {KAFKA_BOOTSTRAP!r}, 'acks': 'all'}})\n"
            "for k, v in json.loads(sys.stdin.read()):\n"
            f"    p.produce({TOPIC!r}, key=k.encode('latin-1'), value=v.encode('latin-1'))\n"
            "assert p.flush(30) == 0\n"
        )
        self.exec([CANDLESTACK_PYTHON, "-c", script], stdin=payload)
