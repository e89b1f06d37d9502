"""Realistic, bounded traffic through the gateway: what the workshop's dashboards and alerts feed on.

Each request asks one model (alternating) for a batch of 1..5 rows from the seeded generator
(`trainer.data.generate`, drifted with `--drift`). The gateway answers with one request id per row;
after `--feedback-delay` seconds the true value of a share of those rows goes back as feedback, as
a real system learns the outcome later. Predictions are paced at `--rate` per second by one thread
and sent by a small pool of workers; feedback is sent by another thread.
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests

from contracts import synthetic
from contracts.models import MODELS
from contracts.schema import FEATURE_NAMES

MAX_DURATION_S = 3600
MAX_BATCH_ROWS = 5
REPORT_EVERY_S = 10.0
FEEDBACK_BATCH = 500  # feedback values per request at most
TIMEOUT_S = 10.0

# status (0: no answer), parsed JSON body (None if none), seconds
Response = tuple[int, Any, float]
Post = Callable[[str, dict[str, Any]], Response]


def model_targets() -> dict[str, str]:
    """Registered model name -> the generator column it predicts (contracts.models)."""
    return {m.name: m.target for m in MODELS}


class RowSource:
    """An endless, seeded stream of generated rows (features and both targets)."""

    def __init__(self, seed: int, drift: float = 0.0, chunk: int = 2000, busy_links: float = 0.0) -> None:
        self.seed, self.drift, self.chunk, self.busy_links = seed, drift, chunk, busy_links
        self._rows: Iterator[dict[str, Any]] = iter(())
        self._chunks = 0

    def take(self, n: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < n:
            row = next(self._rows, None)
            if row is None:
                frame = synthetic.generate(
                    self.chunk, seed=self.seed + self._chunks, drift=self.drift, busy_links=self.busy_links
                )
                self._rows = iter(frame.to_dict(orient="records"))
                self._chunks += 1
                continue
            out.append(row)
        return out


@dataclass
class Batch:
    """One predict request: the rows without targets, and the true values kept for feedback."""

    model: str
    records: list[dict[str, Any]]
    actuals: list[float]

    def payload(self) -> dict[str, Any]:
        return {"records": self.records}


def build_batch(rows: list[dict[str, Any]], model: str, target: str) -> Batch:
    records = [{name: row[name] for name in FEATURE_NAMES} for row in rows]
    return Batch(model, records, [float(row[target]) for row in rows])


def feedback_payload(items: list[tuple[str, float]]) -> dict[str, Any]:
    return {"feedback": [{"request_id": rid, "actual": actual} for rid, actual in items]}


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    model: str = field(compare=False)
    request_id: str = field(compare=False)
    actual: float = field(compare=False)


class FeedbackQueue:
    """Outcomes waiting to be reported: a share of the rows, each due `delay` seconds after its answer."""

    def __init__(self, delay: float, share: float, seed: int = 0) -> None:
        if delay < 0 or not 0 <= share <= 1:
            raise ValueError("delay must be >= 0 and share within 0..1")
        self.delay, self.share = delay, share
        self._rng = random.Random(seed)
        self._heap: list[_Due] = []
        self._seq = 0
        self._lock = threading.Lock()

    def add(self, now: float, model: str, request_ids: list[str], actuals: list[float]) -> int:
        """Schedule feedback for the chosen share of the rows; returns how many were scheduled."""
        if len(request_ids) != len(actuals):
            raise ValueError(f"{len(request_ids)} request ids for {len(actuals)} rows")
        added = 0
        with self._lock:
            for rid, actual in zip(request_ids, actuals, strict=True):
                if self.share < 1 and self._rng.random() >= self.share:
                    continue
                self._seq += 1
                heapq.heappush(self._heap, _Due(now + self.delay, self._seq, model, str(rid), actual))
                added += 1
        return added

    def pop_due(self, now: float) -> dict[str, list[tuple[str, float]]]:
        """Remove and return everything due at `now`, grouped by model, oldest first."""
        due: dict[str, list[tuple[str, float]]] = {}
        with self._lock:
            while self._heap and self._heap[0].at <= now:
                item = heapq.heappop(self._heap)
                due.setdefault(item.model, []).append((item.request_id, item.actual))
        return due

    def next_due(self) -> float | None:
        with self._lock:
            return self._heap[0].at if self._heap else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._heap)


@dataclass
class Stats:
    """Counters for the periodic summary; thread-safe."""

    sent: int = 0
    errors: int = 0
    feedback: int = 0
    feedback_errors: int = 0
    _window: list[float] = field(default_factory=list)
    _all: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, ok: bool, seconds: float) -> None:
        with self._lock:
            self.sent += 1
            self.errors += not ok
            if ok:
                self._window.append(seconds)
                self._all.append(seconds)

    def feedback_sent(self, n: int, ok: bool) -> None:
        with self._lock:
            if ok:
                self.feedback += n
            else:
                self.feedback_errors += n

    def line(self, elapsed: float, final: bool = False) -> str:
        """One summary line; p50 over the requests since the last line (all of them when final)."""
        with self._lock:
            latencies = self._all if final else self._window
            p50 = f"{np.percentile(latencies, 50) * 1000:.1f}" if latencies else "-"
            self._window = []
            return (
                f"{'done' if final else 'simulate'}: {elapsed:5.0f} s  sent {self.sent}  errors {self.errors}"
                f"  p50 {p50} ms  feedback {self.feedback} (errors {self.feedback_errors})"
            )


def _http_post() -> Post:
    """requests with one session per thread (sessions are not thread-safe)."""
    local = threading.local()

    def post(url: str, body: dict[str, Any]) -> Response:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        started = time.perf_counter()
        try:
            response = session.post(url, json=body, timeout=TIMEOUT_S)
        except requests.RequestException:
            return 0, None, time.perf_counter() - started
        elapsed = time.perf_counter() - started
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        return response.status_code, parsed, elapsed

    return post


@dataclass
class Options:
    gateway: str = "http://localhost:8000"
    rate: float = 10.0
    duration: float = 300.0
    requests: int | None = None
    drift: float = 0.0
    busy_links: float = 0.0
    seed: int = 7
    feedback_delay: float = 5.0
    feedback_share: float = 1.0
    workers: int = 8


class Simulator:
    """Paces predict requests, schedules and sends feedback, prints a line every REPORT_EVERY_S."""

    def __init__(
        self,
        options: Options,
        post: Post | None = None,
        out: Callable[[str], None] = print,
        models: dict[str, str] | None = None,
    ) -> None:
        self.opt = options
        self.post = post or _http_post()
        self.out = out
        self.models = list((models or model_targets()).items())
        self.rows = RowSource(options.seed, options.drift, busy_links=options.busy_links)
        self.batch_sizes = random.Random(options.seed)
        self.feedback = FeedbackQueue(options.feedback_delay, options.feedback_share, options.seed)
        self.stats = Stats()
        self.stop = threading.Event()  # set by Ctrl-C: stop now, drop pending feedback
        self._sending_done = threading.Event()
        self._missing_ids_warned = False
        self._started = self._next_report = 0.0

    def url(self, model: str, endpoint: str) -> str:
        return f"{self.opt.gateway.rstrip('/')}/models/{model}/{endpoint}"

    def next_batch(self, i: int) -> Batch:
        model, target = self.models[i % len(self.models)]
        return build_batch(self.rows.take(self.batch_sizes.randint(1, MAX_BATCH_ROWS)), model, target)

    def send(self, batch: Batch) -> None:
        status, body, seconds = self.post(self.url(batch.model, "predict"), batch.payload())
        ok = 200 <= status < 300
        self.stats.request(ok, seconds)
        if not ok or self.opt.feedback_share == 0:
            return
        ids = body.get("request_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or len(ids) != len(batch.actuals):
            if not self._missing_ids_warned:
                self._missing_ids_warned = True
                self.out(f"simulate: warning: no request_ids for {len(batch.actuals)} rows in {body!r:.200}")
            return
        self.feedback.add(time.monotonic(), batch.model, ids, batch.actuals)

    def send_feedback_due(self, now: float) -> None:
        for model, items in self.feedback.pop_due(now).items():
            for start in range(0, len(items), FEEDBACK_BATCH):
                chunk = items[start : start + FEEDBACK_BATCH]
                status, _, _ = self.post(self.url(model, "feedback"), feedback_payload(chunk))
                self.stats.feedback_sent(len(chunk), 200 <= status < 300)

    def _feedback_loop(self) -> None:
        while not self.stop.is_set():
            self.send_feedback_due(time.monotonic())
            if self._sending_done.is_set() and len(self.feedback) == 0:
                return
            due = self.feedback.next_due()
            wait = 0.2 if due is None else min(max(due - time.monotonic(), 0.0), 0.2)
            self.stop.wait(wait)

    def run(self) -> Stats:
        """Send until the duration or request count is reached (or `stop` is set), then the feedback."""
        opt = self.opt
        total = opt.requests if opt.requests is not None else int(opt.duration * opt.rate)
        slots = threading.BoundedSemaphore(opt.workers)  # at most `workers` requests in flight
        feedback_thread = threading.Thread(target=self._feedback_loop, name="feedback", daemon=True)
        feedback_thread.start()
        self._started = time.monotonic()
        self._next_report = self._started + REPORT_EVERY_S

        def task(batch: Batch) -> None:
            try:
                self.send(batch)
            finally:
                slots.release()

        with ThreadPoolExecutor(opt.workers, thread_name_prefix="predict") as pool:
            for i in range(total):
                due = self._started + i / opt.rate
                while not self.stop.is_set() and (left := due - time.monotonic()) > 0:
                    self.stop.wait(min(left, 1.0))
                    self._report()
                # at most `workers` in flight: when the gateway is slower than the rate, wait here
                while not self.stop.is_set() and not slots.acquire(timeout=1.0):
                    self._report()
                if self.stop.is_set():
                    break
                pool.submit(task, self.next_batch(i))
                self._report()
        self._sending_done.set()
        # Normal end: wait until the last feedback is due and sent; Ctrl-C (stop) skips it.
        while feedback_thread.is_alive() and not self.stop.wait(0.5):
            self._report(f"  (feedback pending: {len(self.feedback)})")
        self.out(self.stats.line(time.monotonic() - self._started, final=True))
        return self.stats

    def _report(self, suffix: str = "") -> None:
        now = time.monotonic()
        if now >= self._next_report:
            self.out(self.stats.line(now - self._started) + suffix)
            self._next_report += REPORT_EVERY_S


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m services.simulate",
        description="Send realistic prediction traffic and delayed feedback to the gateway (Ctrl-C stops).",
    )
    parser.add_argument(
        "--gateway",
        default=os.environ.get("GATEWAY_URL", "http://localhost:8000"),
        help="gateway URL (default: $GATEWAY_URL or http://localhost:8000)",
    )
    parser.add_argument(
        "--rate", type=float, default=10.0, help="requests per second, all models (default 10)"
    )
    parser.add_argument(
        "--duration", type=float, default=300.0, help=f"seconds (default 300, at most {MAX_DURATION_S})"
    )
    parser.add_argument("--requests", type=int, help="send this many requests instead of --duration")
    parser.add_argument(
        "--drift", type=float, default=0.0, help="generator drift, 0 none .. 1 strong (default 0)"
    )
    parser.add_argument(
        "--busy-links",
        type=float,
        default=0.0,
        help="hotter links only, 0 none .. 1 strong: harmful to latency, little feature drift (default 0)",
    )
    parser.add_argument("--seed", type=int, default=7, help="data and batch-size seed (default 7)")
    parser.add_argument(
        "--feedback-delay", type=float, default=5.0, help="seconds until feedback (default 5)"
    )
    parser.add_argument(
        "--feedback-share", type=float, default=1.0, help="share of rows that get feedback, 0..1 (default 1)"
    )
    parser.add_argument("--workers", type=int, default=8, help="requests in flight at most (default 8)")
    args = parser.parse_args(argv)
    if not 0 < args.rate <= 500:
        parser.error("--rate must be within (0, 500]")
    if not 0 < args.duration <= MAX_DURATION_S:
        parser.error(f"--duration must be within (0, {MAX_DURATION_S}] seconds (a bounded demo)")
    if args.requests is not None and not 0 < args.requests <= MAX_DURATION_S * args.rate:
        parser.error(f"--requests must be within 1..{int(MAX_DURATION_S * args.rate)} (one hour at --rate)")
    if args.drift < 0:
        parser.error("--drift must be >= 0")
    if args.busy_links < 0:
        parser.error("--busy-links must be >= 0")
    if not 0 <= args.feedback_share <= 1:
        parser.error("--feedback-share must be within 0..1")
    if args.feedback_delay < 0 or args.feedback_delay > 600:
        parser.error("--feedback-delay must be within 0..600 seconds")
    if not 1 <= args.workers <= 64:
        parser.error("--workers must be within 1..64")
    return Options(
        gateway=args.gateway,
        rate=args.rate,
        duration=args.duration,
        requests=args.requests,
        drift=args.drift,
        busy_links=args.busy_links,
        seed=args.seed,
        feedback_delay=args.feedback_delay,
        feedback_share=args.feedback_share,
        workers=args.workers,
    )


def gateway_reachable(gateway: str) -> str | None:
    """None if the gateway answers /metrics, else why not."""
    try:
        response = requests.get(f"{gateway.rstrip('/')}/metrics", timeout=5)
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if response.status_code == 200 else f"GET /metrics answered {response.status_code}"


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    problem = gateway_reachable(options.gateway)
    if problem:
        print(
            f"simulate: error: the gateway at {options.gateway} does not answer ({problem:.200}); "
            "start the stack (make up) or pass --gateway",
            file=sys.stderr,
        )
        return 1
    amount = f"{options.requests} requests" if options.requests else f"{options.duration:.0f} s"
    print(
        f"simulate: {amount} at {options.rate:g} req/s to {options.gateway}, drift {options.drift:g}, "
        f"busy links {options.busy_links:g}, "
        f"feedback for {options.feedback_share:.0%} of rows after {options.feedback_delay:g} s "
        "(Ctrl-C stops)",
        flush=True,
    )
    simulator = Simulator(options, out=lambda line: print(line, flush=True))
    runner = threading.Thread(target=simulator.run, name="simulate")
    runner.start()
    try:
        while runner.is_alive():
            runner.join(0.5)
    except KeyboardInterrupt:
        print("simulate: stopping (pending feedback is dropped)", flush=True)
        simulator.stop.set()
        runner.join()
    stats = simulator.stats
    if stats.sent and stats.errors == stats.sent:
        print("simulate: error: every request failed; see the gateway's logs", file=sys.stderr)
        return 1
    return 0
