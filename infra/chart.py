#!/usr/bin/env python3
"""`make chart-sync`: the chart's copies of what the compose stack reads from the repository.

Helm reads nothing outside the chart directory, so charts/mlops-platform/files/ holds:
- `models.yaml`, written from contracts/models.py (the one model list: a serving Deployment each);
- `dashboards/*.json`, byte-for-byte copies of grafana/dashboards/*.json (ConfigMaps for Grafana);
- `rules/*.yml`, byte-for-byte copies of prometheus/rules/*.yml (the PrometheusRule).
The sources stay where compose mounts them; tests/static/test_chart.py fails while a copy differs,
naming this command. `python3 infra/chart.py check` exits 1 then, listing the stale files.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contracts.models import MODELS  # noqa: E402  (the repository root on the path first)

CHART_FILES = ROOT / "charts" / "mlops-platform" / "files"
COPIED = {
    "dashboards": (ROOT / "grafana" / "dashboards", "*.json"),
    "rules": (ROOT / "prometheus" / "rules", "*.yml"),
}


def models_yaml() -> bytes:
    lines = [
        "# Written by `make chart-sync` from contracts/models.py; do not edit (tests/static/test_chart.py).",
        "models:",
        *(f"  - {{name: {m.name}, key: {m.key}, port: {m.port}}}" for m in MODELS),
    ]
    return ("\n".join(lines) + "\n").encode()


def expected_files() -> dict[Path, bytes]:
    """Every file under the chart's files/ folder and the bytes it must hold."""
    files = {CHART_FILES / "models.yaml": models_yaml()}
    for folder, (source, pattern) in COPIED.items():
        for path in sorted(source.glob(pattern)):
            files[CHART_FILES / folder / path.name] = path.read_bytes()
    return files


def stale_files() -> list[Path]:
    """Files that differ from their source, are missing, or have no source any more."""
    expected = expected_files()
    present = {path for path in CHART_FILES.rglob("*") if path.is_file()}
    wrong = [path for path, data in expected.items() if not path.is_file() or path.read_bytes() != data]
    return sorted(set(wrong) | (present - set(expected)))


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "sync"
    if command == "check":
        stale = stale_files()
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)}", file=sys.stderr)
        if stale:
            print(
                "error: the chart's copies differ from their sources: run `make chart-sync`", file=sys.stderr
            )
        return 1 if stale else 0
    if command != "sync":
        print(f"error: unknown command {command!r} (sync or check)", file=sys.stderr)
        return 2
    expected = expected_files()
    for path in stale_files():
        if path in expected:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(expected[path])
        else:
            path.unlink()
        print(f"chart-sync: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
