#!/usr/bin/env bash
# Generate a throwaway Ansible vault for tests and local demos:
#   scripts/make-vault.sh DIR   ->  DIR/vault.yml (encrypted) and DIR/vault-pass
# When DIR/vault.yml exists it keeps every value and adds only the secrets it lacks (a secret
# added to the project since, e.g. for `make up` on an older .work/). Never use these for a
# real deployment: see inventory/*/group_vars/all/vault.yml.example for the real procedure.
set -euo pipefail
dir="${1:?usage: make-vault.sh DIR}"
command -v ansible-vault >/dev/null || { echo "ansible-vault not on PATH" >&2; exit 1; }
passwords=(candlestack_owner_db candlestack_consumer_db candlestack_aggregator_db
  candlestack_retention_db candlestack_status_db candlestack_superset_db superset_metadata_db superset_admin
  kafka_admin kafka_producer kafka_consumer)
umask 077

current=""
if [[ -f "$dir/vault.yml" ]]; then
  current="$(ansible-vault view --vault-password-file "$dir/vault-pass" "$dir/vault.yml")"
else
  mkdir -p "$dir"
  openssl rand -base64 32 >"$dir/vault-pass"
  current="---"
fi

added=0
next="$current"
for key in "${passwords[@]}"; do
  grep -q "^vault_${key}_password:" <<<"$current" && continue
  next+=$'\n'"$(printf 'vault_%s_password: "%s"' "$key" "$(openssl rand -hex 16)")"
  added=$((added + 1))
done
if ! grep -q '^vault_superset_secret_key:' <<<"$current"; then
  next+=$'\n'"$(printf 'vault_superset_secret_key: "%s"' "$(openssl rand -base64 42 | tr -d '\n')")"
  added=$((added + 1))
fi
if ! grep -q '^vault_spark_auth_secret:' <<<"$current"; then
  next+=$'\n'"$(printf 'vault_spark_auth_secret: "%s"' "$(openssl rand -base64 32 | tr -d '\n')")"
  added=$((added + 1))
fi
if ! grep -q '^vault_pgbackrest_cipher_pass:' <<<"$current"; then
  next+=$'\n'"$(printf 'vault_pgbackrest_cipher_pass: "%s"' "$(openssl rand -base64 48 | tr -d '\n')")"
  added=$((added + 1))
fi
[[ $added -eq 0 ]] && exit 0
printf '%s\n' "$next" >"$dir/vault.yml.new"
ansible-vault encrypt --vault-password-file "$dir/vault-pass" "$dir/vault.yml.new" >/dev/null
mv "$dir/vault.yml.new" "$dir/vault.yml"
