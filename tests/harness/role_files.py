"""What the Ansible role ``candlestack`` says about its variables: defaults, argument specs, and
which ``CANDLESTACK_*`` variable of which environment file each one sets.

PyYAML reads them as Ansible does (YAML 1.1: ``yes``/``on`` are booleans, ``5`` an int,
``0.5`` a float).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "candlestack"

YamlValue = str | int | float | bool | None | list["YamlValue"] | dict[str, "YamlValue"]


def load_yaml(text: str) -> YamlValue:
    loaded: YamlValue = yaml.safe_load(text)
    return loaded


def _scalar(text: str) -> YamlValue:
    """One value as YAML reads it; text YAML cannot read (a bare template) stays text."""
    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text


def is_template(value: YamlValue) -> bool:
    """A value Ansible computes (Jinja), e.g. from the inventory."""
    return isinstance(value, str) and "{{" in value


def defaults() -> dict[str, YamlValue]:
    loaded = load_yaml((ROLE / "defaults" / "main.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def argument_specs() -> dict[str, dict[str, YamlValue]]:
    """The options of the role's main entry point."""
    options = load_yaml((ROLE / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))
    for key in ("argument_specs", "main", "options"):
        assert isinstance(options, dict), key
        options = options[key]
    assert isinstance(options, dict)
    return {name: spec for name, spec in options.items() if isinstance(spec, dict)}


@dataclass(frozen=True, slots=True)
class Mapping:
    """``'CANDLESTACK_X': <expression>`` in the environment of ``environment`` (a variable of vars/main.yml)."""

    environment: str
    variable: str
    expression: str


_MAPPING = re.compile(r"""^\s*'?(CANDLESTACK_[A-Z0-9_]+)'?\s*:\s*(.+?),?\s*$""")
_TOP_LEVEL_KEY = re.compile(r"^(__candlestack_\w+):")


def environment_mappings() -> list[Mapping]:
    """Every ``CANDLESTACK_*`` key the role's vars/main.yml gives a value, one per line as the file
    writes them: in a YAML mapping (``KEY: "{{ expr }}"``) or in a Jinja dict (``'KEY': expr,``)."""
    mappings: list[Mapping] = []
    environment = ""
    for line in (ROLE / "vars" / "main.yml").read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#"):
            continue
        if key := _TOP_LEVEL_KEY.match(line):
            environment = key.group(1)
        if match := _MAPPING.match(line):
            expression = match.group(2).strip()
            if expression.startswith('"{{') and expression.endswith('}}"'):
                expression = expression[3:-3].strip()
            mappings.append(Mapping(environment, match.group(1), expression))
    return mappings


def internal_definitions() -> dict[str, str]:
    """The role's internal ``__candlestack_*`` variables, each as the text of its definition."""
    loaded = load_yaml((ROLE / "vars" / "main.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return {name: str(value) for name, value in loaded.items()}


# \b keeps __candlestack_* and vault_candlestack_* out: "_" and "c" are both word characters.
_ROLE_VARIABLE = re.compile(r"\bcandlestack_\w+")
_INTERNAL_VARIABLE = re.compile(r"\b__candlestack_\w+")


def role_variables_in(expression: str, *, through_internal: bool) -> set[str]:
    """The role's public variables an expression uses; ``through_internal`` also follows the
    internal variables it uses to their own definitions."""
    found = set(_ROLE_VARIABLE.findall(expression))
    if through_internal:
        definitions = internal_definitions()
        seen: set[str] = set()
        todo = set(_INTERNAL_VARIABLE.findall(expression))
        while todo:
            name = todo.pop()
            seen.add(name)
            definition = definitions.get(name, "")
            found |= set(_ROLE_VARIABLE.findall(definition))
            todo |= set(_INTERNAL_VARIABLE.findall(definition)) - seen
    return found


def readme() -> str:
    return (ROLE / "README.md").read_text(encoding="utf-8")


_README_VALUE = re.compile(r"^(candlestack_\w+): (.+)$", re.MULTILINE)


def readme_values() -> dict[str, YamlValue]:
    """``candlestack_y: value`` lines of the role README's YAML blocks (not indented, so not the
    example play), without placeholders (``<...>``) and templates."""
    values: dict[str, YamlValue] = {}
    for name, text in _README_VALUE.findall(readme()):
        if text.startswith("<"):
            continue
        value = _scalar(text)
        if not is_template(value):
            values[name] = value
    return values
