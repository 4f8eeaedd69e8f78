# candlestack deployment shortcuts. Everything runs as root on a Debian host with podman.
#   make up      all-in-one deployment in one podman systemd container (replay feed, Superset on https://localhost:8443)
#                on Debian 13; `make up DEBIAN=bookworm` for Debian 12
#   make status  on that container: per-symbol freshness, gaps, dead letters, every unit the
#                deployment manages (failed ones marked !!) and the timers' next runs; fails
#                when something needs attention or the container is not running
#                (scripts/aio-status.sh by itself exits 1 and 2 for these)
#   make logs    follow the journals of the deployment's units; `make logs UNIT=candlestack-consumer`
#                for one (LINES=100 for more history)
#   make down    remove that container
#   make test    the CI entry point (bash .ci/run)
#   make lint    ansible-lint (production profile) + yamllint
#   make molecule [SCENARIOS="kafka spark"]   Molecule scenarios (tests/ansible/run-molecule.sh)

SHELL := /bin/bash
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
export CONTAINERS_CONF ?= $(ROOT)/scripts/containers.conf
AIO_NAME ?= candlestack-aio
# The container's Debian release: trixie (13) or bookworm (12).
DEBIAN ?= trixie
export CANDLESTACK_DEBIAN := $(DEBIAN)
AIO_PORT ?= 8443
WORK := $(ROOT)/.work/aio
VENV_BIN = $(shell $(ROOT)/scripts/ansible-venv.sh)

.PHONY: up down status logs test lint molecule image venv

image:
	@$(ROOT)/scripts/molecule-image.sh

venv:
	@$(ROOT)/scripts/ansible-venv.sh >/dev/null

up: image venv
	@$(ROOT)/scripts/aio-up.sh

status:
	@AIO_NAME=$(AIO_NAME) $(ROOT)/scripts/aio-status.sh

logs:
	@AIO_NAME=$(AIO_NAME) $(ROOT)/scripts/aio-logs.sh

down:
	@podman rm -f $(AIO_NAME) >/dev/null 2>&1 && echo "removed $(AIO_NAME)" || echo "$(AIO_NAME) is not running"

test:
	bash .ci/run

lint: venv
	cd $(ROOT) && PATH="$(VENV_BIN):$$PATH" ansible-lint --profile production --offline
	cd $(ROOT) && PATH="$(VENV_BIN):$$PATH" yamllint --strict .

molecule:
	$(ROOT)/tests/ansible/run-molecule.sh $(SCENARIOS)
