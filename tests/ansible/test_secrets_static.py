"""Secrets stay off command lines, and the roles refuse placeholder or short ones.

1. Over the task files of every role, playbook and Molecule scenario: no command-running task
   (command, shell, raw, script, expect) names a secret in its arguments, and no task's
   ``environment:`` carries one. Ansible writes a task's environment into the remote command
   line, where ``ps`` shows it to every local user. Variables are followed through the roles'
   vars/ and defaults/ files, so that ``environment: "{{ __candlestack_owner_env }}"`` counts
   as the owner's password. This reads the task source with variables expanded by name, not a
   deployment's process list; module arguments (e.g. community.postgresql's ``password:``) are
   not checked, since Ansible hands them to the module on stdin or in a private file.
2. The roles that take secrets refuse the vault example's ``REPLACE-ME`` and values shorter
   than their minimum, before installing anything: their ``secrets.yml`` tasks run here against
   localhost.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# A variable whose name says it holds a secret (vault_* values are all secrets).
SECRET_NAME = re.compile(r"password|secret|cipher_pass|passphrase|^vault_", re.I)
IDENTIFIER = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
JINJA = re.compile(r"\{[{%](.*?)[}%]\}", re.S)
QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
COMMAND_MODULES = {f"{prefix}{name}" for prefix in ("", "ansible.builtin.", "ansible.legacy.", "community.general.")
                   for name in ("command", "shell", "raw", "script", "expect")}
TASK_KEYS = ("block", "rescue", "always")


def _task_files() -> list[Path]:
    """What runs against an operator's hosts: the roles' tasks and handlers, the playbooks, and
    the shared Molecule tasks that drive a deployed host as an operator would (the restore
    drill). Role scenarios' own verify files use throwaway test passwords and are left out."""
    globs = ("roles/*/tasks/*.yml", "roles/*/handlers/*.yml", "playbooks/*.yml", "site.yml", "molecule/shared/**/*.yml")
    return sorted({path for pattern in globs for path in ROOT.glob(pattern)})


def _tasks(node: object) -> Iterator[dict[str, object]]:
    """Every task of a task file or playbook, blocks and plays included."""
    if isinstance(node, list):
        for item in node:
            yield from _tasks(item)
    elif isinstance(node, dict):
        if any(key in node for key in ("tasks", "pre_tasks", "post_tasks", "handlers")):
            for key in ("tasks", "pre_tasks", "post_tasks", "handlers"):
                yield from _tasks(node.get(key) or [])
            return
        yield node
        for key in TASK_KEYS:
            yield from _tasks(node.get(key) or [])


def _strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _referenced(node: object) -> set[str]:
    """The names used inside the Jinja expressions and statements of a value (string literals
    within them, such as a dictionary key 'CANDLESTACK_PG_PASSWORD', are not names)."""
    names: set[str] = set()
    for text in _strings(node):
        for expression in JINJA.findall(text):
            names |= set(IDENTIFIER.findall(QUOTED.sub("", expression)))
    return names


def _definitions() -> dict[str, set[str]]:
    """The names each role variable's definition uses, from vars/ and defaults/."""
    found: dict[str, set[str]] = {}
    for path in sorted([*ROOT.glob("roles/*/defaults/main.yml"), *ROOT.glob("roles/*/vars/main.yml")]):
        for name, value in (yaml.safe_load(path.read_text()) or {}).items():
            found.setdefault(name, set()).update(_referenced(value))
    return found


def _secrets_named(names: set[str], definitions: dict[str, set[str]], seen: frozenset[str] = frozenset()) -> set[str]:
    """The secret variables among ``names``, or named by their definitions, at any depth."""
    names = names - seen
    found = {name for name in names if SECRET_NAME.search(name) and not name.endswith("_min_length")}
    for name in names & definitions.keys():
        found |= _secrets_named(definitions[name], definitions, seen | names)
    return found


def _command_arguments(task: dict[str, object]) -> object | None:
    """What a command-running task puts on the command line: everything but its stdin."""
    for module in COMMAND_MODULES & task.keys():
        arguments = task[module]
        return {key: value for key, value in arguments.items() if key != "stdin"} if isinstance(arguments, dict) \
            else arguments
    return None


def test_the_secret_tracer_sees_the_owner_password_through_a_variable() -> None:
    """The check can fail: the migration's owner environment names the owner's password."""
    definitions = _definitions()
    owner_env = _referenced("{{ __candlestack_owner_env }}")
    assert _secrets_named(owner_env, definitions) == {"candlestack_pg_owner_password"}
    assert _secrets_named(_referenced("{{ __superset_environment }}"), definitions) == set()


def test_no_task_puts_a_secret_on_a_command_line() -> None:
    definitions = _definitions()
    offenders = []
    for path in _task_files():
        for document in yaml.safe_load_all(path.read_text()):
            for task in _tasks(document):
                where = f"{path.relative_to(ROOT)}: {task.get('name', '(unnamed)')}"
                command = _command_arguments(task)
                if command is not None and (found := _secrets_named(_referenced(command), definitions)):
                    offenders.append(f"{where}: arguments name {sorted(found)}")
                if "environment" in task and (found := _secrets_named(_referenced(task["environment"]), definitions)):
                    offenders.append(f"{where}: environment carries {sorted(found)}")
    assert not offenders, "secrets on remote command lines:\n" + "\n".join(offenders)


# --- placeholders and short secrets are refused -------------------------------------------

GOOD = "x" * 48
CASES = {
    "postgresql": {"postgresql_users": [{"name": "candlestack_owner", "password": GOOD}]},
    "candlestack": {name: GOOD for name in ("candlestack_pg_owner_password", "candlestack_pg_consumer_password",
                                            "candlestack_pg_aggregator_password", "candlestack_pg_retention_password",
                                            "candlestack_pg_status_password", "candlestack_kafka_producer_password",
                                            "candlestack_kafka_consumer_password")},
    "kafka": {"kafka_admin_password": GOOD,
              "kafka_users": [{"name": "candlestack-producer", "password": GOOD, "acls": []}]},
    "superset": {name: GOOD for name in ("superset_secret_key", "superset_admin_password",
                                         "superset_metadata_db_password", "superset_candlestack_db_password")},
    "pgbackrest": {"pgbackrest_cipher_pass": GOOD},
    "spark": {"spark_auth_secret": GOOD},
    # The aggregator's driver against a Spark cluster needs the cluster's secret.
    "candlestack-spark": {"candlestack_spark_auth_secret": GOOD, "candlestack_spark_master": "spark://10.0.0.1:7077",
                          **{name: GOOD for name in ("candlestack_pg_owner_password",
                                                     "candlestack_pg_consumer_password",
                                                     "candlestack_pg_aggregator_password",
                                                     "candlestack_pg_retention_password",
                                                     "candlestack_pg_status_password",
                                                     "candlestack_kafka_producer_password",
                                                     "candlestack_kafka_consumer_password")}},
}


def _with(role: str, value: str) -> dict[str, object]:
    """The role's good secrets with the first one replaced by ``value``."""
    variables = json.loads(json.dumps(CASES[role]))
    if role == "postgresql":
        variables["postgresql_users"][0]["password"] = value
    elif role == "kafka":
        variables["kafka_users"][0]["password"] = value
    else:
        variables[next(iter(variables))] = value
    return variables


def _check_secrets(role: str, variables: dict[str, object], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "check.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [{"ansible.builtin.include_role": {"name": role.partition("-")[0], "tasks_from": "secrets.yml"}}],
    }]))
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(variables))
    venv = os.environ.get("ANSIBLE_VENV", str(ROOT / ".venv-ansible"))
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(ROOT / "roles"), ANSIBLE_NOCOLOR="1",
               PATH=f"{venv}/bin:{os.environ['PATH']}")
    env.pop("ANSIBLE_VAULT_PASSWORD_FILE", None)
    return subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", str(playbook), "-e", f"@{extra}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("role", sorted(CASES))
def test_a_role_refuses_a_placeholder_or_short_secret(role: str, tmp_path: Path) -> None:
    if not (Path(os.environ.get("ANSIBLE_VENV", str(ROOT / ".venv-ansible"))) / "bin/ansible-playbook").exists():
        pytest.skip("no Ansible venv (scripts/ansible-venv.sh)")
    accepted = _check_secrets(role, CASES[role], tmp_path)
    assert accepted.returncode == 0, accepted.stdout[-3000:]
    for bad in ("REPLACE-ME", "prefix-REPLACE-ME-and-a-long-tail", "short-1"):
        refused = _check_secrets(role, _with(role, bad), tmp_path)
        assert refused.returncode != 0, f"{role} accepted {bad!r}"
        assert "REPLACE-ME or shorter than" in refused.stdout, refused.stdout[-3000:]
        if bad != "REPLACE-ME":  # the message itself names the placeholder
            assert bad not in refused.stdout, f"{role} printed the refused secret"
