"""The seeded synthetic network-telemetry generator: the demo world the trainer learns from and the
traffic simulator sends through the gateway (so both see the same physics).

The generator models physics a network engineer would recognise: propagation delay grows with
distance, queueing delay explodes as utilisation approaches 1 (M/M/1), satellites add ~550 ms,
TCP throughput is capped by the Mathis bound (MSS / (RTT * sqrt(loss))). Both targets are therefore
non-linear in the features, which is what makes tree ensembles beat linear regression here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# The promotion gate's reference set (trainer/gate.py): fixed rows that no feedback reaches, drawn with
# a seed no training session uses (the sessions use 42), judged with an absolute bound against each
# model's recorded baseline. Changing either number invalidates the recorded baselines (the
# registered models' `gate.reference_baseline_rmse` tags): delete those tags when you do.
REFERENCE_SEED = 20_261_205
REFERENCE_ROWS = 3000

_NETWORK_TYPES = {
    # name: (share, base access latency ms, median bandwidth Mbps, extra jitter ms, extra loss %)
    "fiber": (0.30, 1.0, 500.0, 0.0, 0.0),
    "cable": (0.25, 8.0, 200.0, 1.0, 0.1),
    "dsl": (0.10, 15.0, 30.0, 2.0, 0.2),
    "4g": (0.15, 35.0, 40.0, 8.0, 0.8),
    "5g": (0.15, 12.0, 300.0, 3.0, 0.3),
    "satellite": (0.05, 550.0, 50.0, 15.0, 1.0),
}
_PROTOCOLS = {"tcp": 0.60, "udp": 0.25, "quic": 0.15}
_REGIONS = {
    # name: (share, extra latency ms)
    "north-america": (0.30, 0.0),
    "europe": (0.30, 2.0),
    "asia-pacific": (0.25, 6.0),
    "south-america": (0.10, 12.0),
    "africa": (0.05, 20.0),
}


def generate(n_rows: int, seed: int = 42, drift: float = 0.0, busy_links: float = 0.0) -> pd.DataFrame:
    """Generate `n_rows` measurements with both targets.

    `drift` (0 = none, 1 = strong) shifts the feature distributions the way a real network drifts:
    busier links, longer paths, more mobile and satellite clients, more loss, peak-hour traffic.
    `busy_links` (0 = none, 1 = strong) makes the busiest link run hotter and changes nothing else:
    one feature of twelve drifts, so the dataset-drift verdict stays calm, yet queueing delay, and
    the latency model's error with it, grows steeply near saturation (a harmful shift with little
    feature drift; docs/monitoring.md, "Estimated quality (DLE)").
    """
    _check(n_rows, drift, busy_links)
    rng = np.random.default_rng(seed)
    d = float(drift)

    types = list(_NETWORK_TYPES)
    shares = np.array([v[0] for v in _NETWORK_TYPES.values()])
    mobile = np.array([t in ("4g", "satellite") for t in types])
    shares = shares + d * 0.25 * mobile
    network_type = rng.choice(types, size=n_rows, p=shares / shares.sum())
    protocol = rng.choice(list(_PROTOCOLS), size=n_rows, p=list(_PROTOCOLS.values()))
    region_shares = np.array([v[0] for v in _REGIONS.values()])
    region = rng.choice(list(_REGIONS), size=n_rows, p=region_shares)

    access_latency, median_bw, extra_jitter, extra_loss = (
        np.array([_NETWORK_TYPES[t][i] for t in network_type]) for i in (1, 2, 3, 4)
    )
    region_latency = np.array([_REGIONS[r][1] for r in region])

    distance_km = np.clip(rng.lognormal(np.log(800) + d * 0.8, 1.2, n_rows), 1, 20000)
    hop_count = np.clip(3 + rng.poisson(distance_km / 800 + 4), 1, 30).astype(float)
    link_utilization = rng.beta(2 + 3 * d, 3, n_rows)
    if busy_links:  # hotter links: a bend towards 1 that draws nothing, so no other column changes
        link_utilization = 1 - (1 - link_utilization) ** (1 + 2 * busy_links)
    link_utilization = np.clip(link_utilization, 0, 0.97)
    large = rng.random(n_rows) < 0.4
    packet_size_bytes = np.where(
        large, rng.uniform(1400, 1500, n_rows), rng.uniform(64, 1200, n_rows)
    ).round()
    bandwidth_mbps = np.clip(median_bw * rng.lognormal(0, 0.5, n_rows), 1, 10000)
    jitter_ms = np.clip(rng.gamma(2, 2, n_rows) + extra_jitter * (1 + d), 0, 200)
    packet_loss_pct = np.clip(rng.exponential(0.3 * (1 + 2 * d), n_rows) + extra_loss, 0, 20)
    peak_hours = np.array([18, 19, 20, 21, 22])
    hour_of_day = np.where(
        rng.random(n_rows) < d * 0.6,
        rng.choice(peak_hours, n_rows),
        rng.integers(0, 24, n_rows),
    ).astype(float)
    concurrent_flows = np.clip(rng.lognormal(np.log(50) + d, 1.0, n_rows), 1, 5000).round()

    # Latency: propagation + per-hop + queueing (M/M/1, busier at peak hours) + access + region.
    peak = 1 + 0.6 * np.exp(-((hour_of_day - 20) ** 2) / 8)
    load = np.clip(link_utilization * peak + concurrent_flows / 20000, 0, 0.98)
    queueing = 4.0 * load / (1 - load)
    serialization = packet_size_bytes * 8 / (bandwidth_mbps * 1000)
    base = distance_km * 0.01 + hop_count * 0.4 + queueing + serialization
    latency = (base + access_latency + region_latency + 0.5 * jitter_ms) * np.where(
        protocol == "tcp", 1 + 0.04 * packet_loss_pct, 1.0
    )
    latency_ms = latency * rng.lognormal(0, 0.05, n_rows) + rng.normal(0, 1.0, n_rows)
    latency_ms = np.clip(latency_ms, 0.5, None)

    bandwidth_efficiency = _bandwidth_efficiency(
        rng, protocol, packet_size_bytes, link_utilization, packet_loss_pct, latency_ms, bandwidth_mbps
    )

    return pd.DataFrame(
        {
            "distance_km": distance_km.round(1),
            "hop_count": hop_count,
            "link_utilization": link_utilization.round(4),
            "packet_size_bytes": packet_size_bytes,
            "bandwidth_mbps": bandwidth_mbps.round(2),
            "jitter_ms": jitter_ms.round(3),
            "packet_loss_pct": packet_loss_pct.round(4),
            "hour_of_day": hour_of_day,
            "concurrent_flows": concurrent_flows,
            "network_type": network_type,
            "protocol": protocol,
            "region": region,
            "latency_ms": latency_ms.round(3),
            "bandwidth_efficiency": bandwidth_efficiency.round(5),
        }
    )


def _check(n_rows: int, drift: float, busy_links: float) -> None:
    """ValueError for arguments `generate` cannot honour."""
    if n_rows < 1:
        raise ValueError(f"n_rows must be at least 1, got {n_rows}")
    if drift < 0:
        raise ValueError(f"drift must be >= 0, got {drift}")
    if busy_links < 0:
        raise ValueError(f"busy_links must be >= 0, got {busy_links}")


def _bandwidth_efficiency(  # noqa: PLR0913  (the physical quantities it depends on)
    rng: np.random.Generator,
    protocol: np.ndarray,
    packet_size_bytes: np.ndarray,
    link_utilization: np.ndarray,
    packet_loss_pct: np.ndarray,
    latency_ms: np.ndarray,
    bandwidth_mbps: np.ndarray,
) -> np.ndarray:
    """Bandwidth efficiency: header overhead, share left by other traffic, Mathis bound for TCP,
    with measurement noise (the generator's last draw, so every column before it is unchanged)."""
    header = np.select([protocol == "udp", protocol == "quic"], [28.0, 45.0], 40.0)
    overhead = packet_size_bytes / (packet_size_bytes + header)
    available = 1 - 0.6 * link_utilization
    mss_bits = 1460 * 8
    loss = np.maximum(packet_loss_pct / 100, 1e-4)
    mathis_mbps = 1.22 * mss_bits / (latency_ms / 1000 * np.sqrt(loss)) / 1e6
    tcp_cap = np.where(protocol == "udp", 1.0, np.minimum(1.0, mathis_mbps / bandwidth_mbps))
    efficiency = overhead * available * (0.3 + 0.7 * tcp_cap) * (1 - packet_loss_pct / 100)
    n_rows = len(protocol)
    result: np.ndarray = np.clip(efficiency + rng.normal(0, 0.02, n_rows), 0.01, 1.0)
    return result


def reference_set() -> pd.DataFrame:
    """The gate's fixed reference set: the same rows every time, for every model and session."""
    return generate(REFERENCE_ROWS, seed=REFERENCE_SEED)
