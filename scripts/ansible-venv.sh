#!/usr/bin/env bash
# Create or refresh .venv-ansible/ from requirements-ansible.txt (pinned Ansible,
# Molecule, linters). Idempotent: a stamp holding the requirements' checksum
# skips pip when nothing changed. Prints the venv's bin directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ANSIBLE_VENV:-$ROOT/.venv-ansible}"
REQ="$ROOT/requirements-ansible.txt"
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"

log() { printf '[ansible-venv] %s\n' "$*" >&2; }

if [[ -x "$VENV/bin/ansible-playbook" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$VENV/bin"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    log "installing python3-venv"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >&2
  fi
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
log "installing $(grep -c '^[a-z]' "$REQ") pinned packages (ansible is large: about 2 minutes)"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip >&2 2>/dev/null || true
set +o pipefail
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ" 2>&1 | { grep -v '^WARNING: Location' || true; } >&2
rc=${PIPESTATUS[0]}
set -o pipefail
((rc == 0)) || { log "pip install failed ($rc)"; exit "$rc"; }
"$VENV/bin/ansible-playbook" --version >/dev/null
echo "$want" >"$stamp"
echo "$VENV/bin"
