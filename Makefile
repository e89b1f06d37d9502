# Thin verbs over docker compose, the local mode and the test suite. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
COMPOSE := docker compose
# The stack's settings: .env, or the file MLOPS_ENV_FILE names (make e2e's own).
ENV_FILE := $(or $(MLOPS_ENV_FILE),.env)
export GIT_COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

# Which compose files: `make up` finds out whether images can be pulled and writes COMPOSE_FILE
# into .env, where every docker compose command reads it. OFFLINE=1 forces local stand-in images
# and host networking on loopback (infra/offline/README.md), OFFLINE=0 the registries.
ifeq ($(OFFLINE),1)
export COMPOSE_FILE := docker-compose.yml:infra/offline/compose.loopback.yml
else ifeq ($(OFFLINE),0)
export COMPOSE_FILE := docker-compose.yml
endif
export OFFLINE

.PHONY: help env up down clean clean-data train retrain rollback pipeline-train pipeline-promote ps logs \
        predict simulate report local participant participant-remove gateway-key gateway-key-remove test test-tools env-example chart-sync lint format e2e bench offline-images lock venv \
        backup restore verify-backup upgrade

help: ## list the targets
	@grep -E '^[a-z0-9][a-z0-9-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

env: ## write .env with random secrets (once; keeps an existing one)
	@$(PYTHON) infra/stack.py env

up: env ## start the platform (stand-in images when none can be pulled), train once, wait until healthy
	@$(PYTHON) infra/stack.py preflight
	$(COMPOSE) build
	TRAINER_IMAGE_DIGEST=$$($(PYTHON) infra/stack.py digest trainer) $(COMPOSE) up -d --no-build --remove-orphans
	@$(PYTHON) infra/stack.py wait --timeout $${UP_TIMEOUT:-1200}
	@$(PYTHON) -m services.access --env-file $(ENV_FILE) roster participants.txt
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

# Backups (docs/operations.md): the one-shot `backup` service (profile tools) runs services/backup.
# The services that write to the databases or the bucket: stopped for a restore or a migration.
WRITERS = $(shell $(PYTHON) infra/stack.py writers)
# `run --pull never`: the images are built already (make up, the build below); without it `run`
# rebuilds every service with `pull_policy: build` it starts. Compose 5.6's `run` has no --no-build.
BACKUP_RUN = $(COMPOSE) run --rm --pull never backup

backup: ## back up every database and the bucket into backups/ (safe while the platform runs)
	@$(PYTHON) infra/stack.py backup-dir
	$(BACKUP_RUN) backup

verify-backup: ## check an archive's checksums, touching nothing: make verify-backup FROM=backups/mlops-<time>.tar
	@[ -n "$(FROM)" ] || { echo "error: name the archive: make verify-backup FROM=backups/mlops-<time>.tar"; exit 1; }
	@$(PYTHON) infra/stack.py backup-dir "$(FROM)"
	$(BACKUP_RUN) verify "backups/$(notdir $(FROM))"

restore: ## restore an archive into an empty platform: make restore FROM=backups/mlops-<time>.tar [FORCE=1]
	@[ -n "$(FROM)" ] || { echo "error: name the archive: make restore FROM=backups/mlops-<time>.tar"; exit 1; }
	@$(PYTHON) infra/stack.py backup-dir "$(FROM)"
	$(BACKUP_RUN) restore --check "backups/$(notdir $(FROM))" $(if $(filter 1 yes,$(FORCE)),--force)
	$(COMPOSE) stop $(WRITERS)
	$(BACKUP_RUN) restore "backups/$(notdir $(FROM))" $(if $(filter 1 yes,$(FORCE)),--force) \
	  || { echo "error: restore failed; the writers stay stopped ('make up' starts them)"; exit 1; }
	@$(MAKE) --no-print-directory up

upgrade: env ## new images, then with the writers stopped: a backup, MLflow's and the prediction log's migrations, start
	@$(PYTHON) infra/stack.py backup-dir
	$(COMPOSE) build
	$(COMPOSE) stop $(WRITERS)
	$(BACKUP_RUN) backup || { echo "error: no backup, no migration; 'make up' starts the writers again"; exit 1; }
	$(BACKUP_RUN) upgrade || { echo "error: migration failed; restore the backup above (docs/operations.md)"; exit 1; }
	@$(MAKE) --no-print-directory up

train: ## train again: make train [NAME=alice] ARGS="--n-rows 50000 --models rf" (NAME: as that participant)
	$(COMPOSE) build trainer
	@if [ -n "$(NAME)" ]; then [ -f .participants/$(NAME).env ] || { echo "error: no .participants/$(NAME).env: make participant NAME=$(NAME)"; exit 1; }; fi
	$(if $(NAME),set -a; . .participants/$(NAME).env; set +a; unset MLFLOW_TRACKING_URI;) \
	TRAINER_IMAGE_DIGEST=$$($(PYTHON) infra/stack.py digest trainer) $(COMPOSE) run --rm --pull never trainer $(ARGS)

participant: ## add a participant (login shown once, kept 0600 in .participants/NAME.env): make participant NAME=alice
	@[ -n "$(NAME)" ] || { echo "error: name the participant: make participant NAME=alice"; exit 1; }
	$(PYTHON) -m services.access --env-file $(ENV_FILE) add $(NAME)

participant-remove: ## revoke a participant (their logins get 401): make participant-remove NAME=alice
	@[ -n "$(NAME)" ] || { echo "error: name the participant: make participant-remove NAME=alice"; exit 1; }
	$(PYTHON) -m services.access --env-file $(ENV_FILE) remove $(NAME)

gateway-key: ## a gateway API key for a client, shown once (no restart): make gateway-key NAME=dashboard
	@[ -n "$(NAME)" ] || { echo "error: name the client: make gateway-key NAME=dashboard"; exit 1; }
	@$(PYTHON) infra/stack.py gateway-key $(NAME)

gateway-key-remove: ## revoke a client's gateway API key (no restart): make gateway-key-remove NAME=dashboard
	@[ -n "$(NAME)" ] || { echo "error: name the client: make gateway-key-remove NAME=dashboard"; exit 1; }
	@$(PYTHON) infra/stack.py gateway-key --remove $(NAME)

retrain: ## retrain now through the closed loop: make retrain [MODEL=latency-predictor] [CANDIDATES=random-forest]
	$(COMPOSE) exec -T orchestrator python -m services.orchestrator retrain $(MODEL) \
	  $(if $(CANDIDATES),--candidates $(CANDIDATES))

rollback: ## production back to the version it replaced: make rollback MODEL=latency-predictor
	@[ -n "$(MODEL)" ] || { echo "error: name the model: make rollback MODEL=latency-predictor"; exit 1; }
	$(COMPOSE) exec -T orchestrator python -m services.orchestrator rollback $(MODEL)

PIPELINE_DIR ?= .pipeline

pipeline-train: venv ## CI pipeline: train, evaluate, gate, register; production awaits approval
	@mkdir -p $(PIPELINE_DIR)
	$(VPY) -m trainer --no-promote --decisions-file $(PIPELINE_DIR)/decisions.json $(ARGS)

pipeline-promote: venv ## CI pipeline, after approval: production for the versions that passed the gate
	$(VPY) -m trainer --promote-approved $(PIPELINE_DIR)/decisions.json

ps: ## service status
	$(COMPOSE) ps --all

logs: ## follow logs: make logs S=mlflow
	$(COMPOSE) logs -f --tail 100 $(S)

predict: ## curl both models through the gateway with an example request
	@for m in latency-predictor bandwidth-efficiency-predictor; do curl -sS -H 'Content-Type: application/json' \
	  -d @docs/examples/predict-request.json http://localhost:$${GATEWAY_PORT:-8000}/models/$$m/invocations; echo; done

simulate: venv ## demo traffic with feedback through the gateway: make simulate [DRIFT=1] [BUSY=0.5] [ARGS="--rate 20"]
	$(VPY) -m services.simulate --drift $(or $(DRIFT),0) --busy-links $(or $(BUSY),0) $(ARGS)

REPORTS_DIR ?= reports

# As NAME's login (their own experiment's runs), else as the trainer account (.env); the stack's
# host ports from .env. The report page's link goes into the session run's description.
report: venv ## HTML reports, logged on their session runs: make report [NAME=alice] [SESSION=<run id>] [WINDOW=1h]
	@if [ -n "$(NAME)" ]; then [ -f .participants/$(NAME).env ] || { echo "error: no .participants/$(NAME).env: make participant NAME=$(NAME)"; exit 1; }; fi
	@if [ -f $(ENV_FILE) ]; then set -a; . "$(abspath $(ENV_FILE))"; set +a; \
	  export MLFLOW_TRACKING_USERNAME=trainer MLFLOW_TRACKING_PASSWORD="$$MLFLOW_TRAINER_PASSWORD"; fi; \
	$(if $(NAME),set -a; . .participants/$(NAME).env; set +a;) \
	export MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-http://localhost:$${MLFLOW_PORT:-5000}}" \
	  PROMETHEUS_URL="$${PROMETHEUS_URL:-http://localhost:$${PROMETHEUS_PORT:-9090}}" \
	  REPORTS_PUBLIC_URL="$${REPORTS_PUBLIC_URL:-http://localhost:$${REPORTS_PORT:-8003}}"; \
	$(VPY) -m services.reports build --out $(REPORTS_DIR) $(if $(WINDOW),--window $(WINDOW)) \
	  $(if $(SESSION),--session $(SESSION),$(if $(NAME),--experiment $(NAME)))

$(VENV)/.installed: requirements.lock requirements-dev.in pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(VPY) -m pip install --quiet -r requirements.lock -r requirements-dev.in
	$(VPY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed ## the Python environment for local mode and tests

local: venv ## run the platform as local processes, no Docker: make local ARGS="--n-rows 5000"
	$(VPY) -m services.local -- $(ARGS)

# The suite's own temporary folder. Its PostgreSQL clusters run as the postgres user inside it, so
# its parents must stay traversable; any other pytest starting meanwhile (make e2e's checks) would
# reset /tmp/pytest-of-root to 0700, and the clusters then stop with "Permission denied".
TEST_TMP ?= /tmp/mlops-test
test: venv test-tools ## the test suite (real MLflow server, serving, Postgres, Prometheus)
	$(VPY) -m pytest --basetemp=$(TEST_TMP) $(PYTEST_ARGS)

test-tools: ## the programs the tests drive: PostgreSQL, Prometheus, Alertmanager, HAProxy, Chromium (apt-get when missing), the chart's tools
	@infra/test-tools.sh
	@infra/chart-tools.sh

env-example: venv ## regenerate .env.example from the settings classes (make env writes .env from it)
	$(VPY) infra/env_example.py

chart-sync: ## copy the model list, dashboards and alert rules into the Helm chart (charts/mlops-platform/files)
	@$(PYTHON) infra/chart.py sync

lint: venv ## ruff + mypy + bandit + actionlint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/bandit -q -c pyproject.toml -r services contracts trainer infra
	$(VENV)/bin/actionlint .github/workflows/*.yml

format: venv ## apply ruff's formatting and fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: venv ## gateway overhead vs direct serving (needs wrk); writes docs/benchmarks.md
	$(VPY) -m tests.bench.bench_gateway $(ARGS)

offline-images: ## build local stand-ins for every third-party image (make up does it when needed)
	infra/offline/build-images.sh

e2e: venv ## the compose stack end to end on this machine (installs Docker if needed)
	infra/e2e.sh

lock: ## re-resolve requirements.lock from requirements.in
	$(PYTHON) infra/lock.py
