"""Load and overload through the gateway, as deployed (`make bench`; docs/reliability.md's figures).

Run by tests/bench/bench_gateway.py on its stack, after its own measurements (so everything is warm):

- Hold: 16 closed-loop clients (wrk, one-row requests) against the gateway with batching, the
  platform's measured capacity (docs/benchmarks.md), for `hold_s`. Every answer must be a 200 with no
  socket error, the prediction log drops nothing, and the resident memory of the gateway and of the
  model server is taken at the start, halfway and at the end: bounded buffers (the prediction log's)
  fill in the first half, so a leak shows as growth in the second.
- Overload: more rows in flight than GATEWAY_MAX_PENDING_ROWS allows (2x and 8x its default), from
  wrk clients sending 16-row requests, against that gateway and against the same gateway with no
  limit (`GATEWAY_MAX_PENDING_ROWS=0`); refused clients wait as Retry-After says. Meanwhile a probe
  sends one one-row request at a time and records what a newcomer gets: an answer, or a 503 with
  Retry-After, and how fast. Without the limit the wait grows with the offered load; with it, it
  stays bounded and the excess is refused at once.
"""

from __future__ import annotations

import http.client
import math
import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench import wrk
from tests.bench.wrk import Wrk, met

HOLD_CLIENTS = 16
OVERLOAD_ROWS = 16  # rows per request of the overloading clients
OVERLOAD_TIMES = (2, 8)  # rows offered, times GATEWAY_MAX_PENDING_ROWS
GROWTH_MIB = 10.0  # resident memory may move this much (allocator noise) and still count as flat
GROWTH_SHARE = 0.05  # or this share of it


@dataclass
class Probe:
    """One client sending one request at a time while the load runs: what a newcomer gets."""

    url: str
    body: bytes
    answered: list[float] = field(default_factory=list)  # ms
    shed: list[float] = field(default_factory=list)  # ms, 503 with Retry-After
    other: list[str] = field(default_factory=list)

    def run(self, stop: threading.Event) -> None:
        host, port = re.match(r"http://([^:/]+):(\d+)", self.url).groups()  # type: ignore[union-attr]
        path = self.url.split(f":{port}", 1)[1]
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        while not stop.wait(0.05):
            started = time.perf_counter()
            try:
                conn.request("POST", path, self.body, {"Content-Type": "application/json"})
                answer = conn.getresponse()
                answer.read()
            except (OSError, http.client.HTTPException) as exc:
                self.other.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                continue
            ms = 1000 * (time.perf_counter() - started)
            if answer.status == 200:
                self.answered.append(ms)
            elif answer.status == 503 and answer.getheader("Retry-After"):
                self.shed.append(ms)
            else:
                self.other.append(f"HTTP {answer.status}")
        conn.close()


def p(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, nan when there are none."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q * 100) - 1))]


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


@dataclass
class Overload:
    gateway: str
    clients: int
    load: Wrk
    probe: Probe


def overload(
    url: str, body: str, probe_body: str, gateway: str, clients: int, seconds: int, workdir: Path
) -> Overload:
    probe = Probe(url, probe_body.encode())
    stop = threading.Event()
    thread = threading.Thread(target=probe.run, args=(stop,), daemon=True)
    thread.start()
    try:
        load = wrk.run(url, body, clients, seconds, workdir, honour_retry_after=True)
    finally:
        stop.set()
        thread.join(90)
    return Overload(gateway, clients, load, probe)


@dataclass
class Hold:
    load: Wrk
    memory: list[dict[str, float]]  # MiB by process, at the start, halfway and at the end
    dropped: float

    def flat(self, what: str) -> bool:
        """No growth in the second half (the first half fills the bounded buffers)."""
        _, half, end = (sample[what] for sample in self.memory)
        return end - half <= max(GROWTH_MIB, GROWTH_SHARE * half)


def hold(
    url: str,
    body: str,
    seconds: int,
    workdir: Path,
    memory: Callable[[], dict[str, float]],
    dropped: Callable[[], float],
) -> Hold:
    samples = [memory()]
    halfway = threading.Timer(seconds / 2, lambda: samples.append(memory()))
    halfway.start()
    try:
        load = wrk.run(url, body, HOLD_CLIENTS, seconds, workdir, statuses=True)
    finally:
        halfway.join()
    return Hold(load, [*samples, memory()], dropped())


def report(held: Hold, runs: list[Overload], limit: int, command: str, when: str, machine: str) -> str:
    load = held.load
    errors = load.shed + load.other + load.socket_errors
    lines = [
        "## Load and overload through the gateway (`make bench`)",
        "",
        f"- Command: `{command}`; tests/bench/load.py",
        f"- Date: {when}",
        f"- Machine: {machine} (shared, noisy)",
        "- The gateway as deployed (adaptive batching, one worker, prediction log to PostgreSQL) in front",
        "  of the ONNX form of the latency model (`mlflow models serve`, one worker).",
        "",
        f"### Capacity held: {HOLD_CLIENTS} clients for {load.seconds:.0f} s",
        "",
        "| | measured | target | |",
        "|---|---:|---:|---|",
        f"| requests answered 200 | {load.ok} ({load.ok / load.seconds:.0f} req/s) | | |",
        f"| errors (non-200 answers, socket errors) | {errors} | 0 | {met(errors == 0)} |",
        f"| prediction-log rows dropped (`gateway_prediction_log_dropped_total`) | {held.dropped:.0f} | 0"
        f" | {met(held.dropped == 0)} |",
        f"| latency p50 / p99 | {load.p50_ms:.1f} / {load.p99_ms:.1f} ms | | |",
    ]
    for what in held.memory[0]:
        start, half, end = (sample[what] for sample in held.memory)
        lines.append(
            f"| resident memory, {what}: start, halfway, end | {start:.0f}, {half:.0f}, {end:.0f} MiB"
            f" | flat in the second half (within {GROWTH_MIB:.0f} MiB or {GROWTH_SHARE:.0%})"
            f" | {met(held.flat(what))} |"
        )
    lines += [
        "",
        f"### Beyond capacity: {OVERLOAD_ROWS}-row requests from many clients,"
        f" {runs[0].load.seconds:.0f} s each",
        "",
        f"`bounded` is the gateway as deployed (`GATEWAY_MAX_PENDING_ROWS={limit}`), `unbounded` the same",
        "with no limit. Rows offered: clients x rows, all in flight at once (closed loop); a client",
        "refused with 503 waits as its `Retry-After` says. Both gateways also keep their prediction",
        "log, whose admission (`LOG_BUFFER_MAX`, 10000 rows reserved) refuses beyond it either way.",
        "The probe sends one one-row request at a time meanwhile: what a newcomer gets.",
        "",
        "| gateway | rows offered | answered req/s | refused 503 req/s (with Retry-After) | other"
        " | all answers p50 / p99 ms | probe: answered p50 / p99 ms | probe: refused p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        w, pr = run.load, run.probe
        lines.append(
            f"| {run.gateway} | {run.clients * OVERLOAD_ROWS} | {w.ok / w.seconds:.0f}"
            f" | {w.shed / w.seconds:.0f} ({w.retry_after / w.seconds:.0f})"
            f" | {w.other + w.socket_errors + len(pr.other)}"
            f" | {w.p50_ms:.0f} / {w.p99_ms:.0f} | {ms(p(pr.answered, 0.5))} / {ms(p(pr.answered, 0.99))}"
            f" | {ms(p(pr.shed, 0.99))} |"
        )
    bounded = [r for r in runs if r.gateway == "bounded"]
    unbounded = [r for r in runs if r.gateway == "unbounded"]

    def newcomer(run: Overload) -> float:  # p99 of the probe's first tries, answered or refused
        return p(run.probe.answered + run.probe.shed, 0.99)

    pairs = [(newcomer(b), newcomer(u)) for b, u in zip(bounded, unbounded, strict=True)]
    failures = sum(r.load.other + r.load.socket_errors + len(r.probe.other) for r in bounded)
    every_503_says_when = all(r.load.shed == r.load.retry_after for r in runs)
    lines += [
        "",
        "| overload (issue 12) | measured | target | |",
        "|---|---:|---:|---|",
        "| a newcomer's p99, bounded vs unbounded, at "
        + " and ".join(f"{t}x" for t in OVERLOAD_TIMES)
        + " | "
        + "; ".join(f"{b:.0f} vs {u:.0f} ms" for b, u in pairs)
        + f" | lower with the limit | {met(all(b < u for b, u in pairs))} |",
        f"| a newcomer's p99 at {OVERLOAD_TIMES[-1]}x against at {OVERLOAD_TIMES[0]}x: bounded; unbounded"
        f" | {pairs[-1][0] / pairs[0][0]:.1f} x; {pairs[-1][1] / pairs[0][1]:.1f} x | | |",
        f"| every 503 carries Retry-After | {'yes' if every_503_says_when else 'no'} | yes"
        f" | {met(every_503_says_when)} |",
        f"| other failures (not 200, not 503) | {failures} | 0 | {met(failures == 0)} |",
        "",
        "The limit: with the default `GATEWAY_MAX_PENDING_ROWS` a newcomer waits at most for the rows",
        "ahead of it, about the limit divided by the model server's rows per second; whatever arrives",
        "beyond that is answered 503 with `Retry-After` at once, without a model call. Clients that",
        "honour `Retry-After` bring the offered load back under capacity.",
        "",
    ]
    return "\n".join(lines)
