"""What the reports service keeps between requests: each page and the leaderboard for
REPORTS_CACHE_S, computed once per key at a time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from mlflow.tracking import MlflowClient

from services.reports.leaderboard import Entry, read_leaderboard

T = TypeVar("T")


class Cache:
    """Values by key for `ttl_s` seconds; one computation per key at a time (a page may use another
    key while it is computed: the leaderboard page uses the leaderboard)."""

    def __init__(self, ttl_s: float, size: int = 256) -> None:
        self.ttl_s, self.size = ttl_s, size
        self._values: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: tuple[str, ...], compute: Callable[[], T]) -> T:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            hit = self._values.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
                return hit[1]  # type: ignore[no-any-return]
            value = compute()
            with self._guard:
                self._values[key] = (time.monotonic(), value)
                while len(self._values) > self.size:
                    oldest = next(iter(self._values))
                    self._values.pop(oldest)
                    self._locks.pop(oldest, None)
            return value


def cached_leaderboard(cache: Cache, client: MlflowClient) -> dict[str, list[Entry]]:
    """The leaderboard, read from MLflow at most once per cache period (the pages, the JSON and the
    gauges share it)."""
    return cache.get(("leaderboard",), lambda: read_leaderboard(client))
