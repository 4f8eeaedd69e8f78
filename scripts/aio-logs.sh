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
# A terminal: -it, so that Ctrl-C reaches journalctl instead of leaving it behind in the container.
tty=()
[[ -t 0 && -t 1 ]] && tty=(-it)
echo "following ${UNIT:-the deployment's units} in $NAME (Ctrl-C to stop)" >&2
exec podman exec "${tty[@]}" "$NAME" journalctl --no-pager -f -n "${LINES:-20}" "${args[@]}"
