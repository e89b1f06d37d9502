"""schemathesis against a live service: one way to fuzz every HTTP service of ours.

`fuzz` runs the `st` command of this venv against a service's `/openapi.json` with every check
(not_a_server_error, status code, content type, headers and response schema conformance, negative
data rejection, positive data acceptance, unsupported methods, ignored authentication: a route
declared to need the control token must refuse a call without it, ...), a fixed seed and a fixed number
of examples per operation, so a run is repeatable and bounded in time. It fails the calling test
with schemathesis' own report (each failure with a curl line to reproduce it).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import python_env

ST = Path(sys.executable).parent / "st"
# What a service answers to data its description forbids. schemathesis' default list lacks 413 (the
# gateway's answer to more rows than its maxItems) and 409 (the orchestrator's "busy").
REJECTED = (400, 404, 405, 413, 415, 422)


@dataclass(frozen=True)
class Fuzzed:
    """What one run did: test cases generated and seconds taken (docs/reliability.md's figures)."""

    cases: int
    seconds: float


def fuzz(
    base_url: str,
    workdir: Path,
    *,
    max_examples: int,
    seed: int = 8,
    rejected: Iterable[int] = REJECTED,
    timeout_s: float = 600,
    headers: Mapping[str, str] | None = None,
) -> Fuzzed:
    """Run schemathesis with all checks against `base_url`/openapi.json, sending `headers` (e.g. the
    control token: a test's own, never a stack's secret) with every request; fail the test on any
    failure."""
    config = workdir / "schemathesis.toml"
    config.write_text(f"[checks.negative_data_rejection]\nexpected-statuses = {sorted(set(rejected))}\n")
    command = [
        str(ST), "--config-file", str(config),
        "run", f"{base_url}/openapi.json", "--checks", "all",
        "--max-examples", str(max_examples), "--seed", str(seed), "--workers", "1",
        "--generation-database", "none", "--no-color",
        *(arg for name, value in (headers or {}).items() for arg in ("--header", f"{name}: {value}")),
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=timeout_s, env=python_env()
    )
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    found = re.search(r"Test cases:\s*(\d+) generated", done.stdout)
    assert found, f"no test case count in schemathesis' report:\n{done.stdout[-2000:]}"
    result = Fuzzed(int(found.group(1)), seconds)
    print(f"schemathesis: {result.cases} test cases against {base_url} in {seconds:.1f} s")
    return result
