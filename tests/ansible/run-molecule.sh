#!/usr/bin/env bash
# Run Molecule scenarios one after the other on local podman systemd containers.
#
#   tests/ansible/run-molecule.sh                 # every role scenario, then all-in-one, then cluster
#   tests/ansible/run-molecule.sh kafka spark     # roles/kafka and roles/spark
#   tests/ansible/run-molecule.sh all-in-one      # molecule/all-in-one
#
# Installs what it needs (podman, runc, debootstrap; .venv-ansible/; the image),
# prints each scenario's duration and stops at the first failure.
# MOLECULE_COMMAND=converge (or verify, destroy...) runs one step instead of `test`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/scripts/containers.conf}"
# Host caches mounted into every container: apt archives (one directory per container) and a wheelhouse.
export MOLECULE_CACHE_DIR="${MOLECULE_CACHE_DIR:-/var/cache/candlestack-molecule}"
export PY_COLORS=0 ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
command="${MOLECULE_COMMAND:-test}"

log() { printf '[run-molecule] %s\n' "$*"; }

role_scenarios() {
  local d
  for d in base systemd_service postgresql kafka spark; do
    [[ -f roles/$d/molecule/default/molecule.yml ]] && echo "$d"
  done
  for d in roles/*/molecule/default/molecule.yml; do
    d="${d#roles/}"; d="${d%%/*}"
    case " base systemd_service postgresql kafka spark " in *" $d "*) ;; *) echo "$d" ;; esac
  done
}

if (($# == 0)); then
  mapfile -t scenarios < <(role_scenarios)
  scenarios+=(all-in-one cluster)
else
  scenarios=("$@")
fi

"$ROOT/scripts/molecule-image.sh"
VENV_BIN="$("$ROOT/scripts/ansible-venv.sh")"
export PATH="$VENV_BIN:$PATH"
# Wheels for Superset, pyspark and the rest, mounted read-only into every container.
"$ROOT/scripts/wheelhouse.sh"
# One apt archive directory per container name (two containers that share one would fight
# over apt's lock); create every one the scenarios mount.
grep -rhoE 'candlestack-molecule\}/apt/[A-Za-z0-9_.-]+' roles/*/molecule molecule 2>/dev/null |
  sed 's|.*/apt/||' | sort -u | while read -r dir; do mkdir -p "$MOLECULE_CACHE_DIR/apt/$dir/partial"; done

# Throwaway secrets for the top-level scenarios (provisioner options in molecule/*/molecule.yml).
CANDLESTACK_TEST_VAULT_DIR="$(mktemp -d /tmp/candlestack-vault.XXXXXX)"
export CANDLESTACK_TEST_VAULT_DIR
trap 'rm -rf "$CANDLESTACK_TEST_VAULT_DIR"' EXIT
"$ROOT/scripts/make-vault.sh" "$CANDLESTACK_TEST_VAULT_DIR"

declare -a summary=()
total_start=$SECONDS
for scenario in "${scenarios[@]}"; do
  if [[ -f "molecule/$scenario/molecule.yml" ]]; then
    dir="$ROOT"; name="$scenario"
  elif [[ -f "roles/$scenario/molecule/default/molecule.yml" ]]; then
    dir="$ROOT/roles/$scenario"; name=default
  else
    log "no scenario called $scenario"; exit 2
  fi
  log "=== $scenario: molecule $command (in ${dir#"$ROOT"/}) ==="
  start=$SECONDS
  if (cd "$dir" && molecule "$command" --scenario-name "$name"); then
    summary+=("$(printf '%-16s %-6s %4d s' "$scenario" ok $((SECONDS - start)))")
    log "=== $scenario: ok in $((SECONDS - start)) s ==="
  else
    rc=$?
    summary+=("$(printf '%-16s %-6s %4d s' "$scenario" FAILED $((SECONDS - start)))")
    log "=== $scenario: FAILED (rc $rc) after $((SECONDS - start)) s ==="
    printf '%s\n' "${summary[@]}"
    exit "$rc"
  fi
done
log "durations:"
printf '  %s\n' "${summary[@]}"
log "all ${#scenarios[@]} scenario(s) passed in $((SECONDS - total_start)) s"
