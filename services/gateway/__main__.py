"""`python -m services.gateway`: the supervisor that owns the gateway's sockets and runs its worker.

The supervisor listens (the public port and the metrics port) and hands both sockets to one worker
process, `python -m services.gateway worker` (worker.py: uvicorn, one event loop), the way the
serving launcher hands its socket to `mlflow models serve`. Because the sockets outlive any worker:
- SIGHUP replaces the worker without refusing a connection: a new worker starts on the same
  sockets, loads the models, says it is ready (a line on a pipe), and only then the old one gets
  SIGTERM and drains. If the new one does not become ready, it is stopped and the old one stays.
- a worker that dies is started again; connections meanwhile wait in the kernel's backlog.
- SIGTERM (docker stop) goes to the worker, which stops accepting, finishes the requests it has
  (GATEWAY_DRAIN_S), writes its prediction log (to Postgres, else to the spool), and exits; then
  the supervisor exits.
In the compose stack the public socket comes from `services.listener`, which outlives this
container too: recreating it (an image upgrade) refuses no connection either, and every replica
accepts on that one socket (docs/serving.md, "Gateway replicas").
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque

from contracts.logs import configure_logging
from services.common.sockets import listen, receive
from services.gateway import Settings, load_settings
from services.gateway.handover import LISTEN_FD, METRICS_FD, READY_FD

log = logging.getLogger("services.gateway.supervisor")

RESTART_DELAY_S = 1.0


class Worker:
    """One `python -m services.gateway worker` on the supervisor's sockets."""

    def __init__(self, sockets: dict[str, socket.socket]) -> None:
        read_fd, write_fd = os.pipe()
        env = {
            **os.environ,
            **{name: str(s.fileno()) for name, s in sockets.items()},
            READY_FD: str(write_fd),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.gateway", "worker"],
            env=env,
            pass_fds=(*(s.fileno() for s in sockets.values()), write_fd),
            start_new_session=True,  # signals reach it from the supervisor only, once
        )
        os.close(write_fd)
        self._ready = read_fd
        log.info("gateway worker started", extra={"pid": self.proc.pid})

    def wait_ready(self, timeout_s: float, stopping: threading.Event) -> bool:
        """True once the worker wrote its ready line; False if it exited or took too long."""
        deadline = time.monotonic() + timeout_s
        try:
            while not stopping.is_set() and time.monotonic() < deadline:
                readable, _, _ = select.select([self._ready], [], [], 0.2)
                if readable:
                    return os.read(self._ready, 64).startswith(b"ready")  # b"": it exited
            return False
        finally:
            os.close(self._ready)

    def stop(self, timeout_s: float) -> int:
        """SIGTERM (it drains), SIGKILL after `timeout_s`; its exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.error("gateway worker %d did not stop in %.0f s: killing it", self.proc.pid, timeout_s)
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def open_sockets(settings: Settings) -> dict[str, socket.socket]:
    """The public socket: from the socket listener (GATEWAY_LISTENER; it holds it while gateway
    containers come and go, and every replica accepts on it), else opened here. The metrics socket
    is always this replica's own."""
    if settings.listener:
        held = receive(settings.listener, timeout_s=60)
        if "public" not in held:
            raise OSError(f"the socket listener at {settings.listener} holds no 'public' socket")
        sockets = {LISTEN_FD: held.pop("public")}
        for unused in held.values():
            unused.close()
    else:
        sockets = {LISTEN_FD: listen(settings.host, settings.port)}
    if settings.metrics_port:  # this replica's own: Prometheus scrapes each one (internal network only)
        sockets[METRICS_FD] = listen_first_free(
            settings.host, settings.metrics_port, settings.metrics_port_tries
        )
    return sockets


def listen_first_free(host: str, port: int, tries: int) -> socket.socket:
    """A listening socket on the first of `port`, `port + 1`, ... (`tries` ports) that is free."""
    for candidate in range(port, port + tries):
        try:
            return listen(host, candidate)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or candidate == port + tries - 1:
                raise
    raise AssertionError("unreachable: tries >= 1")


def main() -> int:
    if sys.argv[1:] == ["worker"]:  # started by the supervisor below
        from services.gateway.worker import main as run_worker

        return run_worker()
    configure_logging("gateway")
    settings = load_settings()
    if settings is None:
        return 1
    try:
        sockets = open_sockets(settings)
    except OSError as exc:
        log.error("gateway: cannot listen: %s", exc.strerror or exc)
        return 1
    signals: deque[int] = deque()
    wake = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        signals.append(signum)
        wake.set()

    for handled in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(handled, on_signal)
    # The worker drains (GATEWAY_DRAIN_S) then flushes the prediction log (at most 10 s).
    stop_timeout = settings.drain_s + 15
    never = threading.Event()
    worker = Worker(sockets)
    while True:
        wake.wait(0.5)
        wake.clear()
        while signals:
            signum = signals.popleft()
            if signum in (signal.SIGTERM, signal.SIGINT):
                log.info("gateway stopping: draining the worker", extra={"pid": worker.proc.pid})
                code = worker.stop(stop_timeout)
                for s in sockets.values():
                    s.close()
                return 0 if code in (0, -signal.SIGTERM) else code
            # SIGHUP: a new worker beside the old one; the old one stops once the new one is ready.
            log.info("gateway reload: starting a new worker beside %d", worker.proc.pid)
            new = Worker(sockets)
            if new.wait_ready(settings.ready_timeout_s + 30, never):
                old, worker = worker, new
                threading.Thread(target=old.stop, args=(stop_timeout,), daemon=True).start()
                log.info("gateway reload: worker %d serves; %d drains", new.proc.pid, old.proc.pid)
            else:
                log.error("gateway reload: the new worker did not become ready; the old one keeps serving")
                new.stop(stop_timeout)
        if worker.proc.poll() is not None:
            log.error("gateway worker %d exited with code %s: starting another (connections wait)",
                      worker.proc.pid, worker.proc.returncode)  # fmt: skip
            time.sleep(RESTART_DELAY_S)
            worker = Worker(sockets)


if __name__ == "__main__":
    sys.exit(main())
