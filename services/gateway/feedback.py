"""Joining feedback (actual values) with remembered predictions, and live quality from the pairs."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from typing import Any


class RememberedPredictions:
    """A bounded map request_id -> (model, prediction); the oldest entries go first.

    Written by the request path (predict) and by the recorder thread (invocations), read by the
    feedback endpoint, hence the lock (uncontended, so cheap). Every operation is O(1) per id: once
    full, each new id evicts the oldest one (OrderedDict.popitem from the front).
    """

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, model: str, request_ids: list[str], predictions: list[Any]) -> None:
        """Remember the numeric predictions of `request_ids` (same order)."""
        with self._lock:
            items = self._items
            for request_id, prediction in zip(request_ids, predictions, strict=False):
                if type(prediction) is float or type(prediction) is int:
                    items[request_id] = (model, float(prediction))
            while len(items) > self._max:
                items.popitem(last=False)

    def pop(self, model: str, request_id: str) -> float | None:
        """The remembered prediction of `model` for `request_id` (forgotten afterwards), or None."""
        with self._lock:
            entry = self._items.get(request_id)
            if entry is None or entry[0] != model:
                return None
            del self._items[request_id]
            return entry[1]


class LiveQuality:
    """MAE, RMSE and R2 over the last `window` (prediction, actual) pairs.

    Running sums make each update O(1); they are recomputed from the pairs once per `window`
    evictions so that rounding errors of the subtractions cannot accumulate.
    """

    def __init__(self, window: int) -> None:
        self._pairs: deque[tuple[float, float]] = deque()
        self._window = window
        self._evicted = 0
        self._abs = self._sq = self._y = self._y2 = 0.0

    def __len__(self) -> int:
        return len(self._pairs)

    def add(self, prediction: float, actual: float) -> None:
        if len(self._pairs) == self._window:
            self._account(*self._pairs.popleft(), sign=-1.0)
            self._evicted += 1
        self._pairs.append((prediction, actual))
        self._account(prediction, actual, sign=1.0)
        if self._evicted >= self._window:
            self._evicted = 0
            self._abs = self._sq = self._y = self._y2 = 0.0
            for pair in self._pairs:
                self._account(*pair, sign=1.0)

    def _account(self, prediction: float, actual: float, sign: float) -> None:
        error = actual - prediction
        self._abs += sign * abs(error)
        self._sq += sign * error * error
        self._y += sign * actual
        self._y2 += sign * actual * actual

    def scores(self) -> tuple[float, float, float | None]:
        """(MAE, RMSE, R2); R2 is None while the actual values have no variance."""
        n = len(self._pairs)
        if n == 0:
            raise ValueError("no feedback yet")
        mae, mse = self._abs / n, max(self._sq / n, 0.0)
        total = self._y2 - self._y * self._y / n
        r2 = 1.0 - self._sq / total if total > 1e-12 * max(1.0, abs(self._y2)) else None
        return mae, math.sqrt(mse), r2
