"""A task the monitor runs every few seconds in a background thread, from startup to shutdown."""

from __future__ import annotations

import threading


class Periodic:
    """Calls `run_once` every `interval_s` seconds (the first call at start) in a daemon thread.
    `run_once` must not raise: a task reports its own failures and tries again next interval."""

    name = "periodic"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval_s)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line of at most 300 characters, for a log line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
