"""The prediction gateway: one front door for every served model.

It validates requests against the production version's signature, forwards them to the serving
containers (MLflow scoring protocol), measures what goes through (Prometheus metrics) and appends
every prediction, and every feedback value it matches there, to the prediction log in Postgres.
Everything but the forwarding itself happens off the request path. It keeps no state another
replica would need: run as many as the load asks for (docs/serving.md, "Gateway replicas"); drift
and live quality are the monitor's, from the log. Metric names are the contract in docs/monitoring.md.
"""

from __future__ import annotations

import sys

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import SettingsConfigDict

from contracts.guard import GuardSettings
from contracts.models import DEFAULT_UPSTREAMS, PRODUCTION, parse_upstreams
from contracts.settings import settings_problems


class Settings(GuardSettings):
    """Every gateway setting, from the environment (names as in docker-compose.yml); the Host names
    it answers to besides its own are EXTRA_ALLOWED_HOSTS (contracts/guard.py)."""

    model_config = SettingsConfigDict(populate_by_name=True)

    models: str = Field(
        DEFAULT_UPSTREAMS,
        alias="GATEWAY_MODELS",
        description="served models: name=upstream URL, comma-separated (default: contracts.models)",
    )
    tracking_uri: str = Field(alias="MLFLOW_TRACKING_URI")
    alias: str = Field(PRODUCTION, alias="GATEWAY_ALIAS")
    monitoring_db_uri: str = Field("", alias="MONITORING_DB_URI", description="empty: no prediction log")
    refresh_s: float = Field(15.0, gt=0, alias="GATEWAY_REFRESH_S")
    host: str = Field("0.0.0.0", alias="GATEWAY_HOST")
    port: int = Field(8000, alias="GATEWAY_PORT")
    # The Unix socket of a `services.listener` holding the public and metrics sockets (the compose
    # stack: they outlive this container). Empty: listen on GATEWAY_HOST:GATEWAY_PORT here.
    listener: str = Field("", alias="GATEWAY_LISTENER")
    access_log: bool = Field(False, alias="GATEWAY_ACCESS_LOG")
    upstream_timeout_s: float = Field(30.0, gt=0, alias="GATEWAY_UPSTREAM_TIMEOUT_S")
    health_cache_s: float = Field(1.5, ge=0, alias="GATEWAY_HEALTH_CACHE_S")
    # Requests in flight per model server; the rest wait in the gateway, in order. 0: no limit.
    # `mlflow models serve` predicts in threads that contend for the GIL: one request at a time per
    # worker gives it the most throughput (docs/benchmarks.md).
    upstream_concurrency: int = Field(1, ge=0, alias="GATEWAY_UPSTREAM_CONCURRENCY")
    # Adaptive batching (batching.py): a request that finds a free slot is sent at once, alone;
    # requests that arrive while every slot is taken queue up and go together as one call.
    batching: bool = Field(
        True,
        alias="GATEWAY_BATCHING",
        description="merge concurrent requests for one model server into one call (false: one call each)",
    )
    batch_max_rows: int = Field(
        256,
        ge=1,
        alias="GATEWAY_BATCH_MAX_ROWS",
        description="rows per merged call at most; a larger request goes alone, never split",
    )
    batch_max_wait_ms: float = Field(
        1.0,
        ge=0,
        alias="GATEWAY_BATCH_MAX_WAIT_MS",
        description="with GATEWAY_UPSTREAM_CONCURRENCY=0 (no limit, so no slot to wait for): how long "
        "a batch opened while calls were in flight waits for companions (0: no batching)",
    )
    # Load shedding: rows forwarded to one model's server and not answered yet (queued in the gateway
    # or in the call), per gateway worker. A request that would take it over the limit is answered
    # 503 + Retry-After at once (`gateway_requests_pushed_back_total{reason="queue_full"}`), so that
    # beyond capacity the wait stays bounded instead of growing with the offered load. A request
    # that finds nothing pending always goes, whatever its size. 0: no limit.
    max_pending_rows: int = Field(2048, ge=0, alias="GATEWAY_MAX_PENDING_ROWS")
    # Request limits, answered 413 (docs/workshop.md, "Call the models"): body bytes on every POST, rows per
    # scoring request.
    max_body_bytes: int = Field(1024 * 1024, ge=1, alias="GATEWAY_MAX_BODY_BYTES")
    max_rows: int = Field(1000, ge=1, alias="GATEWAY_MAX_ROWS")

    # API keys (services/gateway/auth.py): `client=key,...`, and a file of `client=key` lines read
    # again when it changes. Any key configured (or GATEWAY_REQUIRE_API_KEYS) makes them required
    # on every POST /models/...
    api_keys: str = Field("", alias="GATEWAY_API_KEYS", repr=False)
    api_keys_file: str = Field("", alias="GATEWAY_API_KEYS_FILE")
    require_api_keys: bool = Field(False, alias="GATEWAY_REQUIRE_API_KEYS")
    # Prometheus's port for /metrics, never published (0: none). While API keys are required the
    # public port does not serve /metrics: published beyond loopback, metrics stay internal.
    metrics_port: int = Field(0, ge=0, alias="GATEWAY_METRICS_PORT")
    # Replicas sharing one network namespace (the loopback stack: host networking) cannot all bind
    # GATEWAY_METRICS_PORT: each takes the first free one of this many ports from it on.
    metrics_port_tries: int = Field(1, ge=1, le=64, alias="GATEWAY_METRICS_PORT_TRIES")

    log_batch_size: int = Field(200, ge=1, alias="LOG_BATCH_SIZE")
    log_flush_s: float = Field(1.0, gt=0, alias="LOG_FLUSH_S")
    # Records in memory (answered, or admitted and being answered) before the spool or Postgres
    # takes them; when full, scoring and feedback requests are answered 503 before the model call.
    log_buffer_max: int = Field(10000, ge=1, alias="LOG_BUFFER_MAX")
    # The prediction log's on-disk spool (predlog.py, spool.py): where records wait while Postgres
    # is unreachable. Empty: memory only (LOG_BUFFER_MAX), for tests and local mode.
    spool_dir: str = Field("", alias="GATEWAY_SPOOL_DIR")
    spool_max_bytes: int = Field(1 << 30, ge=1, alias="GATEWAY_SPOOL_MAX_BYTES")
    spool_fsync_s: float = Field(1.0, ge=0, alias="GATEWAY_SPOOL_FSYNC_S")
    # The Retry-After of a 503 pushed back: the prediction log has no room, or the queue is full.
    retry_after_s: int = Field(2, ge=1, alias="GATEWAY_RETRY_AFTER_S")
    # A prediction whose model server refused or reset the connection (a restarting serving
    # container) is tried again with backoff for this long (0: never), within the upstream timeout.
    upstream_retry_s: float = Field(20.0, ge=0, alias="GATEWAY_UPSTREAM_RETRY_S")
    # At start, the gateway accepts connections only once every model's version is loaded, or after
    # this long (then it answers 503 for the models not loaded yet).
    ready_timeout_s: float = Field(60.0, ge=0, alias="GATEWAY_READY_TIMEOUT_S")
    # On SIGTERM: how long requests in flight may take to finish before they are cancelled.
    drain_s: float = Field(10.0, ge=1, alias="GATEWAY_DRAIN_S")
    # Answered requests waiting for the recorder thread. Requests that reserved prediction-log room
    # are never dropped; without a prediction log, events beyond it are dropped and counted
    # (gateway_recorder_dropped_total).
    recorder_inbox_max: int = Field(10000, ge=1, alias="GATEWAY_RECORDER_INBOX_MAX")
    # Feedback is matched in the prediction log: ids not found at once (a prediction another
    # replica answered a moment ago, still on its way to Postgres) are looked up again for this long.
    feedback_wait_s: float = Field(3.0, ge=0, alias="GATEWAY_FEEDBACK_WAIT_S")

    @field_validator("models")
    @classmethod
    def _models_parse(cls, value: str) -> str:
        parse_upstreams(value, "GATEWAY_MODELS")
        return value

    def upstreams(self) -> dict[str, str]:
        """Registered model name -> serving container base URL."""
        return parse_upstreams(self.models, "GATEWAY_MODELS")


def load_settings() -> Settings | None:
    """The settings from the environment; None once every problem is printed in one line (the
    supervisor and each worker read them alike)."""
    try:
        return Settings()  # type: ignore[call-arg]
    except ValidationError as exc:
        print(f"gateway: error: invalid settings: {settings_problems(exc)}", file=sys.stderr)
        return None
