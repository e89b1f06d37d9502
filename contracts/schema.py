"""The network-telemetry feature schema: the one definition every part of the platform imports.

Each row describes one network path measurement. Numeric features carry their physical range,
categorical features their allowed values. The two targets are what the models predict.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str  # "numeric" or "categorical"
    description: str
    low: float | None = None
    high: float | None = None
    categories: tuple[str, ...] = ()

    @property
    def is_numeric(self) -> bool:
        return self.kind == "numeric"


FEATURES: tuple[Feature, ...] = (
    Feature("distance_km", "numeric", "great-circle distance between endpoints", 1, 20000),
    Feature("hop_count", "numeric", "routers on the path", 1, 30),
    Feature("link_utilization", "numeric", "busiest link's utilisation, 0..1", 0, 0.99),
    Feature("packet_size_bytes", "numeric", "mean packet size", 64, 1500),
    Feature("bandwidth_mbps", "numeric", "provisioned bandwidth", 1, 10000),
    Feature("jitter_ms", "numeric", "packet delay variation", 0, 200),
    Feature("packet_loss_pct", "numeric", "lost packets, percent", 0, 20),
    Feature("hour_of_day", "numeric", "local hour, 0..23", 0, 23),
    Feature("concurrent_flows", "numeric", "flows sharing the bottleneck", 1, 5000),
    Feature(
        "network_type",
        "categorical",
        "access technology",
        categories=("fiber", "cable", "dsl", "4g", "5g", "satellite"),
    ),
    Feature("protocol", "categorical", "transport protocol", categories=("tcp", "udp", "quic")),
    Feature(
        "region",
        "categorical",
        "region of the client",
        categories=("north-america", "europe", "asia-pacific", "south-america", "africa"),
    ),
)

TARGETS: dict[str, str] = {
    "latency_ms": "round-trip latency in milliseconds",
    "bandwidth_efficiency": "achieved throughput / provisioned bandwidth, 0..1",
}

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
NUMERIC_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.is_numeric)
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if not f.is_numeric)
