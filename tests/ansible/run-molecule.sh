#!/usr/bin/env bash
# Run Molecule scenarios one after the other on local podman systemd containers.
#
#   tests/ansible/run-molecule.sh                 # the CI matrix (below)
#   tests/ansible/run-molecule.sh kafka spark     # roles/kafka and roles/spark
#   tests/ansible/run-molecule.sh all-in-one      # molecule/all-in-one
#   tests/ansible/run-molecule.sh all-in-one@bookworm   # ... on Debian 12
#   tests/ansible/run-molecule.sh vagrant-lab     # inventory/lab by `vagrant up` (tests/ansible/vagrant-lab.sh)
#
# A scenario runs on Debian 13 (trixie) unless it is named SCENARIO@RELEASE, or
# CANDLESTACK_DEBIAN=bookworm selects Debian 12 for every unqualified one. The CI matrix:
# every role scenario and all-in-one (with the fault suite and the restore drill) on Debian 13,
# the three-host lab brought up by Vagrant (vagrant-lab: converge by Vagrant's provisioner, the
# cluster scenario's verify, idempotence), and all-in-one again on Debian 12 (check, converge,
# idempotence, verify). The Molecule cluster scenario (the same lab) runs when named.
#
# Installs what it needs (podman, runc, debootstrap; .venv-ansible/; the image),
# prints each scenario's duration and stops at the first failure (in either lane).
# MOLECULE_COMMAND=converge (or verify, destroy...) runs one step instead of `test`.
# MOLECULE_LANES=2 runs the full-stack scenarios beside the role scenarios (CI does).
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

default_release="${CANDLESTACK_DEBIAN:-trixie}"
if (($# == 0)); then
  mapfile -t scenarios < <(role_scenarios)
  scenarios+=(all-in-one vagrant-lab all-in-one@bookworm)
else
  scenarios=("$@")
fi
release_of() { [[ $1 == *@* ]] && echo "${1#*@}" || echo "$default_release"; }

mapfile -t releases < <(for scenario in "${scenarios[@]}"; do release_of "$scenario"; done | sort -u)
"$ROOT/scripts/molecule-image.sh" "${releases[@]}"
VENV_BIN="$("$ROOT/scripts/ansible-venv.sh")"
export PATH="$VENV_BIN:$PATH"
# Wheels for Superset, pyspark and the rest, mounted read-only into every container.
"$ROOT/scripts/wheelhouse.sh"
# One apt archive directory per release and container name (two containers that share one
# would fight over apt's lock); create every one the scenarios mount.
grep -rhoE 'candlestack-molecule\}/apt/[$][{]CANDLESTACK_DEBIAN:-trixie[}]/[A-Za-z0-9_.-]+' roles/*/molecule molecule 2>/dev/null |
  sed 's|.*/||' | sort -u | while read -r dir; do
    # The caches of the layout without a release were all Debian 12's.
    if [[ -d $MOLECULE_CACHE_DIR/apt/$dir && ! -e $MOLECULE_CACHE_DIR/apt/bookworm/$dir ]]; then
      mkdir -p "$MOLECULE_CACHE_DIR/apt/bookworm" && mv "$MOLECULE_CACHE_DIR/apt/$dir" "$MOLECULE_CACHE_DIR/apt/bookworm/$dir"
    fi
    for release in "${releases[@]}"; do mkdir -p "$MOLECULE_CACHE_DIR/apt/$release/$dir/partial"; done
  done

# The networks of the scenarios that copy an inventory's addresses (Molecule can create a network
# but not with a subnet, so the scenarios only join these): the cluster scenario has
# inventory/lab's subnet, roles/kafka's scenario inventory/cluster's.
podman network exists candlestack-lab ||
  podman network create --subnet 192.168.57.0/24 candlestack-lab >/dev/null
podman network exists candlestack-cluster ||
  podman network create --subnet 192.168.56.0/24 candlestack-cluster >/dev/null

# Throwaway secrets for the top-level scenarios (provisioner options in molecule/*/molecule.yml).
# A directory given in CANDLESTACK_TEST_VAULT_DIR is kept, with its secrets, for a later step on
# the same hosts (MOLECULE_COMMAND=converge, then MOLECULE_COMMAND=side-effect).
if [[ -n "${CANDLESTACK_TEST_VAULT_DIR:-}" ]]; then
  mkdir -p "$CANDLESTACK_TEST_VAULT_DIR"
  [[ -f $CANDLESTACK_TEST_VAULT_DIR/vault.yml ]] || "$ROOT/scripts/make-vault.sh" "$CANDLESTACK_TEST_VAULT_DIR"
else
  CANDLESTACK_TEST_VAULT_DIR="$(mktemp -d /tmp/candlestack-vault.XXXXXX)"
  trap 'rm -rf "$CANDLESTACK_TEST_VAULT_DIR"' EXIT
  "$ROOT/scripts/make-vault.sh" "$CANDLESTACK_TEST_VAULT_DIR"
fi
export CANDLESTACK_TEST_VAULT_DIR

run_scenario() {  # run_scenario NAME[@RELEASE]: one scenario in its own directory; returns molecule's status
  local scenario=${1%@*} dir name
  export CANDLESTACK_DEBIAN
  CANDLESTACK_DEBIAN=$(release_of "$1")
  if [[ $scenario == vagrant-lab ]]; then
    [[ $command == test ]] || { log "vagrant-lab runs only as a whole (MOLECULE_COMMAND=test)"; return 2; }
    log "=== $1: vagrant up, verify, provision again, destroy on Debian $CANDLESTACK_DEBIAN ==="
    "$ROOT/tests/ansible/vagrant-lab.sh"
    return
  fi
  if [[ -f "molecule/$scenario/molecule.yml" ]]; then
    dir="$ROOT"; name="$scenario"
  elif [[ -f "roles/$scenario/molecule/default/molecule.yml" ]]; then
    dir="$ROOT/roles/$scenario"; name=default
  else
    log "no scenario called $scenario"; return 2
  fi
  log "=== $1: molecule $command on Debian $CANDLESTACK_DEBIAN (in ${dir#"$ROOT"/}) ==="
  # The fault suite runs once, on the default release.
  if [[ $1 == all-in-one && $command == test && ${MOLECULE_FAULTS:-1} == 1 ]]; then
    run_with_faults "$dir" "$name"
  else
    (cd "$dir" && molecule "$command" --scenario-name "$name")
  fi
}

# The fault suite (tests/deployed), then the restore drill, drive the all-in-one host that the
# scenario converged and verified, before Molecule destroys it: no second deployment for them.
run_with_faults() {  # run_with_faults DIR NAME
  local dir=$1 name=$2 rc=0
  [[ -x $ROOT/.venv/bin/pytest ]] || {
    log "the fault suite needs $ROOT/.venv (python3 -m venv .venv && .venv/bin/pip install -e '.[dev]')"; return 2; }
  # `--destroy never` also skips the destroy that `test` begins with: do it here, so that a
  # container left by an interrupted run is not taken for this run's (its processes may be gone).
  (cd "$dir" && molecule destroy --scenario-name "$name") || true
  (cd "$dir" && molecule test --scenario-name "$name" --destroy never) || rc=$?
  if ((rc == 0)); then
    log "=== all-in-one: fault suite on the converged host ==="
    CANDLESTACK_DEPLOYED_HOST=molecule-aio "$ROOT/.venv/bin/pytest" "$ROOT/tests/deployed" -p no:cacheprovider \
      -rA -s --durations=0 2>&1 | tee "$CANDLESTACK_TEST_VAULT_DIR/faults.log"
    rc=${PIPESTATUS[0]}
  fi
  if ((rc == 0)); then
    log "=== all-in-one: restore drill (molecule/shared/restore-drill.yml) ==="
    (cd "$dir" && molecule side-effect --scenario-name "$name") 2>&1 | tee "$CANDLESTACK_TEST_VAULT_DIR/drill.log"
    rc=${PIPESTATUS[0]}
  fi
  (cd "$dir" && molecule destroy --scenario-name "$name") || true
  return "$rc"
}

run_lane() {  # run_lane SCENARIO...: one after the other, stop at the first failure (in either lane)
  local scenario start rc status
  for scenario in "$@"; do
    if [[ -e "$FAILED_MARKER" ]]; then
      log "=== $scenario: skipped, $(cat "$FAILED_MARKER") failed ==="
      printf '%-16s %-6s %4s\n' "$scenario" skipped - >>"$SUMMARY_FILE"
      continue
    fi
    start=$SECONDS
    if [[ -n "${LANE_LOG_DIR:-}" ]]; then
      run_scenario "$scenario" >"$LANE_LOG_DIR/$scenario.log" 2>&1 && rc=0 || rc=$?
    else
      run_scenario "$scenario" && rc=0 || rc=$?
    fi
    status=ok
    ((rc == 0)) || status="FAILED (rc $rc)"
    log "=== $scenario: $status after $((SECONDS - start)) s ==="
    printf '%-16s %-6s %4d s\n' "$scenario" "${status%% *}" $((SECONDS - start)) >>"$SUMMARY_FILE"
    if ((rc != 0)); then
      echo "$scenario" >"$FAILED_MARKER"
      if [[ -n "${LANE_LOG_DIR:-}" ]]; then
        log "--- last 200 lines of $scenario's log ($LANE_LOG_DIR/$scenario.log) ---"
        tail -n 200 "$LANE_LOG_DIR/$scenario.log"
      fi
      return "$rc"
    fi
  done
}

SUMMARY_FILE="$CANDLESTACK_TEST_VAULT_DIR/summary"
# Written by the first scenario that fails: the other lane then starts no new scenario (the one
# it is running finishes, so that Molecule still destroys its containers).
FAILED_MARKER="$CANDLESTACK_TEST_VAULT_DIR/failed"
: >"$SUMMARY_FILE"
rm -f "$FAILED_MARKER" "$CANDLESTACK_TEST_VAULT_DIR/faults.log" "$CANDLESTACK_TEST_VAULT_DIR/drill.log"
total_start=$SECONDS
rc=0
if [[ "${MOLECULE_LANES:-1}" == 2 && ${#scenarios[@]} -gt 1 ]]; then
  # Two lanes: all-in-one (with the fault suite and the restore drill), then all-in-one on
  # Debian 12, in one (both are the container molecule-aio: never at the same time); the role
  # scenarios, then the lab by Vagrant, in the other. Much of a scenario is waiting (podman
  # exec, downloads, services starting), so two lanes share 2 cores well.
  # Each scenario logs to its own file; a failure prints the end of that log.
  LANE_LOG_DIR="$(mktemp -d /tmp/candlestack-molecule-logs.XXXXXX)"
  export LANE_LOG_DIR
  log "two lanes; full logs in $LANE_LOG_DIR"
  declare -a heavy=() light=()
  for scenario in "${scenarios[@]}"; do
    case "$scenario" in all-in-one | all-in-one@* | cluster) heavy+=("$scenario") ;; *) light+=("$scenario") ;; esac
  done
  run_lane "${heavy[@]}" &
  heavy_pid=$!
  run_lane "${light[@]}" || rc=$?
  wait "$heavy_pid" || rc=$?
else
  run_lane "${scenarios[@]}" || rc=$?
fi
log "durations:"
sed 's/^/  /' "$SUMMARY_FILE"
if [[ -s "$CANDLESTACK_TEST_VAULT_DIR/faults.log" ]]; then
  log "fault suite (all-in-one):"
  sed -n '/^fault suite results/,$p' "$CANDLESTACK_TEST_VAULT_DIR/faults.log" | sed 's/^/  /'
fi
if [[ -s "$CANDLESTACK_TEST_VAULT_DIR/drill.log" ]]; then
  log "restore drill (all-in-one):"
  sed -n '/Report the drill/,/^$/p' "$CANDLESTACK_TEST_VAULT_DIR/drill.log" | sed 's/^/  /'
  # A failed drill: the task that failed and what it printed (the log's head scrolls away).
  grep -B 3 -A 25 -E '^(fatal|failed):' "$CANDLESTACK_TEST_VAULT_DIR/drill.log" | sed 's/^/  /' || true
fi
if ((rc != 0)); then
  log "a scenario failed (rc $rc) after $((SECONDS - total_start)) s"
  exit "$rc"
fi
log "all ${#scenarios[@]} scenario(s) passed in $((SECONDS - total_start)) s"
