"""`make bench`: serving, measured form against form and gateway against model server, in one run.

Starts real processes on loopback: PostgreSQL, the MLflow server, a trained latency model (the
random forest), and four targets:

- `sklearn-direct`: `mlflow models serve` of the version's scikit-learn form (its `sklearn_model_uri`);
- `onnx-direct`: the serving launcher with the version as registered, its ONNX form (trainer/compiled.py);
- `gateway`: the gateway in front of `onnx-direct`, batching off (`GATEWAY_BATCHING=false`);
- `gateway-batch`: the same with adaptive batching, as deployed.

The gateways keep their prediction log in PostgreSQL, as deployed (drift is the monitor's, off the
request path). Then, from
separate processes and in the same run:

- 1 client: one closed-loop client takes turns between the targets request by request
  (`tests/bench/paired_client.py`), so each request is compared with the others' sent
  milliseconds apart. On this shared machine, two 5-second runs of the same target differ by more
  than the proxy hop costs, so back-to-back runs cannot resolve it.
- 16 clients: wrk (closed loop), in rounds that run every target back to back, in alternating order.
- Memory: resident set of each model server's processes after the runs.
- Where a model server's time goes: tests/bench/serving_profile.py, in process.

Targets (issue 10): through the gateway with batching, at 16 clients at least 10x the scikit-learn
form's direct throughput, and at 1 client p50 <= 3 ms; without batching the gateway adds at most
1 ms to p50. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import psutil
from prometheus_client.parser import text_string_to_metric_families

from contracts import synthetic
from contracts.predlog_migrations import apply_schema
from contracts.schema import FEATURE_NAMES
from contracts.settings import database_uri
from services.dbinit.setup import admin_cursor, ensure_databases
from services.gateway import Settings
from services.local import Processes, start_mlflow, start_postgres, start_serving, wait_http
from tests.bench import load, serving_profile, wrk
from tests.bench.wrk import met
from tests.conftest import ROOT, free_port, python_env

MODEL = "latency-predictor"
TARGETS = ["sklearn-direct", "onnx-direct", "gateway", "gateway-batch"]
GATEWAYS = {"gateway": "false", "gateway-batch": "true"}  # GATEWAY_BATCHING
UNBOUNDED = "gateway-unbounded"
PENDING_ROWS_LIMIT = Settings.model_fields["max_pending_rows"].default  # GATEWAY_MAX_PENDING_ROWS
BATCH_SPEEDUP = 10.0  # gateway-batch at 16 clients, times sklearn-direct's throughput
BATCH_P50_MS = 3.0  # gateway-batch at 1 client
HOP_MS = 1.0  # what the gateway may add to the model server's p50


@dataclass
class Result:
    target: str
    clients: int
    round: int
    rps: float
    p50_ms: float
    p99_ms: float


def run_wrk(url: str, body: str, clients: int, seconds: int, workdir: Path) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of a closed-loop wrk run; fails on any non-2xx answer."""
    done = wrk.run(url, body, clients, seconds, workdir)
    if done.non_2xx or done.socket_errors:
        raise RuntimeError(f"{done.non_2xx} non-2xx answers, {done.socket_errors} socket errors from {url}")
    return done.rps, done.p50_ms, done.p99_ms


def start_stack(procs: Processes, base: Path) -> dict[str, str]:
    """Postgres, MLflow, a trained latency model, both of its forms served and two gateways in front
    of the ONNX form (batching off and on); their URLs, and the model server processes' ids."""
    uri = start_postgres(procs, base / "postgres", free_port())
    with admin_cursor(uri) as cur:
        ensure_databases(cur)
    apply_schema(database_uri(uri, "monitoring"))
    tracking = start_mlflow(procs, uri, base, free_port())
    env = {**python_env(), "MLFLOW_TRACKING_URI": tracking}
    train = ["--n-rows", "5000", "--models", "rf", "--targets", "latency_ms", "--participant", "bench"]
    subprocess.run(
        [sys.executable, "-m", "trainer", *train], env=env, cwd=ROOT, check=True, capture_output=True
    )
    mlflow.set_tracking_uri(tracking)
    version = mlflow.MlflowClient().get_model_version_by_alias(MODEL, "production")
    if version.tags.get("serving.form") != "onnx":
        raise RuntimeError(f"{MODEL} v{version.version} has no ONNX form: {version.tags.get('onnx.error')}")
    onnx_port, sklearn_port = free_port(), free_port()
    onnx = start_serving(procs, tracking, MODEL, onnx_port)
    sklearn = procs.start(
        "serving-sklearn",
        ["mlflow", "models", "serve", "--model-uri", version.tags["sklearn_model_uri"],
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(sklearn_port), "--workers", "1"],
        {"MLFLOW_TRACKING_URI": tracking},
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{onnx_port}/ping", onnx, 180, "serving (ONNX)")
    wait_http(f"http://127.0.0.1:{sklearn_port}/ping", sklearn, 180, "serving (scikit-learn)")
    urls = {
        "sklearn-direct": f"http://127.0.0.1:{sklearn_port}/invocations",
        "onnx-direct": f"http://127.0.0.1:{onnx_port}/invocations",
        "sklearn-direct-pid": str(sklearn.pid),
        "onnx-direct-pid": str(onnx.pid),
    }
    monitoring = uri.replace("+psycopg2", "").rsplit("/", 1)[0] + "/monitoring"
    gateways = {target: {"GATEWAY_BATCHING": batching} for target, batching in GATEWAYS.items()}
    # The overload's comparison (tests/bench/load.py): as deployed, but with no pending-row limit.
    gateways[UNBOUNDED] = {"GATEWAY_BATCHING": "true", "GATEWAY_MAX_PENDING_ROWS": "0"}
    for target, extra in gateways.items():
        port = free_port()
        settings = {
            "MLFLOW_TRACKING_URI": tracking,
            "GATEWAY_MODELS": f"{MODEL}=http://127.0.0.1:{onnx_port}",
            "GATEWAY_PORT": str(port),
            "GATEWAY_HOST": "127.0.0.1",
            "MONITORING_DB_URI": monitoring,
            **extra,
        }
        gateway = procs.start(target, [sys.executable, "-m", "services.gateway"], settings)
        wait_http(f"http://127.0.0.1:{port}/health", gateway, 120, target)
        urls[target] = f"http://127.0.0.1:{port}/models/{MODEL}/invocations"
        urls[f"{target}-metrics"] = f"http://127.0.0.1:{port}/metrics"
        urls[f"{target}-pid"] = str(gateway.pid)
    urls["model"] = f"{MODEL} v{version.version} ({version.tags.get('model', '?')})"
    urls["model-uri"] = f"models:/{MODEL}/{version.version}"
    urls["sklearn-uri"] = version.tags["sklearn_model_uri"]
    urls["tracking"] = tracking
    return urls


def model_server_mib(pid: int, launcher: bool) -> float:
    """Resident memory of a model server, `mlflow models serve` and its uvicorn worker, in MiB;
    under a serving launcher (`pid`), the launcher's own is left out (`launcher_mib`)."""
    root = psutil.Process(pid)
    total = 0
    for proc in [*([] if launcher else [root]), *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):  # a worker may have just exited
            total += proc.memory_info().rss
    return total / 2**20


def launcher_mib(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss / 2**20)


def gateway_overhead_p50_ms(metrics_url: str) -> float:
    """p50 of the gateway's own time per request (total minus upstream), from its histogram."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "gateway_overhead_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
    bounds = sorted(buckets)
    total, half = buckets[bounds[-1]], buckets[bounds[-1]] / 2
    lower, below = 0.0, 0.0
    for bound in bounds:  # linear interpolation inside the bucket holding the median
        if buckets[bound] >= half:
            return 1000 * (lower + (bound - lower) * (half - below) / max(buckets[bound] - below, 1e-9))
        lower, below = bound, buckets[bound]
    return float("nan") if total == 0 else 1000 * bounds[-2]


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return f"{os.cpu_count()} cores ({cpu}), {mem_kb / 2**20:.0f} GiB, {platform.platform()}"


@dataclass
class Paired:
    """Latencies (seconds) of one client taking turns between targets; index i is cycle i."""

    latencies: dict[str, np.ndarray]

    def row(self, target: str) -> str:
        values = self.latencies[target] * 1000
        p50, p99 = np.percentile(values, [50, 99])
        return (
            f"| {target} | {len(values)} | {p50:.2f} | {p99:.2f} | {values.mean():.2f} "
            f"| {1000 / values.mean():.1f} |"
        )

    def p50_ms(self, target: str) -> float:
        return float(np.percentile(self.latencies[target], 50) * 1000)

    def versus(
        self, target: str, baseline: str, resamples: int = 2000
    ) -> tuple[float, float, tuple[float, ...]]:
        """(added p50 ms, throughput kept %, 95% bootstrap bounds of both) of `target` against
        `baseline`, resampling cycles."""
        direct, other = self.latencies[baseline], self.latencies[target]
        n = min(len(direct), len(other))
        direct, other = direct[:n], other[:n]
        rng = np.random.default_rng(0)
        picks = rng.integers(0, n, size=(resamples, n))
        added = 1000 * (np.median(other[picks], axis=1) - np.median(direct[picks], axis=1))
        kept = 100 * direct[picks].mean(axis=1) / other[picks].mean(axis=1)
        bounds = (*np.percentile(added, [2.5, 97.5]), *np.percentile(kept, [2.5, 97.5]))
        return (
            1000 * float(np.median(other) - np.median(direct)),
            100 * float(direct.mean() / other.mean()),
            tuple(float(b) for b in bounds),
        )


def run_paired(urls: dict[str, str], body: str, seconds: int, workdir: Path) -> Paired:
    body_file = workdir / "body.json"
    body_file.write_text(body)
    cmd = [sys.executable, "-m", "tests.bench.paired_client", "--seconds", str(seconds)]
    cmd += ["--body-file", str(body_file), *(urls[t] for t in TARGETS)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, timeout=seconds + 120)
    by_url = json.loads(out.stdout)
    return Paired({t: np.array(by_url[urls[t]]) for t in TARGETS})


def spread(values: Sequence[float], fmt: str) -> str:
    """median [min .. max]"""
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}} .. {max(values):{fmt}}]"


def throughput_ratios(rounds: list[Result], target: str, baseline: str) -> list[float]:
    """target / baseline requests per second, round by round."""
    runs = {(r.target, r.round): r for r in rounds}
    count = 1 + max(r.round for r in rounds)
    return [runs[(target, i)].rps / runs[(baseline, i)].rps for i in range(count)]


def report(
    paired: Paired,
    rounds: list[Result],
    urls: dict[str, str],
    args: argparse.Namespace,
    own: dict[str, float],
    memory: dict[str, float],
    profile: str,
) -> str:
    hop, hop_kept, (h_lo, h_hi, k_lo, k_hi) = paired.versus("gateway", "onnx-direct")
    batch_p50 = paired.p50_ms("gateway-batch")
    speedup = throughput_ratios(rounds, "gateway-batch", "sklearn-direct")
    lines = [
        "## Serving and the prediction gateway (`make bench`)",
        "",
        f"- Command: `make bench` (`-m tests.bench.bench_gateway --paired-seconds {args.paired_seconds}"
        f" --seconds {args.seconds} --rounds {args.rounds}`)",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Machine: {machine()} (shared, noisy: compare rows of the same run only)",
        f"- Model: {urls['model']}, one `mlflow models serve` worker per form, one-row",
        "  `dataframe_records` requests to `/invocations` directly and through the gateway's",
        "  `/models/{name}/invocations`.",
        "- Targets: `sklearn-direct` serves the version's scikit-learn form, `onnx-direct` its ONNX",
        "  form (as registered, through the serving launcher); `gateway` is the gateway in front of",
        "  `onnx-direct` with batching off, `gateway-batch` with adaptive batching (as deployed). Both",
        "  gateways: one uvicorn worker, prediction log to PostgreSQL (drift: the monitor's, from the log),",
        "  `GATEWAY_UPSTREAM_CONCURRENCY=1`.",
        "",
        "| target (issue 10) | measured | target | |",
        "|---|---:|---:|---|",
        f"| 16 clients: `gateway-batch` throughput / `sklearn-direct` (median [min .. max] of rounds)"
        f" | {spread(speedup, '.1f')} x | >= {BATCH_SPEEDUP:.0f} x"
        f" | {met(statistics.median(speedup) >= BATCH_SPEEDUP)} |",
        f"| 1 client: `gateway-batch` p50 | {batch_p50:.2f} ms | <= {BATCH_P50_MS:.0f} ms"
        f" | {met(batch_p50 <= BATCH_P50_MS)} |",
        f"| 1 client: `gateway` adds to `onnx-direct` p50 [95% CI]"
        f" | {hop:+.2f} ms [{h_lo:+.2f} .. {h_hi:+.2f}]"
        f" | <= {HOP_MS:.0f} ms | {met(hop <= HOP_MS)} |",
        "",
        "### 1 client: one closed-loop client taking turns between the targets, request by request",
        "",
        f"{args.paired_seconds} s (`tests/bench/paired_client.py`, a separate process). Throughput of one",
        "closed-loop client is 1 / mean latency.",
        "",
        "| target | requests | p50 ms | p99 ms | mean ms | req/s |",
        "|---|---:|---:|---:|---:|---:|",
        *(paired.row(t) for t in TARGETS),
        "",
        "| target | against | adds to p50 [95% CI] | throughput kept [95% CI] |",
        "|---|---|---:|---:|",
    ]
    for target, baseline in (
        ("onnx-direct", "sklearn-direct"),
        ("gateway", "onnx-direct"),
        ("gateway-batch", "onnx-direct"),
        ("gateway-batch", "gateway"),
    ):
        added, kept, (a_lo, a_hi, k_lo, k_hi) = paired.versus(target, baseline)
        lines.append(
            f"| {target} | {baseline} | {added:+.2f} ms [{a_lo:+.2f} .. {a_hi:+.2f}] "
            f"| {kept:.1f} % [{k_lo:.1f} .. {k_hi:.1f}] |"
        )
    lines += [
        "",
        f"### 16 clients: wrk, {args.rounds} rounds of {args.seconds} s per target, order alternating",
        "",
        "| target | req/s | p50 ms | p99 ms | req/s against sklearn-direct (median [min .. max]) |",
        "|---|---:|---:|---:|---:|",
    ]
    for target in TARGETS:
        mine = [r for r in rounds if r.target == target]
        rps, p50, p99 = (statistics.median(getattr(r, f) for r in mine) for f in ("rps", "p50_ms", "p99_ms"))
        ratio = spread(throughput_ratios(rounds, target, "sklearn-direct"), ".1f")
        lines.append(f"| {target} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {ratio} x |")
    lines += [
        "",
        "The gateway's own time per request (its `gateway_overhead_seconds` histogram over the whole run:",
        "from the request entering the app to the answer being ready, minus the model server's time), p50: "
        + ", ".join(f"{target} {ms:.3f} ms" for target, ms in own.items())
        + ".",
        "",
        "Reading it: compiled, the model's own work is the smallest part of a call (the profile below:",
        "well under a millisecond of predict inside a few milliseconds of `invocations()`). The rest is",
        "`mlflow models serve`'s work per call: the DataFrame, signature enforcement, FastAPI's",
        "middleware and a hop to a worker thread. So one client stays at several milliseconds, while",
        "batching multiplies throughput: 16 rows cost about what one does. The gateway sends its rows",
        "in the `inputs` format, cheaper for the model server to parse than the clients'",
        "`dataframe_records`, which more than pays for the hop at one client.",
        "",
        "### Memory of a model server (resident, after the runs)",
        "",
        "`mlflow models serve` and its one uvicorn worker, each serving one form of the same version.",
        f"A serving container adds its launcher ({memory['launcher']:.0f} MiB: the MLflow client that",
        "watches the alias).",
        "",
        "| form | MiB |",
        "|---|---:|",
        f"| scikit-learn | {memory['sklearn-direct']:.0f} |",
        f"| ONNX | {memory['onnx-direct']:.0f} |",
        "",
        profile,
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str, title: str) -> None:
    """Put `section` (a "## " heading and its text) in `path` in place of the section with the same
    heading, keeping every other section (the closed loop's, from `make e2e`; the hand-written
    ones); appended when there is none, under `title` when the file is new."""
    heading = section.split("\n", 1)[0]
    existing = path.read_text() if path.exists() else f"{title}\n\n"
    start = existing.find(f"\n{heading}\n")
    if start < 0:
        path.write_text(existing.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n")
        return
    after = existing.find("\n## ", start + 1)
    rest = "" if after < 0 else existing[after:]
    path.write_text(existing[: start + 1] + section.rstrip("\n") + "\n" + rest)


def metric_total(metrics_url: str, name: str) -> float:
    """The sum of a metric's samples, all labels, from a /metrics page."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def load_and_overload(
    urls: dict[str, str], body: str, args: argparse.Namespace, workdir: Path
) -> tuple[load.Hold, list[load.Overload]]:
    """tests/bench/load.py on this stack: capacity held through `gateway-batch`, then overload
    against it and against `gateway-unbounded`, at 2x and 8x the pending-row limit."""

    def memory() -> dict[str, float]:
        return {
            "gateway": model_server_mib(int(urls["gateway-batch-pid"]), launcher=False),
            "model server (with its launcher)": model_server_mib(
                int(urls["onnx-direct-pid"]), launcher=False
            ),
        }

    print(f"bench: capacity held, {load.HOLD_CLIENTS} clients for {args.hold_seconds} s")
    held = load.hold(
        urls["gateway-batch"],
        body,
        args.hold_seconds,
        workdir,
        memory,
        lambda: metric_total(urls["gateway-batch-metrics"], "gateway_prediction_log_dropped_total"),
    )
    rows = json.dumps(
        {
            "dataframe_records": synthetic.generate(load.OVERLOAD_ROWS, seed=4)[list(FEATURE_NAMES)].to_dict(
                orient="records"
            )
        }
    )
    overloads = []
    for times in load.OVERLOAD_TIMES:
        clients = times * PENDING_ROWS_LIMIT // load.OVERLOAD_ROWS
        for gateway, target in (("bounded", "gateway-batch"), ("unbounded", UNBOUNDED)):
            run = load.overload(urls[target], rows, body, gateway, clients, args.overload_seconds, workdir)
            overloads.append(run)
            # What the clients left queued is still answered (to nobody): wait, or it slows the next run.
            deadline = time.monotonic() + 120
            while metric_total(urls[f"{target}-metrics"], "gateway_requests_in_flight") > 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{target} still has requests in flight 120 s after the overload")
                time.sleep(0.5)
            print(
                f"bench: overload {gateway:9} {clients * load.OVERLOAD_ROWS:6} rows offered:"
                f" {run.load.ok / run.load.seconds:6.0f} answered/s, {run.load.shed / run.load.seconds:6.0f}"
                f" refused/s, probe p99 {load.p(run.probe.answered + run.probe.shed, 0.99):.0f} ms"
            )
    return held, overloads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paired-seconds", type=int, default=90, help="1-client paired run (max 300)")
    parser.add_argument("--seconds", type=int, default=5, help="length of each 16-client wrk run (max 60)")
    parser.add_argument("--rounds", type=int, default=6, help="16-client rounds over every target (max 20)")
    parser.add_argument("--hold-seconds", type=int, default=60, help="capacity held (max 120)")
    parser.add_argument("--overload-seconds", type=int, default=10, help="each overload run (max 30)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--reliability-out", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench: error: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    args.paired_seconds = min(args.paired_seconds, 300)
    args.seconds, args.rounds = min(args.seconds, 60), min(args.rounds, 20)
    args.hold_seconds, args.overload_seconds = min(args.hold_seconds, 120), min(args.overload_seconds, 30)
    body = json.dumps(
        {"dataframe_records": synthetic.generate(1, seed=3)[list(FEATURE_NAMES)].to_dict(orient="records")}
    )
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        procs = Processes(log_dir=base / "logs")
        try:
            urls = start_stack(procs, base)
            for target in TARGETS:  # warm-up
                run_wrk(urls[target], body, 1, 2, base)
            print(f"bench: 1 client, taking turns between {', '.join(TARGETS)} for {args.paired_seconds} s")
            paired = run_paired(urls, body, args.paired_seconds, base)
            for target in TARGETS:
                print(f"bench: {paired.row(target)}")
            rounds = []
            for i in range(args.rounds):
                for target in TARGETS if i % 2 == 0 else TARGETS[::-1]:
                    rps, p50, p99 = run_wrk(urls[target], body, 16, args.seconds, base)
                    rounds.append(Result(target, 16, i, rps, p50, p99))
                    print(
                        f"bench: round {i + 1}/{args.rounds} 16 clients {target:15} {rps:7.0f} req/s"
                        f" p50 {p50:.2f} p99 {p99:.2f} ms"
                    )
            own = {target: gateway_overhead_p50_ms(urls[f"{target}-metrics"]) for target in GATEWAYS}
            memory = {
                "sklearn-direct": model_server_mib(int(urls["sklearn-direct-pid"]), launcher=False),
                "onnx-direct": model_server_mib(int(urls["onnx-direct-pid"]), launcher=True),
                "launcher": launcher_mib(int(urls["onnx-direct-pid"])),
            }
            held, overloads = load_and_overload(urls, body, args, base)
            print("bench: where a model server's time goes (in process)")
            profile = serving_profile.report(urls["sklearn-uri"], urls["model-uri"])
        finally:
            procs.stop_all()
    write_section(args.out, report(paired, rounds, urls, args, own, memory, profile), "# Benchmarks")
    command = f"make bench (--hold-seconds {args.hold_seconds} --overload-seconds {args.overload_seconds})"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    section = load.report(held, overloads, PENDING_ROWS_LIMIT, command, when, machine())
    write_section(args.reliability_out, section, "# Reliability")
    print(f"bench: results written to {args.out} and {args.reliability_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
