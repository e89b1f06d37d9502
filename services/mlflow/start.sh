#!/bin/sh
# Start the tracking server: migrate the schema first (the server itself only creates missing
# tables), then serve tracking + registry with proxied artifacts and Prometheus metrics.
#
# The backend store URI holds the Postgres password, so it never goes on a command line (where
# `ps` shows it to every user): `mlflow server` reads MLFLOW_BACKEND_STORE_URI and
# MLFLOW_ARTIFACTS_DESTINATION from the environment and hands them to its uvicorn workers the same
# way, and the migration gets the URI inside Python.
#
# The app: `platform` (services/mlflow/app.py) is MLflow's basic-auth app with a web UI that opens on
# model training in a browser's first visit.
# Authentication: MLflow's basic-auth app, its user store in its own database. The auth ini (with
# that database's URI) is written 0600 by services/mlflow/auth_config.py, which first refuses a
# missing or weak admin password or Flask secret key in one line; both stay in the environment.
set -eu
: "${MLFLOW_BACKEND_STORE_URI:?MLFLOW_BACKEND_STORE_URI is not set}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?MLFLOW_ARTIFACTS_DESTINATION is not set}"
export MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION

metrics_dir="${MLFLOW_PROMETHEUS_DIR:-/tmp/mlflow-metrics}"
rm -rf "$metrics_dir" && mkdir -p "$metrics_dir"   # stale multiprocess files would skew counters

auth_ini="${MLFLOW_AUTH_CONFIG_PATH:-/tmp/mlflow-auth/basic_auth.ini}"
python -m services.mlflow.auth_config "$auth_ini"
export MLFLOW_AUTH_CONFIG_PATH="$auth_ini"

echo "mlflow: migrating the backend store schema"
# `mlflow db upgrade URL` with the URL from the environment, around it Grafana's read-only views
# (dropped before, created after: a view would block a migration of its columns).
python -m services.mlflow.migrate

# The job runner starts 8 extra processes we do not use; keep the server laptop-sized.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
exec mlflow server \
  --app-name platform \
  --host "${MLFLOW_HOST:-0.0.0.0}" \
  --port "${MLFLOW_SERVER_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-2}" \
  --expose-prometheus "$metrics_dir" \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-localhost:*,127.0.0.1:*}"
