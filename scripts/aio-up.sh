#!/usr/bin/env bash
# `make up`: deploy the whole of candlestack (inventory/local) into one podman systemd
# container with the replay feed, publish Superset's HTTPS (nginx) on the host, and say where to look.
# The container runs Debian 13 (trixie); CANDLESTACK_DEBIAN=bookworm (make up DEBIAN=bookworm)
# runs Debian 12 instead.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/scripts/containers.conf}"
NAME="${AIO_NAME:-candlestack-aio}"
RELEASE="${CANDLESTACK_DEBIAN:-trixie}"
IMAGE="${AIO_IMAGE:-localhost/debian-$RELEASE-systemd:latest}"
PORT="${AIO_PORT:-8443}"
WORK="$ROOT/.work/aio"
CACHE="${MOLECULE_CACHE_DIR:-/var/cache/candlestack-molecule}"
log() { printf '[make up] %s\n' "$*"; }

export PATH="$("$ROOT/scripts/ansible-venv.sh"):$PATH"
mkdir -p "$WORK" "$CACHE/apt/$RELEASE/aio/partial"
"$ROOT/scripts/molecule-image.sh" "$RELEASE"
# Python wheels (Superset, pyspark...) built once on this machine and mounted read-only.
"$ROOT/scripts/wheelhouse.sh"

# A throwaway vault for this local deployment (kept in .work/, ignored by git).
"$ROOT/scripts/make-vault.sh" "$WORK"

if podman container exists "$NAME"; then
  running_image="$(podman container inspect --format '{{.ImageName}}' "$NAME")"
  if [[ "$running_image" != "$IMAGE" ]]; then
    log "$NAME runs $running_image, not $IMAGE: run 'make down' first to switch releases"
    exit 2
  fi
else
  log "starting container $NAME from $IMAGE (Superset over HTTPS published on 127.0.0.1:$PORT)"
  # CAP_SYS_ADMIN: systemd 257 (Debian 13) keeps it across User= to sandbox the hardened units.
  # CAP_NET_ADMIN: roles/firewall loads its nftables table in the container's network namespace.
  podman run -d --name "$NAME" --hostname "$NAME" --systemd=always --cap-add SYS_ADMIN --cap-add NET_ADMIN \
    --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 \
    -p "127.0.0.1:$PORT:443" \
    -v "$CACHE/apt/$RELEASE/aio:/var/cache/apt/archives" \
    -v "$CACHE/wheels:/var/cache/candlestack-wheels:ro" -v "$CACHE/pip.conf:/etc/pip.conf:ro" \
    "$IMAGE" /lib/systemd/systemd >/dev/null
fi

log "deploying site.yml into $NAME (first run: several minutes)"
start=$SECONDS
# The connection the Molecule scenarios use, with pipelining: one nsenter (as root) or one
# `podman exec` (otherwise) per task.
# -c, not -e ansible_connection: an extra var would also apply to the tasks delegated to the
# controller (the wheel build) and send them into a container called "localhost".
# nginx on every address of the container: podman forwards the published port to the
# container's own address, not to its loopback (inventory/local's private_address). Superset
# itself stays on loopback behind it. HSTS for an hour, not a year: a browser applies it to
# the name localhost on every port, other local web servers included.
ANSIBLE_CONNECTION_PLUGINS="$ROOT/scripts/connection_plugins" ANSIBLE_PIPELINING=true \
ansible-playbook -i inventory/local site.yml -c candlestack_podman \
  -e "@$WORK/vault.yml" --vault-password-file "$WORK/vault-pass" \
  -e '{"nginx_listen_addresses": ["0.0.0.0"], "nginx_hsts": "max-age=3600"}'
log "deployed in $((SECONDS - start)) s"

log "waiting for the first candles (replay feed -> producer -> Kafka -> consumer -> PostgreSQL -> Spark)"
count_sql="SELECT (SELECT count(*) FROM trades) || ' trades, ' || (SELECT count(*) FROM candles) || ' candles'"
for _ in $(seq 60); do
  counts="$(podman exec "$NAME" runuser -u postgres -- psql -d candlestack -Atc "$count_sql" 2>/dev/null || true)"
  log "  ${counts:-database not answering yet}"
  [[ "$counts" =~ ,\ [1-9][0-9]*\ candles ]] && break
  sleep 5
done

# What the browser will do: HTTPS through the published port, the certificate checked against
# the deployment's CA under the name localhost.
if command -v curl >/dev/null; then
  if curl -fsS -o /dev/null --cacert "$ROOT/inventory/local/.pki/ca.crt" "https://localhost:$PORT/health"; then
    log "Superset answers on https://localhost:$PORT/ (certificate checked against inventory/local/.pki/ca.crt)"
  else
    log "WARNING: https://localhost:$PORT/health did not answer (see: podman exec $NAME systemctl status nginx superset)"
  fi
fi

admin_pw="$(ansible-vault view --vault-password-file "$WORK/vault-pass" "$WORK/vault.yml" |
  sed -n 's/^vault_superset_admin_password: "\(.*\)"$/\1/p')"
cat <<INFO

  Superset:   https://localhost:$PORT/   user: admin   password: $admin_pw
              The certificate is signed by this deployment's own CA: $ROOT/inventory/local/.pki/ca.crt
              (import it into the browser's authorities, or accept the warning once). A browser
              that trusts it keeps to https for localhost, every port, for an hour (HSTS).
  Status:     make status   (pipeline, units, timers; exit 1 when something needs attention)
  Services:   podman exec $NAME systemctl status 'candlestack-*' tansu spark-master spark-worker 'postgresql@*'
  Logs:       make logs     (make logs UNIT=candlestack-consumer for one unit)
  Candles:    podman exec $NAME runuser -u postgres -- psql -d candlestack -c "SELECT symbol, timeframe, open_time, open, high, low, close, volume FROM candles ORDER BY open_time DESC LIMIT 10"
  Secrets:    $WORK/vault.yml (ansible-vault view --vault-password-file $WORK/vault-pass $WORK/vault.yml)
  Remove:     make down

INFO
