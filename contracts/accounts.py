"""Names of the platform's MLflow accounts that more than one service relies on.

Standard library only: services/access provisions the accounts with the host's python3.
"""

# The account Prometheus scrapes MLflow's /metrics with (prometheus/prometheus.yml): the only
# non-admin the tracking server lets through there (services/mlflow/app.py). services/access
# provisions it with no grant.
METRICS_SCRAPER = "prometheus"
