#!/usr/bin/env bash
# `make status`: the health of the `make up` deployment, from the host.
#   1. the pipeline: per-symbol freshness, gaps, dead letters (the host's candlestack-status)
#   2. every systemd unit the deployment manages, failed or stopped ones marked with "!!"
#   3. the timers and their next runs
# Exit codes: 0 all well, 1 something needs attention, 2 the container is not running.
set -uo pipefail

# A timer-driven oneshot service (TriggeredBy= a timer) may be inactive between runs; any other
# service and every timer must be active.
# shellcheck source=scripts/aio-units.sh
source "$(dirname "${BASH_SOURCE[0]}")/aio-units.sh"
aio_require_running
in_aio() { podman exec "$NAME" "$@"; }

attention=()

echo "== Pipeline (candlestack-status in $NAME)"
in_aio candlestack-status
rc=$?
case $rc in
  0) ;;
  1) attention+=("pipeline: candlestack-status says it needs attention") ;;
  69) attention+=("pipeline: candlestack-status cannot reach the database (exit 69)") ;;
  127) attention+=("pipeline: candlestack-status is not installed in $NAME (exit 127)") ;;
  *) attention+=("pipeline: candlestack-status failed (exit $rc: see /usr/local/bin/candlestack-status in $NAME)") ;;
esac

echo
echo "== Units"
mapfile -t units < <(in_aio systemctl list-units --all --plain --no-legend --type=service,timer \
  "${AIO_UNIT_PATTERNS[@]}" | awk '{print $1}' | sort)
if ((${#units[@]} == 0)); then
  attention+=("units: none of the deployment's units is loaded (was 'make up' completed?)")
else
  # One unit per line: Id|LoadState|ActiveState|SubState|UnitFileState|TriggeredBy
  # (systemctl show prints properties in its own order, so pick them by name).
  show="$(in_aio systemctl show --property=Id,LoadState,ActiveState,SubState,UnitFileState,TriggeredBy \
    -- "${units[@]}")"
  table="$(awk -F= '
    function flush() { if (id != "") print id "|" p["LoadState"] "|" p["ActiveState"] "|" p["SubState"] "|" p["UnitFileState"] "|" p["TriggeredBy"]; id = ""; delete p }
    /^$/ { flush(); next }
    $1 == "Id" { id = $2; next }
    { key = $1; sub(/^[^=]*=/, ""); p[key] = $0 }
    END { flush() }' <<<"$show")"
  printf '   %-40s %-10s %-16s %s\n' UNIT ACTIVE SUB ENABLED
  while IFS='|' read -r id load active sub enabled triggered_by; do
    problem=""
    if [[ "$load" != loaded ]]; then
      problem="not loaded ($load)"
    elif [[ "$active" == failed ]]; then
      problem="FAILED"
    elif [[ "$id" == *.service && -n "$triggered_by" ]]; then
      : # a timer's oneshot: inactive between runs is fine, only a failed run counts
    elif [[ "$active" != active ]]; then
      problem="not active"
    elif [[ "$enabled" == disabled ]]; then
      problem="not enabled: will not start at boot"
    fi
    mark="  "
    if [[ -n "$problem" ]]; then
      mark="!!"
      attention+=("unit $id: $problem")
    fi
    printf '%s %-40s %-10s %-16s %s%s\n' "$mark" "$id" "$active" "$sub" "${enabled:--}" \
      "${triggered_by:+ (run by $triggered_by)}"
  done <<<"$table"
fi

# Failed units outside the globs above: shown, for the record, but not judged.
mapfile -t others < <(in_aio systemctl list-units --state=failed --plain --no-legend | awk '{print $1}' |
  grep -vxF -f <(printf '%s\n' "${units[@]:-}") || true)
if ((${#others[@]} > 0)); then
  echo "   other failed units in $NAME (not the deployment's): ${others[*]}"
fi

echo
echo "== Timers"
in_aio systemctl list-timers --all --no-pager "${AIO_UNIT_PATTERNS[@]}" || attention+=("timers: systemctl list-timers failed")

echo
if ((${#attention[@]} == 0)); then
  echo "OK: the pipeline is healthy and every unit is as it should be."
  exit 0
fi
echo "NEEDS ATTENTION:"
printf '  - %s\n' "${attention[@]}"
echo "  (journals: make logs UNIT=<unit>)"
exit 1
