#!/usr/bin/env bash
# `make logs`: follow the journals of the `make up` deployment's units, or of one unit
# (make logs UNIT=candlestack-consumer). LINES= sets how many past lines to show first.
set -euo pipefail
# shellcheck source=scripts/aio-units.sh
source "$(dirname "${BASH_SOURCE[0]}")/aio-units.sh"
aio_require_running

args=()
if [[ -n "${UNIT:-}" ]]; then
  args+=(-u "$UNIT")
else
  for pattern in "${AIO_UNIT_PATTERNS[@]}"; do args+=(-u "$pattern"); done
fi
# A terminal: -it, so that Ctrl-C reaches journalctl through the container's terminal.
tty=()
[[ -t 0 && -t 1 ]] && tty=(-it)
# podman exec does not pass signals on: when this script ends otherwise (killed, its output
# closed, no terminal), stop the journalctl it started, known by the pid it wrote.
pidfile="/run/candlestack-logs.$$.$RANDOM.pid"
stop() {
  podman exec "$NAME" sh -c 'p="$(cat "$1" 2>/dev/null)"; rm -f "$1"
    [ -n "$p" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = journalctl ] && kill "$p"' sh "$pidfile" \
    >/dev/null 2>&1 || true
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

what="${UNIT:-every unit of the deployment}"
echo "following $what in $NAME (Ctrl-C to stop)" >&2
podman exec "${tty[@]}" "$NAME" sh -c 'echo $$ >"$1"; shift; exec journalctl "$@"' sh "$pidfile" \
  --no-pager -f -n "${LINES:-20}" "${args[@]}"
