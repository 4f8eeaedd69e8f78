"""The settings table (candlestack.setting_table) is complete, and what describes a setting
elsewhere agrees with it: the readers and the README."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from candlestack import setting_table
from candlestack.setting_table import TABLE, Component, Port
from candlestack.settings import (
    AggregatorSettings,
    ConsumerSettings,
    DatabaseSettings,
    Env,
    LogSettings,
    ProducerSettings,
)

ROOT = Path(__file__).resolve().parents[1]


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
    # On a difference: python -m candlestack.setting_table --update README.md
    assert block.strip().splitlines() == setting_table.markdown_table().strip().splitlines()
