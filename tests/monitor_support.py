"""Writing a prediction log as gateway replicas do, and the data for it: the monitor's tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
from psycopg2.extras import execute_values

from contracts import drift, predlog, synthetic
from contracts.schema import FEATURE_NAMES
from contracts.settings import libpq_uri

Row = dict[str, Any]


def reference_profile(seed: int) -> dict[str, Any]:
    reference = synthetic.generate(3000, seed=seed)
    return drift.build_profile(reference[list(FEATURE_NAMES)], reference["latency_ms"])


def feature_rows(n: int, seed: int, shift: float = 0.0) -> list[Row]:
    frame = synthetic.generate(n, seed=seed, drift=shift)
    return frame[list(FEATURE_NAMES)].to_dict(orient="records")  # type: ignore[no-any-return]


@contextmanager
def cursor(uri: str) -> Iterator[Any]:
    conn = psycopg2.connect(libpq_uri(uri))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


class Log:
    """Writes rows as gateway replicas do; each request gets its own timestamp, newer than the last."""

    def __init__(self, uri: str, start: float, model: str = "latency-predictor") -> None:
        self.uri, self.ts, self.n, self.model = uri, start, 0, model

    def predict(
        self, version: str, rows: list[Any], predictions: list[float | None], *, replica: str = "a",
        batch: bool = False, ts: float | None = None,
    ) -> list[str]:  # fmt: skip
        """Log predictions; `batch`: as one request of many rows (one timestamp), else one per row."""
        values: list[tuple[Any, ...]] = []
        ids: list[str] = []
        for row, prediction in zip(rows, predictions, strict=True):
            if ts is None and (not batch or not values):
                self.ts += 0.001
            self.n += 1
            request_id = f"{replica}-{self.n}"
            ids.append(request_id)
            latency = 1.5 if replica == "a" else 2.5
            values.append(
                (ts or self.ts, request_id, self.model, version, json.dumps(row), prediction, latency)
            )
        with cursor(self.uri) as cur:
            execute_values(cur, predlog.INSERT, values, template=predlog.INSERT_TEMPLATE)
        return ids

    def feedback(self, pairs: list[tuple[str, float]]) -> None:
        values = []
        for request_id, actual in pairs:
            self.ts += 0.001
            values.append((request_id, actual, self.ts))
        with cursor(self.uri) as cur:
            execute_values(cur, predlog.FEEDBACK_INSERT, values, template=predlog.FEEDBACK_TEMPLATE)
