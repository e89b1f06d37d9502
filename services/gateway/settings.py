"""The gateway's settings: GATEWAY_* here, the prediction log's LOG_*, and the shared tracking
server, prediction-log database and Host names."""

from __future__ import annotations

import sys

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from contracts.guard import GuardSettings
from contracts.models import DEFAULT_UPSTREAMS, PRODUCTION, parse_upstreams
from contracts.settings import EnvSettings, MlflowSettings, MonitoringDbSettings, SettingsError, nested


class PredictionLogSettings(EnvSettings):
    """How the gateway writes the prediction log (predlog.py)."""

    model_config = SettingsConfigDict(env_prefix="LOG_")

    batch_size: int = Field(200, ge=1, description="records per insert into the prediction log")
    flush_s: float = Field(1.0, gt=0, description="seconds between inserts while records wait")
    buffer_max: int = Field(
        10000,
        ge=1,
        description="records in memory (answered, or admitted and being answered) before the spool or "
        "Postgres takes them; when full, scoring and feedback requests are answered 503 before the model "
        "call",
    )


class Settings(EnvSettings):
    """Every gateway setting, from the environment (names as in docker-compose.yml)."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_")

    models: str = Field(
        DEFAULT_UPSTREAMS,
        description="served models: name=upstream URL, comma-separated (default: contracts.models)",
    )
    alias: str = Field(PRODUCTION, description="the registry alias whose version is served")
    refresh_s: float = Field(15.0, gt=0, description="seconds between reads of the served versions")
    host: str = Field("0.0.0.0", description="address the gateway listens on")
    port: int = Field(
        8000,
        description="port of the prediction gateway (in the stack: its host port, the monitored endpoint)",
    )
    listener: str = Field(
        "",
        description="the Unix socket of a `services.listener` holding the public and metrics sockets (the "
        "compose stack: they outlive this container); empty: listen on GATEWAY_HOST:GATEWAY_PORT here",
    )
    access_log: bool = Field(False, description="log every request")
    upstream_timeout_s: float = Field(30.0, gt=0, description="seconds a model server may take to answer")
    health_cache_s: float = Field(1.5, ge=0, description="seconds a model server's health is cached")
    upstream_concurrency: int = Field(
        1,
        ge=0,
        description="requests in flight per model server, the rest wait in the gateway in order; 0: no limit "
        "(one at a time per serving worker gives `mlflow models serve` the most throughput: "
        "docs/benchmarks.md)",
    )
    batching: bool = Field(
        True,
        description="merge requests that queue for one model server into one call (false: one call each)",
    )
    batch_max_rows: int = Field(
        256, ge=1, description="rows per merged call at most; a larger request goes alone, never split"
    )
    batch_max_wait_ms: float = Field(
        1.0,
        ge=0,
        description="with GATEWAY_UPSTREAM_CONCURRENCY=0 (no slot to wait for): how long a batch opened "
        "while calls were in flight waits for companions (0: no batching)",
    )
    max_pending_rows: int = Field(
        2048,
        ge=0,
        description="load shedding: rows forwarded to one model's server and not answered yet, per worker; "
        "a request that would exceed it is answered 503 + Retry-After at once (one that finds nothing "
        "pending always goes); 0: no limit",
    )
    max_body_bytes: int = Field(1024 * 1024, ge=1, description="body bytes on every POST, above: 413")
    max_rows: int = Field(1000, ge=1, description="rows per scoring request, above: 413")
    api_keys: str = Field(
        "",
        repr=False,
        description="API keys as `client=key,...` (a restart applies changes; the key file needs none)",
    )
    api_keys_file: str = Field("", description="a file of `client=key` lines, read again when it changes")
    require_api_keys: bool = Field(
        False,
        description="whether every POST /models/... needs a key (make gateway-key NAME=<client>); "
        "required by make up when BIND_ADDRESS publishes beyond loopback. Any key configured makes them "
        "required too",
    )
    metrics_port: int = Field(
        0,
        ge=0,
        description="Prometheus's port for /metrics, never published (0: none); while API keys are "
        "required the public port does not serve /metrics",
    )
    metrics_port_tries: int = Field(
        1,
        ge=1,
        le=64,
        description="replicas sharing one network namespace each take the first free one of this many "
        "ports from GATEWAY_METRICS_PORT on",
    )
    spool_dir: str = Field(
        "",
        description="the prediction log's on-disk spool, where records wait while Postgres is unreachable; "
        "empty: memory only (LOG_BUFFER_MAX)",
    )
    spool_max_bytes: int = Field(1 << 30, ge=1, description="the spool's size limit")
    spool_fsync_s: float = Field(1.0, ge=0, description="seconds between fsyncs of the spool")
    retry_after_s: int = Field(
        2,
        ge=1,
        description="Retry-After of a 503 pushed back (no room in the prediction log, or a full queue)",
    )
    upstream_retry_s: float = Field(
        20.0,
        ge=0,
        description="a prediction whose model server refused or reset the connection (a restarting "
        "container) is tried again with backoff for this long (0: never), within the upstream timeout",
    )
    ready_timeout_s: float = Field(
        60.0,
        ge=0,
        description="at start, connections are accepted once every model's version is loaded or after "
        "this long (then 503 for the models not loaded yet)",
    )
    drain_s: float = Field(
        10.0, ge=1, description="on SIGTERM: seconds requests in flight may take to finish"
    )
    recorder_inbox_max: int = Field(
        10000,
        ge=1,
        description="answered requests waiting for the recorder thread; without a prediction log, events "
        "beyond it are dropped and counted (gateway_recorder_dropped_total)",
    )
    feedback_wait_s: float = Field(
        3.0,
        ge=0,
        description="feedback ids not found in the prediction log at once (a prediction another replica "
        "answered a moment ago) are looked up again for this long",
    )
    log: PredictionLogSettings = nested(PredictionLogSettings)
    mlflow: MlflowSettings = nested(MlflowSettings)
    monitoring: MonitoringDbSettings = nested(MonitoringDbSettings)
    guard: GuardSettings = nested(GuardSettings)

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
    except SettingsError as exc:
        print(f"gateway: error: invalid settings: {exc}", file=sys.stderr)
        return None
