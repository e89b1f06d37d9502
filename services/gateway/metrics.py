"""The gateway's Prometheus metrics (names and labels are the contract in docs/monitoring.md).

Each app gets its own registry (tests build several apps in one process). Labelled children used on
the request path are resolved once per model and cached: `labels()` takes a lock and builds keys,
which is measurable at a few thousand requests per second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

# From 100 microseconds (the gateway's own work) to tens of seconds (a slow model).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
OVERHEAD_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.002, 0.005, 0.01,
    0.025, 0.1,
)  # fmt: skip
# Requests per upstream call (batching.py); GATEWAY_BATCH_MAX_ROWS is 256 by default.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# A request sent at once waits 0: the first bucket keeps the median of an idle gateway near it.
QUEUE_WAIT_BUCKETS = (0.00001, *LATENCY_BUCKETS)
# Both targets on one scale: efficiency is 0..1, latency is milliseconds up to seconds.
PREDICTION_BUCKETS = (
    0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
    2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
)  # fmt: skip


class GatewayMetrics:
    """All gateway metrics, registered in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()  # no `*_created` series: they double the output for nothing
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        # The default process / platform / GC collectors: process_cpu_seconds_total and friends.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)
        self.requests = Counter(
            "gateway_requests_total", "Requests answered.", ["model", "version", "endpoint", "status"],
            registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "gateway_request_duration_seconds", "Total time in the gateway.", ["model", "endpoint"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.upstream = Histogram(
            "gateway_upstream_duration_seconds",
            "Time waiting for the serving container: for a turn (concurrency limit) and its answer.",
            ["model"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.overhead = Histogram(
            "gateway_overhead_seconds", "The gateway's own time: total minus upstream time.", ["model"],
            buckets=OVERHEAD_BUCKETS, registry=r,
        )  # fmt: skip
        self.clients = Counter(
            "gateway_client_requests_total", "POST /models/... requests by API-key client ('-': keys off).",
            ["client"], registry=r,
        )  # fmt: skip
        self.unauthenticated = Counter(
            "gateway_unauthenticated_total", "Requests refused 401: no or unknown API key.", registry=r
        )
        self.batch_size = Histogram(
            "gateway_batch_size", "Requests carried by one upstream call (1: sent alone).", ["model"],
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "gateway_queue_wait_seconds",
            "Time a request waited in the gateway's queue before the call carrying it was sent.",
            ["model"],
            buckets=QUEUE_WAIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_fallbacks = Counter(
            "gateway_batch_fallbacks_total",
            "Merged upstream calls that failed, whose requests were then sent one at a time.",
            ["model"],
            registry=r,
        )
        self.in_flight = Gauge("gateway_requests_in_flight", "Requests being handled.", ["model"], registry=r)
        self.model_info = Gauge(
            "gateway_model_info", "What is served (always 1).", ["model", "version", "alias", "run_id"],
            registry=r,
        )  # fmt: skip
        self.prediction = Histogram(
            "gateway_prediction_value", "Prediction distribution.", ["model"],
            buckets=PREDICTION_BUCKETS, registry=r,
        )  # fmt: skip
        self.feedback = Counter(
            "gateway_feedback_total", "Feedback values matched to their prediction.", ["model"], registry=r
        )
        self.log_written = Counter(
            "gateway_prediction_log_written_total", "Prediction log records written to Postgres.", registry=r
        )
        self.log_dropped = Counter(
            "gateway_prediction_log_dropped_total",
            "Answered records that never reached the prediction log: Postgres refused even the marked "
            "row, or a spool record was unreadable. 0 in normal operation (full buffers push back).",
            registry=r,
        )
        self.log_buffered = Gauge(
            "gateway_prediction_log_buffered", "Prediction log records waiting in memory.", registry=r
        )
        self.spool_rows = Gauge(
            "gateway_prediction_log_spool_rows", "Records in the on-disk spool, waiting for Postgres.",
            registry=r,
        )  # fmt: skip
        self.spool_bytes = Gauge(
            "gateway_prediction_log_spool_bytes", "Bytes of the on-disk spool.", registry=r
        )
        self.spool_max_bytes = Gauge(
            "gateway_prediction_log_spool_max_bytes", "GATEWAY_SPOOL_MAX_BYTES (0: no spool).", registry=r
        )
        self.spool_errors = Counter(
            "gateway_prediction_log_spool_errors_total",
            "Failed spool writes, by errno name (ENOSPC: the volume is full).", ["error"], registry=r,
        )  # fmt: skip
        self.pushed_back = Counter(
            "gateway_requests_pushed_back_total",
            "Requests answered 503 with Retry-After before the model was called: the prediction "
            "log had no room (memory_full, spool_full, spool_error), or the model server's queue "
            "was full (queue_full: GATEWAY_MAX_PENDING_ROWS).",
            ["reason"], registry=r,
        )  # fmt: skip
        for reason in ("memory_full", "spool_full", "spool_error", "queue_full"):  # exported at 0
            self.pushed_back.labels(reason)
        self.spool_errors.labels("ENOSPC")
        self.upstream_retries = Counter(
            "gateway_upstream_retries_total",
            "Upstream calls tried again because the serving container refused or reset the connection.",
            ["model"], registry=r,
        )  # fmt: skip
        self.recorder_dropped = Counter(
            "gateway_recorder_dropped_total",
            "Answered requests the recorder dropped (inbox full, no prediction log): missing from the "
            "prediction histogram.",
            registry=r,
        )
        self.recorder_queued = Gauge(
            "gateway_recorder_queued", "Answered requests waiting for the recorder thread.", registry=r
        )

    def for_model(self, model: str) -> ModelMetrics:
        """The request-path children of one model, resolved once."""
        return ModelMetrics(
            metrics=self,
            model=model,
            duration_predict=self.duration.labels(model, "predict"),
            duration_invocations=self.duration.labels(model, "invocations"),
            duration_feedback=self.duration.labels(model, "feedback"),
            upstream=self.upstream.labels(model),
            overhead=self.overhead.labels(model),
            in_flight=self.in_flight.labels(model),
            batch_size=self.batch_size.labels(model),
            queue_wait=self.queue_wait.labels(model),
            batch_fallbacks=self.batch_fallbacks.labels(model),
        )


@dataclass
class ModelMetrics:
    """Cached labelled children for one model's request path."""

    metrics: GatewayMetrics
    model: str
    duration_predict: Histogram
    duration_invocations: Histogram
    duration_feedback: Histogram
    upstream: Histogram
    overhead: Histogram
    in_flight: Gauge
    batch_size: Histogram
    queue_wait: Histogram
    batch_fallbacks: Counter
    _counters: dict[tuple[str, str, int], Counter] = field(default_factory=dict)

    def count(self, version: str, endpoint: str, status: int) -> None:
        """gateway_requests_total{model,version,endpoint,status} += 1."""
        key = (version, endpoint, status)
        child = self._counters.get(key)
        if child is None:
            child = self.metrics.requests.labels(self.model, version, endpoint, str(status))
            self._counters[key] = child
        child.inc()
