#!/usr/bin/env bash
# Generate a throwaway Ansible vault for tests and local demos:
#   scripts/make-vault.sh DIR   ->  DIR/vault.yml (encrypted) and DIR/vault-pass
# Does nothing when DIR/vault.yml exists. Never use these for a real deployment:
# see inventory/*/group_vars/all/vault.yml.example for the real procedure.
set -euo pipefail
dir="${1:?usage: make-vault.sh DIR}"
[[ -f "$dir/vault.yml" ]] && exit 0
command -v ansible-vault >/dev/null || { echo "ansible-vault not on PATH" >&2; exit 1; }
mkdir -p "$dir"
umask 077
openssl rand -base64 32 >"$dir/vault-pass"
{
  echo "---"
  for key in candlestack_owner_db candlestack_consumer_db candlestack_aggregator_db \
    candlestack_superset_db superset_metadata_db superset_admin; do
    printf 'vault_%s_password: "%s"\n' "$key" "$(openssl rand -hex 16)"
  done
  printf 'vault_superset_secret_key: "%s"\n' "$(openssl rand -base64 42 | tr -d '\n')"
} >"$dir/vault.yml"
ansible-vault encrypt --vault-password-file "$dir/vault-pass" "$dir/vault.yml" >/dev/null
