#!/usr/bin/env bash
# Static checks of the deployment code (tests/ansible/test_deployment_static.py):
# yamllint, ansible-lint (production profile), syntax checks of site.yml and the layer
# playbooks against the three inventories, vagrant validate, Vagrantfile vs inventory/lab and
# inventory/cluster, molecule/cluster vs inventory/lab.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
VENV_BIN="$("$ROOT/scripts/ansible-venv.sh")"
if python3 -c 'import pytest' 2>/dev/null; then
  py=python3
else
  "$VENV_BIN/pip" install --quiet --disable-pip-version-check pytest 2>&1 | grep -v '^WARNING: Location' || true
  py="$VENV_BIN/python"
fi
exec "$py" -m pytest -q -p no:cacheprovider --noconftest "$ROOT/tests/ansible/test_deployment_static.py" "$@"
