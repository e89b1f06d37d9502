"""Model monitor: drift and live quality of the served versions from the prediction log, the
registry's training-time test metrics for Prometheus, and Alertmanager's webhook.

`GET /metrics` exports, for every model:
- drift (gateway_feature_drift_psi/ks, gateway_prediction_drift_psi, gateway_drifted_features_ratio,
  gateway_dataset_drift, gateway_drift_window_size) and live quality (gateway_live_mae/rmse/r2) of
  the version the gateways serve, computed every MONITOR_INTERVAL_S from the prediction log in
  Postgres, all gateway replicas at once (services/monitor/windows.py; the names predate the monitor
  and are kept for the dashboards and alert rules);
- `mlops_model_test_metric{model,alias,version,metric}` for the version behind each alias, read from
  the tracking server in the background.

`POST /alerts` receives Alertmanager's notifications with the platform's control token
(docs/monitoring.md, "Drift and live quality" and "Monitor metrics"; docs/operations.md, "Control
endpoints and secrets").
"""

from __future__ import annotations

from services.monitor.settings import DAY_S, Settings

__all__ = ["DAY_S", "Settings"]
