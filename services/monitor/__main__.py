"""`python -m services.monitor`: serve /metrics, /alerts and /health on MONITOR_PORT (8001); compute
drift and live quality from the prediction log at MONITORING_DB_URI (when set)."""

from __future__ import annotations

import logging
import os
import sys

import uvicorn
from prometheus_client import disable_created_metrics

from contracts.logs import configure_logging, with_request_id
from contracts.settings import SettingsError
from services.monitor import Settings
from services.monitor.app import create_app


def main() -> int:
    configure_logging("monitor")
    try:
        settings = Settings()  # type: ignore[call-arg]
    except SettingsError as exc:
        print(f"monitor: error: {exc}", file=sys.stderr)
        return 1
    disable_created_metrics()  # no `*_created` series, as in the gateway
    # A refresh must fail within one interval when the tracking server is down, not after
    # MLflow's default retries (about 4 minutes). Explicit settings still win.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    logging.info(
        "monitoring %s (aliases %s) at %s every %g s; listening on %s:%d",
        ",".join(settings.models),
        ",".join(settings.aliases),
        settings.mlflow.tracking_uri,
        settings.refresh_s,
        settings.host,
        settings.port,
    )
    if settings.monitoring.db_uri:
        logging.info(
            "drift and live quality from the prediction log every %g s (drift: newest %d rows, at least "
            "%d, at most %d per request, %g s old at most; quality: newest %d feedback values)",
            settings.interval_s,
            settings.drift.window,
            settings.drift.min_rows,
            settings.drift.max_rows_per_request,
            settings.drift.max_age_s,
            settings.feedback.window,
        )
    else:
        logging.info("no MONITORING_DB_URI: no drift nor live quality")
    try:
        app = create_app(settings)
    except ValueError as exc:
        print(f"monitor: error: {exc}", file=sys.stderr)
        return 1
    uvicorn.run(
        with_request_id(app), host=settings.host, port=settings.port, access_log=False, log_config=None
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
