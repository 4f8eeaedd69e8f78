"""The settings table (candlestack.core.setting_table) is complete, and what describes a setting
elsewhere agrees with it: the readers, the README, and the Ansible role ``candlestack`` (its
defaults, the environment files its vars/main.yml writes, meta/argument_specs.yml and its README).

Comparing a role default with the table's: an unset default (None) is a role variable with no
default (absent from defaults/main.yml, null or ""), which an environment file would write as
an empty value, and Env reads as unset; a YAML list is the comma-separated text the role joins
it into; numbers compare as numbers (the role writes 30, the table says 30.0).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from candlestack.core import setting_table
from candlestack.core.setting_table import SETTINGS, TABLE, Choice, Component, Listing, Port, RoleVariable, Setting
from candlestack.core.settings import (
    AggregatorSettings,
    AuditSettings,
    ConsumerSettings,
    DatabaseSettings,
    Env,
    LogSettings,
    ProducerSettings,
)
from tests.harness import role_files

ROOT = Path(__file__).resolve().parents[3]


class RecordingEnviron(dict[str, str]):
    """An environment that remembers which variables were looked up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.looked_up: set[str] = set()

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.looked_up.add(key)
        return super().get(key, default)


READERS: dict[Component, Callable[[RecordingEnviron], object]] = {
    "producer": ProducerSettings.from_env,
    "consumer": ConsumerSettings.from_env,
    "aggregator": AggregatorSettings.from_env,
    "admin": DatabaseSettings.from_env,
    "replay": lambda environ: LogSettings.from_env(Env(environ)),
    "audit": AuditSettings.from_env,
}


@pytest.mark.parametrize("component", setting_table.COMPONENTS)
def test_each_component_reads_exactly_the_settings_the_table_says_it_uses(component: Component) -> None:
    environ = RecordingEnviron({"CANDLESTACK_PG_PASSWORD": "x"})
    READERS[component](environ)
    read = {name for name in environ.looked_up if name.startswith(setting_table.PREFIX)}
    assert read == {entry.variable for entry in TABLE if component in entry.used_by}


def test_a_name_outside_the_table_cannot_be_read() -> None:
    with pytest.raises(LookupError, match="CANDLESTACK_NOT_A_SETTING is not in the settings table"):
        Env({"CANDLESTACK_NOT_A_SETTING": "1"}).raw("NOT_A_SETTING")
    with pytest.raises(TypeError, match="CANDLESTACK_PG_PORT is a setting of kind Integer, not Text"):
        Env({}).text("PG_PORT")


def test_every_entry_is_documented_and_says_how_the_role_sets_it() -> None:
    for entry in TABLE:
        assert entry.help and "|" not in entry.help + entry.accepts(), entry.name
        assert entry.used_by and set(entry.used_by) <= set(setting_table.COMPONENTS), entry.name
        assert bool(entry.role) != bool(entry.not_in_role_because), (
            f"{entry.variable}: either role variables or not_in_role_because")
        for variable in entry.role:
            assert variable.name.startswith("candlestack_"), variable
            assert variable.role_default is None or variable.differs_because, variable
        if isinstance(entry, Port):
            assert set(entry.defaults_by_component) == set(entry.used_by), entry.name
            assert {variable.component for variable in entry.role} == set(entry.used_by), entry.name


# Dataclass fields whose default is not a setting's: what a direct construction means.
NOT_A_SETTING_DEFAULT = {
    "state_dir",  # no state file (from_env falls back to systemd's $STATE_DIRECTORY)
    "symbols",  # the consumer: store any symbol
    "port",  # no metrics endpoint (from_env takes the component's port)
    "application_name",  # each component names itself
    "password",  # the environment below sets one
}


def test_dataclass_defaults_are_what_an_empty_environment_reads() -> None:
    environ = {"CANDLESTACK_PG_PASSWORD": "x"}
    producer, consumer = ProducerSettings.from_env(environ), ConsumerSettings.from_env(environ)
    aggregator, admin = AggregatorSettings.from_env(environ), DatabaseSettings.from_env(environ)
    read = (producer, producer.kafka, producer.metrics, producer.log, consumer, consumer.postgres,
            aggregator, admin)
    for settings in read:
        for field in fields(settings):
            if field.default is not MISSING and field.name not in NOT_A_SETTING_DEFAULT:
                assert field.default == getattr(settings, field.name), f"{type(settings).__name__}.{field.name}"


def test_the_readme_settings_table_is_generated_from_the_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count(setting_table.BEGIN) == readme.count(setting_table.END) == 1
    block = readme.split(setting_table.BEGIN)[1].split(setting_table.END)[0]
    assert block.strip().splitlines() == setting_table.markdown_table().strip().splitlines(), (
        "README.md's settings table is stale: python -m candlestack.core.setting_table --update README.md")


ROLE_VARIABLES = [pytest.param(entry, variable, id=variable.name) for entry in TABLE for variable in entry.role]


def normalised(value: role_files.YamlValue | setting_table.Scalar) -> object:
    """A role's or the table's default in a form both compare in (see the module docstring)."""
    if value is None or value == "":
        return None
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    return value


def expected_role_default(entry: Setting, variable: RoleVariable) -> setting_table.Scalar | None:
    """The default the role should give ``variable``: the table's, unless the entry says why not."""
    return variable.role_default if variable.differs_because else entry.default_for(variable.component)


def test_the_role_writes_only_settings_of_the_table_through_their_declared_variables() -> None:
    for mapping in role_files.environment_mappings():
        entry = SETTINGS.get(mapping.variable.removeprefix(setting_table.PREFIX))
        assert entry is not None, f"vars/main.yml ({mapping.environment}) sets {mapping.variable}, not in the table"
        used = role_files.role_variables_in(mapping.expression, through_internal=False)
        declared = {variable.name for variable in entry.role}
        assert used <= declared, (f"vars/main.yml ({mapping.environment}) sets {mapping.variable} from "
                                  f"{sorted(used - declared)}, which its table entry does not list in role")


@pytest.mark.parametrize(("entry", "variable"), ROLE_VARIABLES)
def test_the_role_variable_sets_its_setting(entry: Setting, variable: RoleVariable) -> None:
    expressions = [mapping.expression for mapping in role_files.environment_mappings()
                   if mapping.variable == entry.variable]
    assert any(variable.name in role_files.role_variables_in(expression, through_internal=True)
               for expression in expressions), f"vars/main.yml never sets {entry.variable} from {variable.name}"


@pytest.mark.parametrize(("entry", "variable"), ROLE_VARIABLES)
def test_the_role_default_is_the_tables(entry: Setting, variable: RoleVariable) -> None:
    defaults = role_files.defaults()
    value = defaults.get(variable.name)
    where = f"roles/candlestack/defaults/main.yml: {variable.name}"
    if role_files.is_template(value):
        assert variable.differs_because and variable.role_default is None, (
            f"{where} is computed ({value!r}): the table entry {entry.variable} must say why in differs_because")
        table_default = entry.default_for(variable.component)
        if table_default is not None:
            assert f"'{table_default}'" in str(value), f"{where} does not fall back to the table's {table_default!r}"
        return
    expected = expected_role_default(entry, variable)
    assert normalised(value) == normalised(expected), (
        f"{where} is {value!r}; the table ({entry.variable}) says {expected!r}")


@pytest.mark.parametrize(("entry", "variable"), ROLE_VARIABLES)
def test_the_argument_spec_describes_the_role_variable_as_the_table_does(entry: Setting,
                                                                         variable: RoleVariable) -> None:
    where = f"roles/candlestack/meta/argument_specs.yml: {variable.name}"
    spec = role_files.argument_specs().get(variable.name)
    assert spec is not None, f"{where} is missing"
    assert spec.get("description"), f"{where} has no description"
    assert spec.get("type", "str") in entry.role_types, (
        f"{where} has type {spec.get('type', 'str')}; {type(entry).__name__} settings take {entry.role_types}")
    if isinstance(entry, Listing):
        assert spec.get("elements") == "str", f"{where} needs elements: str"
    if isinstance(entry, Choice):
        assert spec.get("choices") == list(entry.choices), f"{where} has choices {spec.get('choices')}"
    if "default" in spec:
        computed = variable.differs_because and variable.role_default is None
        assert not computed, f"{where} states a default, but the role computes it"
        expected = expected_role_default(entry, variable)
        assert normalised(spec["default"]) == normalised(expected), (
            f"{where} has default {spec['default']!r}; the table ({entry.variable}) says {expected!r}")


@pytest.mark.parametrize(("entry", "variable"), ROLE_VARIABLES)
def test_the_role_readme_describes_the_role_variable(entry: Setting, variable: RoleVariable) -> None:
    assert re.search(rf"\b{variable.name}\b", role_files.readme()), (
        f"roles/candlestack/README.md does not mention {variable.name} ({entry.variable})")
    shown = role_files.readme_values()
    if variable.name in shown:
        expected = expected_role_default(entry, variable)
        assert normalised(shown[variable.name]) == normalised(expected), (
            f"roles/candlestack/README.md shows {variable.name}: {shown[variable.name]!r}; the table "
            f"({entry.variable}) says {expected!r}")
