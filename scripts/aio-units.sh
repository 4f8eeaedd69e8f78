# shellcheck shell=bash
# Sourced by aio-status.sh and aio-logs.sh: the container's name and the globs of the systemd
# units the deployment manages (the pipeline, Kafka/Tansu, Spark, Superset and its nginx, PostgreSQL, the
# Prometheus stack and its exporters, the pgBackRest timers).
NAME="${AIO_NAME:-candlestack-aio}"
# shellcheck disable=SC2034  # used by the scripts that source this file
AIO_UNIT_PATTERNS=(
  'candlestack-*' 'tansu.*' 'kafka.*' 'spark-*' 'superset.*' 'nginx.*' 'postgresql*'
  'prometheus*' 'pgbackrest*'
)

# Exit 2 with a message when the container is not running.
aio_require_running() {
  if [[ "$(podman container inspect --format '{{.State.Running}}' "$NAME" 2>/dev/null)" != true ]]; then
    echo "$NAME is not running: start it with 'make up'" >&2
    exit 2
  fi
}
