"""Serving behaviour over a window, from Prometheus: traffic, latency, errors, containers, live
quality and drift (metric names: docs/monitoring.md, prometheus/rules). When Prometheus cannot be
reached the section says why and the report is built without it."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

import requests

from contracts.models import MODELS

WINDOW = re.compile(r"^([1-9][0-9]{0,4})([smhd])$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
REQUESTS = 'gateway_requests_total{endpoint!="feedback"}'
DURATION = 'gateway_request_duration_seconds_bucket{endpoint!="feedback"}'
SERVICE = "container_label_com_docker_compose_service"
CONTAINERS = f'{SERVICE}=~"serving-.+|gateway"'


def window_seconds(window: str) -> int:
    """'90s', '15m', '1h', '2d' -> seconds; ValueError naming the expected form otherwise."""
    match = WINDOW.match(window)
    if not match:
        raise ValueError(f"window {window!r}: expected a number and a unit s, m, h or d, like 1h or 30m")
    return int(match.group(1)) * SECONDS[match.group(2)]


@dataclass
class ModelServing:
    model: str
    requests_per_s: float | None = None
    p50_s: float | None = None
    p99_s: float | None = None
    error_rate: float | None = None
    versions: dict[str, float] = field(default_factory=dict)  # version -> requests in the window
    live: dict[str, float] = field(default_factory=dict)  # mae, rmse, r2 -> last value
    dataset_drift: float | None = None  # max over the window (0/1)
    drifted_ratio: float | None = None
    prediction_psi: float | None = None
    top_features: list[tuple[str, float]] = field(default_factory=list)
    rate_series: list[tuple[float, float]] = field(default_factory=list)
    p99_series: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class ServingData:
    window: str
    url: str
    available: bool
    reason: str = ""
    models: dict[str, ModelServing] = field(default_factory=dict)
    containers: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # cpu cores, bytes

    @property
    def has_traffic(self) -> bool:
        return any((m.requests_per_s or 0) > 0 for m in self.models.values())


class Prometheus:
    def __init__(self, url: str, timeout: float = 10) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout

    def _get(self, path: str, params: dict[str, str]) -> list[dict]:
        answer = requests.get(f"{self.url}{path}", params=params, timeout=self.timeout)
        answer.raise_for_status()
        body = answer.json()
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus: {body.get('error', 'query failed')}")
        return list(body["data"]["result"])

    def query(self, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
        found = []
        for item in self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"}):
            value = float(item["value"][1])
            if math.isfinite(value):
                found.append((item["metric"], value))
        return found

    def query_range(
        self, expr: str, start: float, end: float, step: float
    ) -> dict[str, list[tuple[float, float]]]:
        series = {}
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:.3f}"}
        for item in self._get("/api/v1/query_range", params):
            points = [(float(t), float(v)) for t, v in item["values"] if math.isfinite(float(v))]
            series[item["metric"].get("model", "")] = points
        return series


def by_model(rows: list[tuple[dict[str, str], float]]) -> dict[str, float]:
    return {labels.get("model", ""): value for labels, value in rows}


def read_serving(url: str, window: str, now: float | None = None) -> ServingData:
    """The serving section's figures over the `window` ending `now`; `available` False with the
    reason when Prometheus does not answer."""
    seconds = window_seconds(window)
    at = time.time() if now is None else now
    prom = Prometheus(url)
    data = ServingData(window, url, available=True)
    w = f"[{window}]"
    try:
        prom.query("vector(1)", at)
    except requests.ConnectionError:
        return ServingData(window, url, available=False, reason="no answer (connection failed)")
    except (requests.RequestException, RuntimeError, ValueError) as exc:
        return ServingData(window, url, available=False, reason=_one_line(exc))
    try:
        rps = by_model(prom.query(f"sum by (model) (rate({REQUESTS}{w}))", at))
        quantiles = {
            q: by_model(prom.query(f"histogram_quantile({q}, sum by (model, le) (rate({DURATION}{w})))", at))
            for q in (0.5, 0.99)
        }
        errors = by_model(
            prom.query(
                f'sum by (model) (rate(gateway_requests_total{{endpoint!="feedback",status=~"5.."}}{w}))'
                f" / sum by (model) (rate({REQUESTS}{w}))",
                at,
            )
        )
        versions = prom.query(f"sum by (model, version) (increase({REQUESTS}{w}))", at)
        live = {
            m: by_model(prom.query(f"last_over_time(gateway_live_{m}{w})", at)) for m in ("mae", "rmse", "r2")
        }
        drift = by_model(prom.query(f"max_over_time(gateway_dataset_drift{w})", at))
        ratio = by_model(prom.query(f"last_over_time(gateway_drifted_features_ratio{w})", at))
        psi = by_model(prom.query(f"max_over_time(gateway_prediction_drift_psi{w})", at))
        features = prom.query(f"topk by (model) (3, last_over_time(gateway_feature_drift_psi{w}))", at)
        step = max(seconds / 60, 15)
        rate_series = prom.query_range(
            f"sum by (model) (rate({REQUESTS}[{int(max(step * 2, 60))}s]))", at - seconds, at, step
        )
        p99_series = prom.query_range(
            f"histogram_quantile(0.99, sum by (model, le) (rate({DURATION}[{int(max(step * 2, 60))}s])))",
            at - seconds,
            at,
            step,
        )
        cpu = prom.query(
            f"sum by ({SERVICE}) (rate(container_cpu_usage_seconds_total{{{CONTAINERS}}}{w}))", at
        )
        memory = prom.query(
            f"max by ({SERVICE}) (max_over_time(container_memory_working_set_bytes{{{CONTAINERS}}}{w}))", at
        )
    except (requests.RequestException, RuntimeError, ValueError, KeyError) as exc:
        return ServingData(window, url, available=False, reason=_one_line(exc))
    for model in MODELS:
        name = model.name
        serving = ModelServing(
            name,
            requests_per_s=rps.get(name),
            p50_s=quantiles[0.5].get(name),
            p99_s=quantiles[0.99].get(name),
            error_rate=errors.get(name, 0.0 if rps.get(name) else None),
            live={m: values[name] for m, values in live.items() if name in values},
            dataset_drift=drift.get(name),
            drifted_ratio=ratio.get(name),
            prediction_psi=psi.get(name),
            rate_series=rate_series.get(name, []),
            p99_series=p99_series.get(name, []),
        )
        serving.versions = {
            labels.get("version", "?"): value
            for labels, value in versions
            if labels.get("model") == name and value > 0
        }
        serving.top_features = sorted(
            (
                (labels.get("feature", "?"), value)
                for labels, value in features
                if labels.get("model") == name
            ),
            key=lambda item: -item[1],
        )
        data.models[name] = serving
    cores = {labels.get(SERVICE, "?"): value for labels, value in cpu}
    peak = {labels.get(SERVICE, "?"): value for labels, value in memory}
    data.containers = {s: (cores.get(s), peak.get(s)) for s in sorted(cores.keys() | peak.keys())}
    return data


def _one_line(exc: Exception) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= 240 else text[:237] + "..."
