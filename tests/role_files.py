"""What the Ansible role ``candlestack`` says about its variables: defaults, argument specs, and
which ``CANDLESTACK_*`` variable of which environment file each one sets.

The component tests run without PyYAML, so this reads the YAML the role's files use and no
more: block mappings and sequences, plain and quoted scalars (plain ones may continue on deeper
lines), flow lists, ``{}``, and folded or literal block scalars. Anything else raises ValueError
rather than being misread. Scalars resolve as Ansible's YAML 1.1 loader does for these files
(``true``/``yes``/``on`` are booleans, ``5`` an int, ``0.5`` a float).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROLE = Path(__file__).resolve().parents[1] / "roles" / "candlestack"

YamlValue = str | int | float | bool | None | list["YamlValue"] | dict[str, "YamlValue"]


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    indent: int
    text: str


def load_yaml(text: str) -> YamlValue:
    lines = [_Line(number, len(raw) - len(raw.lstrip(" ")), raw.strip())
             for number, raw in enumerate(text.splitlines(), start=1)
             if raw.strip() and not raw.lstrip().startswith("#") and raw.strip() != "---"]
    if not lines:
        return None
    value, end = _block(lines, 0, lines[0].indent)
    if end != len(lines):
        raise ValueError(f"line {lines[end].number}: unexpected indentation")
    return value


_KEY = re.compile(r"^([\w.-]+):(?:\s+(.*))?$")
_BLOCK_SCALAR = {">", ">-", ">+", "|", "|-", "|+"}


def _block(lines: list[_Line], start: int, indent: int) -> tuple[YamlValue, int]:
    if lines[start].text == "-" or lines[start].text.startswith("- "):
        return _sequence(lines, start, indent)
    return _mapping(lines, start, indent)


def _sequence(lines: list[_Line], start: int, indent: int) -> tuple[list[YamlValue], int]:
    items: list[YamlValue] = []
    i = start
    while i < len(lines) and lines[i].indent == indent and (lines[i].text == "-" or lines[i].text.startswith("- ")):
        rest = lines[i].text[1:].strip()
        if _KEY.match(rest):
            raise ValueError(f"line {lines[i].number}: a mapping in a sequence is not supported")
        value, i = _value(lines, i, indent, rest)
        items.append(value)
    return items, i


def _mapping(lines: list[_Line], start: int, indent: int) -> tuple[dict[str, YamlValue], int]:
    mapping: dict[str, YamlValue] = {}
    i = start
    while i < len(lines) and lines[i].indent == indent:
        match = _KEY.match(lines[i].text)
        if not match:
            raise ValueError(f"line {lines[i].number}: expected `key: value`, got {lines[i].text!r}")
        key, rest = match.group(1), match.group(2) or ""
        if key in mapping:
            raise ValueError(f"line {lines[i].number}: {key} twice")
        mapping[key], i = _value(lines, i, indent, rest)
    return mapping, i


def _value(lines: list[_Line], i: int, indent: int, rest: str) -> tuple[YamlValue, int]:
    """The value that starts with ``rest`` on line ``i`` (a key or a sequence dash at ``indent``)."""
    deeper = i + 1
    while deeper < len(lines) and lines[deeper].indent > indent:
        deeper += 1
    nested = lines[i + 1:deeper]
    if rest in _BLOCK_SCALAR:
        return (" " if rest.startswith(">") else "\n").join(line.text for line in nested), deeper
    if rest:
        # A plain scalar may go on over deeper lines (folded into one), which cannot be keys.
        if any(_KEY.match(line.text) for line in nested):
            raise ValueError(f"line {nested[0].number}: a mapping under a value")
        return _scalar(" ".join([rest, *(line.text for line in nested)])), deeper
    if nested:
        return _block(lines, i + 1, nested[0].indent)
    # A sequence may sit at its key's own indentation.
    if deeper < len(lines) and lines[deeper].indent == indent and lines[deeper].text.startswith("- ") \
            and not lines[i].text.startswith("-"):
        return _sequence(lines, deeper, indent)
    return None, deeper


_INT = re.compile(r"[-+]?\d+")
_FLOAT = re.compile(r"[-+]?(\d+\.\d*|\.\d+)([eE][-+]?\d+)?")
_BOOLEANS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _scalar(text: str) -> YamlValue:
    text = text.strip()
    if text[:1] == '"':
        if not text.endswith('"') or len(text) < 2:
            raise ValueError(f"unsupported double-quoted scalar {text!r}")
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    if text[:1] == "'":
        if not text.endswith("'") or len(text) < 2:
            raise ValueError(f"unsupported single-quoted scalar {text!r}")
        return text[1:-1].replace("''", "'")
    text = re.sub(r"\s+#.*$", "", text)
    if text.startswith("["):
        if not text.endswith("]"):
            raise ValueError(f"unsupported flow sequence {text!r}")
        inner = text[1:-1].strip()
        return [_scalar(item) for item in re.findall(r"""(?:"[^"]*"|'[^']*'|[^,])+""", inner)] if inner else []
    if text.startswith("{"):
        if text != "{}":
            raise ValueError(f"unsupported flow mapping {text!r}")
        return {}
    if text in {"", "~", "null", "Null", "NULL"}:
        return None
    if text.lower() in _BOOLEANS:
        return _BOOLEANS[text.lower()]
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
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
