#!/usr/bin/env bash
# The three-host lab (inventory/lab) brought up by Vagrant itself, without VMs: Vagrant's docker
# provider with podman standing in for Docker runs systemd containers of the Molecule image on
# the lab's network and addresses, and Vagrant's ansible provisioner converges them with
# site.yml (see the Vagrantfile and README, "Vagrant without a VM"). Then:
#   verify       molecule/shared/verify.yml (the checks of Molecule's cluster scenario) against
#                the inventory Vagrant generated, with the lab's group_vars
#   outsider     molecule/shared/outsider.yml: a container without credentials on the lab's
#                network finds every port closed but Superset's https (and its redirect)
#   idempotence  `vagrant provision` again: every host must report changed=0
#   destroy      `vagrant destroy -f` (also on failure, unless VAGRANT_LAB_KEEP=1)
# and prints each step's duration.
#
#   tests/ansible/vagrant-lab.sh
#   VAGRANT_LAB_KEEP=1 tests/ansible/vagrant-lab.sh     # leave the containers up (vagrant destroy -f later)
#
# The containers are vagrant-lab-data, vagrant-lab-compute-1 and vagrant-lab-compute-2 on
# candlestack-lab (192.168.57.0/24): the addresses of Molecule's cluster scenario, so the two
# cannot run at the same time (the script stops when another container holds one of them).
# Needs vagrant (Debian's package), podman and runc; builds the image, the Ansible venv and the
# wheelhouse like tests/ansible/run-molecule.sh when they are missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/scripts/containers.conf}"
export MOLECULE_CACHE_DIR="${MOLECULE_CACHE_DIR:-/var/cache/candlestack-molecule}"
export CANDLESTACK_DEBIAN="${CANDLESTACK_DEBIAN:-trixie}"
export CANDLESTACK_INVENTORY=inventory/lab CANDLESTACK_VAGRANT_PROVIDER=docker
export PY_COLORS=0 ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
# ansible-playbook run by Vagrant inherits these: converge time and the slowest tasks.
export ANSIBLE_CALLBACKS_ENABLED=ansible.posix.timer,ansible.posix.profile_tasks
export ANSIBLE_CONNECTION_PLUGINS="$ROOT/scripts/connection_plugins" ANSIBLE_PIPELINING=true
prefix="${CANDLESTACK_VAGRANT_PREFIX:-vagrant-}"

log() { printf '[vagrant-lab] %s\n' "$*"; }
command -v vagrant >/dev/null || { log "vagrant is not installed (apt-get install -y --no-install-recommends vagrant)"; exit 2; }

"$ROOT/scripts/molecule-image.sh" "$CANDLESTACK_DEBIAN"
VENV_BIN="$("$ROOT/scripts/ansible-venv.sh")"
export PATH="$VENV_BIN:$PATH"
"$ROOT/scripts/wheelhouse.sh"

# The lab's addresses must be free: another container on them (Molecule's cluster scenario)
# would make podman refuse ours, or worse, answer the checks in their place.
busy=$(podman ps -a --filter network=candlestack-lab --format '{{.Names}}' 2>/dev/null | grep -v "^${prefix}" || true)
if [[ -n $busy ]]; then
  log "candlestack-lab is in use by: $(echo "$busy" | tr '\n' ' ')(molecule/cluster?): stop it first"
  exit 2
fi

work="$(mktemp -d /tmp/candlestack-vagrant-lab.XXXXXX)"
export CANDLESTACK_VAULT_FILE="$work/vault.yml" CANDLESTACK_VAULT_PASSWORD_FILE="$work/vault-pass"
"$ROOT/scripts/make-vault.sh" "$work"

declare -a durations=()
step() {  # step NAME COMMAND...: run, time and record one step
  local name=$1 start=$SECONDS rc=0
  shift
  log "=== $name ==="
  "$@" || rc=$?
  durations+=("$(printf '%-12s %5d s  %s' "$name" $((SECONDS - start)) "$( ((rc == 0)) && echo ok || echo "FAILED (rc $rc)")")")
  return "$rc"
}

finish() {
  local rc=$?
  trap - EXIT
  if [[ ${VAGRANT_LAB_KEEP:-0} == 1 ]]; then
    log "containers kept (VAGRANT_LAB_KEEP=1): vagrant destroy -f removes them; vault in $work"
  else
    step destroy vagrant destroy -f || rc=1
    rm -rf "$work"
  fi
  log "durations:"
  printf '  %s\n' "${durations[@]}"
  ((rc == 0)) && log "the lab came up with Vagrant, passed verify and re-provisioned with no change" ||
    log "FAILED (rc $rc)"
  exit "$rc"
}
trap finish EXIT

# Leftovers of an earlier run of this script (only this project's machines).
vagrant destroy -f >/dev/null 2>&1 || true

verify() {
  # The inventory Vagrant generated (hosts, groups, podman connection) and the lab's own
  # (group_vars), as the provisioner passes them.
  ansible-playbook -i .vagrant/provisioners/ansible/inventory -i "$CANDLESTACK_INVENTORY" \
    -e "@$CANDLESTACK_VAULT_FILE" --vault-password-file "$CANDLESTACK_VAULT_PASSWORD_FILE" \
    molecule/shared/verify.yml
}

outsider() {
  # A container with no credentials on the lab's network: every port but nginx's is closed to it.
  ansible-playbook -i .vagrant/provisioners/ansible/inventory -i "$CANDLESTACK_INVENTORY" \
    -e "@$CANDLESTACK_VAULT_FILE" --vault-password-file "$CANDLESTACK_VAULT_PASSWORD_FILE" \
    molecule/shared/outsider.yml
}

idempotence() {
  local out="$work/provision-again.log" changed recaps
  vagrant provision 2>&1 | tee "$out"
  ((PIPESTATUS[0] == 0)) || return 1
  changed=$(grep -Eo '^[a-z0-9-]+ +: ok=[0-9]+ +changed=[0-9]+' "$out" | awk -F'changed=' '{n += $2} END {print n + 0}')
  recaps=$(grep -cE '^[a-z0-9-]+ +: ok=[0-9]+' "$out" || true)
  log "second provision: changed=$changed on $recaps hosts"
  # No recap at all would read as changed=0: the lab has three hosts.
  ((recaps == 3)) || return 1
  ((changed == 0)) || { grep -B1 -E '^changed:' "$out" | tail -n 40; return 1; }
}

step up vagrant up --provider=docker
step verify verify
step outsider outsider
step idempotence idempotence
