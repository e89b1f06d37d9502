"""The Prometheus queries of the model dashboards, as Grafana sends them (shared by the process-level
dashboard test and the compose e2e)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests

from tests.conftest import ROOT

DASHBOARDS = [
    ROOT / "grafana/dashboards/model-serving.json",
    ROOT / "grafana/dashboards/model-quality-drift.json",
]
# Grafana's built-in variables, as Grafana would fill them for a 1 h view at 15 s resolution.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref: str
    expr: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.dashboard, self.panel, self.ref)


def panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in node.get("panels", []):
        if panel.get("type") == "row":
            yield from panels(panel)
        else:
            yield panel


def dashboard_queries() -> list[Query]:
    found = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in panels(board):
            for target in panel.get("targets", []):
                if target["datasource"]["uid"] == "prometheus":
                    found.append(Query(board["uid"], panel["title"], target["refId"], target["expr"]))
    return found


def promql(expr: str) -> str:
    """The query as Grafana sends it: `$model` as the All value (regex `.*`), built-ins filled in."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    expr = expr.replace("$model", ".*")
    assert "$" not in expr, f"unknown dashboard variable in {expr!r}"
    return expr


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = requests.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


def has_data(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)
