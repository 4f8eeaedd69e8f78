"""Render roles/superset/templates/superset_config.py.j2 outside Ansible, for the test.

Run with the Superset venv's python (it has Jinja2 and PyYAML):
    python render_config.py ROLE_DIR OUT_FILE < overrides.json

The role's defaults are loaded first and the JSON object on stdin overrides them; values that
are Jinja expressions in the defaults (inventory lookups) must be given explicitly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jinja2
import yaml


def main() -> int:
    role_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    variables = yaml.safe_load((role_dir / "defaults/main.yml").read_text()) or {}
    variables.update(json.load(sys.stdin))
    variables.setdefault("ansible_managed", "Rendered by tests/superset/render_config.py")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["to_json"] = json.dumps
    env.filters["bool"] = bool
    template = env.from_string((role_dir / "templates/superset_config.py.j2").read_text())
    out.write_text(template.render(**variables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
