#!/bin/sh
# Start the tracking server: migrate the schema first (the server itself only creates missing
# tables), then serve tracking + registry with proxied artifacts and Prometheus metrics.
set -eu
: "${MLFLOW_BACKEND_STORE_URI:?MLFLOW_BACKEND_STORE_URI is not set}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?MLFLOW_ARTIFACTS_DESTINATION is not set}"

metrics_dir="${MLFLOW_PROMETHEUS_DIR:-/tmp/mlflow-metrics}"
rm -rf "$metrics_dir" && mkdir -p "$metrics_dir"   # stale multiprocess files would skew counters

echo "mlflow: migrating the backend store schema"
mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"

# The job runner starts 8 extra processes we do not use; keep the server laptop-sized.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
exec mlflow server \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
  --host "${MLFLOW_HOST:-0.0.0.0}" \
  --port "${MLFLOW_SERVER_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-2}" \
  --expose-prometheus "$metrics_dir" \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-localhost:*,127.0.0.1:*}"
