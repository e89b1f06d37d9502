"""Offline replica of the monitor on synthetic traffic: estimated RMSE (DLE) against the truth, and
when each alert would fire. No stack, no Prometheus: the monitor's maths on a simulated stream.

What is replicated: traffic of `RATE` rows/s per model (`make simulate`'s default gives about 15),
unshifted for `CALM_S` seconds, then shifted; every 10 s (MONITOR_INTERVAL_S) the newest 500 rows
(DRIFT_WINDOW) are scored with the shared code: contracts.drift for the dataset-drift verdict,
contracts.dle for the estimate; live RMSE over the newest 1000 feedback values that have arrived
(FEEDBACK_WINDOW), with the feedback delay and share given. The alert conditions are those of
prometheus/rules/ (estimated > 1.3x test RMSE after 100 rows for 2 min; live > 1.5x for 5 min;
dataset drift for 2 min); Prometheus' scrape and evaluation delays (up to 30 s) are not modelled.
The model is a 60-tree random forest on 8,000 rows, the estimator fitted on 3,000 held-out rows, as
the trainer does but smaller.

    .venv/bin/python -m tests.bench.dle_offline --plot docs/images/dle-offline.png

prints the table of docs/monitoring.md, "Estimated quality (DLE)", and draws the plot.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor
from sklearn.pipeline import Pipeline

from contracts import dle, drift, synthetic
from contracts.schema import FEATURE_NAMES
from trainer.features import build_preprocessor

RATE = 15  # rows per second per model
CALM_S, DURATION_S, STEP_S = 60, 900, 10
WINDOW, MIN_ROWS, FEEDBACK_WINDOW = 500, 100, 1000
ESTIMATED_FACTOR, LIVE_FACTOR = 1.3, 1.5
FOR_S = {"drift": 120, "estimated": 120, "live": 300}


@dataclass(frozen=True)
class Scenario:
    title: str
    target: str
    shift: dict[str, float]


SCENARIOS = (
    Scenario("make simulate DRIFT=1: latency (harmful, broad drift)", "latency_ms", {"drift": 1.0}),
    Scenario(
        "make simulate BUSY=0.5: latency (harmful, one feature drifts)", "latency_ms", {"busy_links": 0.5}
    ),
    Scenario(
        "make simulate DRIFT=1: bandwidth efficiency (harmless)", "bandwidth_efficiency", {"drift": 1.0}
    ),
)
FEEDBACK = {"labels after 5 s (simulate's default)": (5.0, 1.0), "10% of labels, after 10 min": (600.0, 0.1)}


def fit(target: str) -> tuple[Pipeline, dle.FittedEstimator, dict[str, Any], float]:
    """The model, its loss estimator, its reference profile and its test RMSE."""
    data = synthetic.generate(14_000, seed=42)
    train, held_out, test = data.iloc[:8000], data.iloc[8000:11_000], data.iloc[11_000:]
    forest = RandomForestRegressor(60, max_depth=12, min_samples_leaf=2, n_jobs=1, random_state=0)
    model = Pipeline([("preprocess", build_preprocessor()), ("model", forest)])
    model.fit(train[list(FEATURE_NAMES)], train[target])
    predicted = model.predict(held_out[list(FEATURE_NAMES)])
    x = dle.design_matrix(dle.frame_rows(held_out), predicted)
    estimator = dle.fit(x, held_out[target].to_numpy(), predicted)
    profile = drift.build_profile(train[list(FEATURE_NAMES)], model.predict(train[list(FEATURE_NAMES)]))
    test_rmse = float(
        np.sqrt(np.mean((test[target].to_numpy() - model.predict(test[list(FEATURE_NAMES)])) ** 2))
    )
    return model, estimator, profile, test_rmse


def stream(scenario: Scenario) -> pd.DataFrame:
    calm = synthetic.generate(CALM_S * RATE, seed=101)
    shifted = synthetic.generate((DURATION_S - CALM_S) * RATE, seed=102, **scenario.shift)
    rows = pd.concat([calm, shifted], ignore_index=True)
    rows["ts"] = np.arange(len(rows)) / RATE
    return rows


def fired_at(times: np.ndarray, condition: np.ndarray, hold_s: float) -> float | None:
    """When a condition true at every step for `hold_s` seconds first fires (None: never)."""
    since = None
    for t, ok in zip(times, condition, strict=True):
        since = (since if since is not None else t) if ok else None
        if since is not None and t - since >= hold_s:
            return float(t)
    return None


def replay(scenario: Scenario) -> dict[str, Any]:
    model, estimator, profile, test_rmse = fit(scenario.target)
    rows = stream(scenario)
    predicted = model.predict(rows[list(FEATURE_NAMES)])
    actual = rows[scenario.target].to_numpy()
    x = dle.design_matrix(dle.frame_rows(rows), predicted)
    losses = estimator.losses(x)
    rng = np.random.default_rng(0)
    labelled = {name: rng.random(len(rows)) < share for name, (_, share) in FEEDBACK.items()}
    times = np.arange(STEP_S, DURATION_S + STEP_S, STEP_S, dtype=float)
    out: dict[str, Any] = {"times": times, "test_rmse": test_rmse, "estimated": [], "true": [], "drift": []}
    out |= {name: [] for name in FEEDBACK}
    for t in times:
        newest = np.flatnonzero(rows["ts"].to_numpy() < t)[-WINDOW:]
        estimate = dle.estimate_from(losses["absolute_error"][newest], losses["squared_error"][newest])
        out["estimated"].append(estimate.rmse if len(newest) >= MIN_ROWS else np.nan)
        out["true"].append(float(np.sqrt(np.mean((actual[newest] - predicted[newest]) ** 2))))
        window = rows.iloc[newest]
        report = drift.drift_report(
            profile, {c: window[c].tolist() for c in FEATURE_NAMES}, predicted[newest]
        )
        out["drift"].append(len(newest) >= MIN_ROWS and report.drifted_share > 0.3)
        for name, (delay, _) in FEEDBACK.items():
            arrived = np.flatnonzero(labelled[name] & (rows["ts"].to_numpy() + delay < t))[-FEEDBACK_WINDOW:]
            error = actual[arrived] - predicted[arrived]
            out[name].append(float(np.sqrt(np.mean(error**2))) if len(arrived) else np.nan)
    estimated, drifted = np.array(out["estimated"]), np.array(out["drift"])
    out["fired"] = {
        "dataset drift": fired_at(times, drifted, FOR_S["drift"]),
        "estimated RMSE": fired_at(times, estimated > ESTIMATED_FACTOR * test_rmse, FOR_S["estimated"]),
    }
    for name in FEEDBACK:
        live = np.array(out[name])
        out["fired"][f"live RMSE, {name}"] = fired_at(times, live > LIVE_FACTOR * test_rmse, FOR_S["live"])
    return out


def seconds_after_shift(t: float | None) -> str:
    return f"never (in {(DURATION_S - CALM_S) // 60} min)" if t is None else f"{(t - CALM_S) / 60:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", help="write the plot to this PNG")
    args = parser.parse_args()
    results = [(scenario, replay(scenario)) for scenario in SCENARIOS]
    alerts = list(results[0][1]["fired"])
    print("| scenario | test RMSE | true / estimated RMSE at the end | " + " | ".join(alerts) + " |")
    print("|---" * (3 + len(alerts)) + "|")
    for scenario, r in results:
        end = f"{r['true'][-1]:.4g} / {r['estimated'][-1]:.4g}"
        fired = " | ".join(seconds_after_shift(r["fired"][a]) for a in alerts)
        print(f"| {scenario.title} | {r['test_rmse']:.4g} | {end} | {fired} |")
    if args.plot:
        figure, axes = plt.subplots(len(results), 1, figsize=(10, 3.6 * len(results)), sharex=True)
        for axis, (scenario, r) in zip(axes, results, strict=True):
            minutes = (r["times"] - CALM_S) / 60
            axis.plot(minutes, r["true"], color="black", label="true RMSE of the window (all labels)")
            axis.plot(minutes, r["estimated"], color="tab:blue", label="estimated RMSE (no labels)")
            late = list(FEEDBACK)[1]
            axis.plot(minutes, r[late], color="tab:orange", label=f"measured RMSE, {late}")
            axis.axhline(r["test_rmse"], color="grey", linestyle="--", label="training-time test RMSE")
            axis.axhline(ESTIMATED_FACTOR * r["test_rmse"], color="tab:blue", linestyle=":", linewidth=1)
            for (name, t), color in zip(
                r["fired"].items(), ("tab:red", "tab:blue", "tab:green", "tab:orange"), strict=True
            ):
                if t is not None:
                    axis.axvline(
                        (t - CALM_S) / 60, color=color, linestyle="-.", linewidth=1, label=f"fires: {name}"
                    )
            axis.set_title(scenario.title, fontsize=10)
            axis.set_ylabel(scenario.target)
            axis.legend(fontsize=7, loc="upper left")
        axes[-1].set_xlabel("minutes since the shift began (offline replica, synthetic data)")
        figure.suptitle("Estimated vs true RMSE, and when the alerts fire (offline, not the live stack)")
        figure.tight_layout()
        figure.savefig(args.plot, dpi=90)


if __name__ == "__main__":
    main()
