# Thin verbs over docker compose, the local mode and the test suite. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
COMPOSE := docker compose
export GIT_COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

# OFFLINE=1: machines with no image registry (see infra/offline/README.md): local stand-in
# images and host networking on loopback.
ifeq ($(OFFLINE),1)
export COMPOSE_FILE := docker-compose.yml:infra/offline/compose.loopback.yml
endif

.PHONY: help env up down clean clean-data train ps logs predict simulate local test lint format \
        e2e bench offline-images lock venv

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

env: ## write .env with random secrets (once; keeps an existing one)
	@$(PYTHON) infra/stack.py env

up: env ## start the platform, train if no production model exists, wait until healthy
	@$(PYTHON) infra/stack.py preflight
	$(COMPOSE) up -d --build --remove-orphans
	@$(PYTHON) infra/stack.py wait --timeout $${UP_TIMEOUT:-1200}
	@echo "The platform is up:"; $(PYTHON) infra/stack.py urls

down: ## stop the platform, keep all data
	$(COMPOSE) down --remove-orphans

clean: ## stop the platform and remove local caches; data volumes are kept
	$(COMPOSE) down --remove-orphans 2>/dev/null || true
	rm -rf .local .pytest_cache .ruff_cache .mypy_cache
	@echo "data volumes kept; 'make clean-data CONFIRM=yes' deletes runs, models and artifacts"

clean-data: ## DELETE every run, model and artifact (needs CONFIRM=yes)
	@[ "$(CONFIRM)" = yes ] || { echo "error: this deletes all runs, models and artifacts; run 'make clean-data CONFIRM=yes'"; exit 1; }
	$(COMPOSE) down --volumes --remove-orphans

train: ## train again: make train ARGS="--n-rows 50000 --models rf"
	$(COMPOSE) run --rm trainer $(ARGS)

ps: ## service status
	$(COMPOSE) ps --all

logs: ## follow logs: make logs S=mlflow
	$(COMPOSE) logs -f --tail 100 $(S)

predict: ## curl both served models with an example request
	@for p in $${SERVING_LATENCY_PORT:-5001} $${SERVING_BANDWIDTH_PORT:-5002}; do \
	  curl -sS -H 'Content-Type: application/json' -d @docs/examples/predict-request.json http://localhost:$$p/invocations; echo; done

simulate: venv ## demo traffic with feedback through the gateway: make simulate [DRIFT=1] [ARGS="--rate 20"]
	$(VPY) -m services.simulate --drift $(or $(DRIFT),0) $(ARGS)

$(VENV)/.installed: requirements.lock requirements-dev.in pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements.lock -r requirements-dev.in
	$(VPY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed ## the Python environment for local mode and tests

local: venv ## run the platform as local processes, no Docker: make local ARGS="--n-rows 5000"
	$(VPY) -m services.local -- $(ARGS)

test: venv ## the test suite (real MLflow server, serving, Postgres, Prometheus)
	$(VPY) -m pytest $(PYTEST_ARGS)

lint: venv ## ruff + mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: venv ## apply ruff's formatting and fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: venv ## gateway overhead vs direct serving (needs wrk); writes docs/benchmarks.md
	$(VPY) -m tests.bench.bench_gateway $(ARGS)

offline-images: ## build local stand-ins for every image (machines with no registry)
	infra/offline/build-images.sh

e2e: venv ## the compose stack end to end on this machine (installs Docker if needed)
	infra/e2e.sh

lock: ## re-resolve requirements.lock from requirements.in
	$(PYTHON) infra/lock.py
