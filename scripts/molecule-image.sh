#!/usr/bin/env bash
# Build the systemd-enabled Debian image the Molecule scenarios and `make up` run on:
# localhost/debian-<release>-systemd:latest, for the release in CANDLESTACK_DEBIAN
# (trixie, Debian 13, by default; bookworm for Debian 12).
#
#   scripts/molecule-image.sh [--force] [RELEASE...]   # several releases: one image each
#
# Idempotent: does nothing when the image already exists (pass --force to rebuild).
# Installs podman, runc and debootstrap when they are missing (needs root).
# python3-apt is in the image because the apt module needs it in check mode.
set -euo pipefail

MIRROR="${MOLECULE_IMAGE_MIRROR:-http://deb.debian.org/debian}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$HERE/containers.conf}"

log() { printf '[molecule-image] %s\n' "$*" >&2; }

force=false
[[ "${1:-}" == "--force" ]] && { force=true; shift; }
if (($# > 1)); then
  for release in "$@"; do "$0" $($force && echo --force) "$release"; done
  exit 0
fi
SUITE="${1:-${CANDLESTACK_DEBIAN:-trixie}}"
case "$SUITE" in
  bookworm | trixie) ;;
  *) log "unsupported release '$SUITE': bookworm (Debian 12) or trixie (Debian 13)"; exit 2 ;;
esac
IMAGE="localhost/debian-$SUITE-systemd:latest"

missing=()
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  log "installing missing packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends podman runc debootstrap
fi

if ! $force && podman image exists "$IMAGE"; then
  log "$IMAGE exists; nothing to do"
  exit 0
fi

rootfs="$(mktemp -d /var/tmp/molecule-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
start=$SECONDS
log "debootstrap $SUITE into $rootfs (about 80 s; progress below)"
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,python3,python3-apt,sudo,dbus,iproute2,ca-certificates \
  "$SUITE" "$rootfs" "$MIRROR" 2>&1 |
  while IFS= read -r line; do
    case "$line" in
      I:\ Retrieving* | I:\ Validating* | I:\ Extracting* | I:\ Unpacking* | I:\ Configuring*)
        # One line per package is too chatty: report every 25th.
        n=$((${n:-0} + 1))
        ((n % 25)) || log "... $n steps ($line)"
        ;;
      *) log "$line" ;;
    esac
  done
[[ -x "$rootfs/lib/systemd/systemd" ]] || { log "debootstrap failed"; exit 1; }

log "writing apt sources and an empty machine-id"
cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb http://deb.debian.org/debian $SUITE main
deb http://deb.debian.org/debian $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
SOURCES
: >"$rootfs/etc/machine-id"
# Keep package lists, as a fresh cloud VM has them: check mode cannot update them.
log "apt-get update inside the image"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf" 2>/dev/null || true
chroot "$rootfs" apt-get update -qq
rm -rf "$rootfs"/var/cache/apt/archives/*.deb

# Where egress goes through a TLS-intercepting proxy, the build host trusts extra CAs in
# /usr/local/share/ca-certificates: the test containers must trust them too (pip inside the
# containers reaches PyPI through it). pip is pointed at the system bundle.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  log "adding the build host's extra CA certificates to the image"
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >/dev/null
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
fi

log "importing into podman as $IMAGE"
tar -C "$rootfs" -c . |
  podman import \
    --change 'CMD ["/lib/systemd/systemd"]' \
    --change 'ENV container=podman' \
    --change 'STOPSIGNAL SIGRTMIN+3' \
    - "$IMAGE" >/dev/null
log "built $IMAGE in $((SECONDS - start)) s"
