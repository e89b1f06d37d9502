"""Listening sockets that outlive the processes, and the containers, serving them.

A container that is recreated (an image upgrade, `docker compose up --force-recreate`) or restarted
takes its listening sockets with it: connections are refused until a new process listens. So in the
compose stack the gateway does not listen itself. `python -m services.listener` opens its sockets
(`listen`), never accepts on them, and hands duplicates of them (`hand_over`) to every process that
asks (`receive`: the gateway) on a Unix socket (SCM_RIGHTS, the way systemd's socket activation
and Envoy's hot restart pass them). Between the old gateway's last accept and the new one's first,
connections wait in the kernel's backlog: a client sees a delay, never a refusal.

Both ends of that hand-over live here, so neither service imports the other. Standard library
only: the listener's image holds this module and its own package and nothing else and carries no
platform version, so an upgrade of the platform leaves its container, and the sockets, in place.
"""

from __future__ import annotations

import json
import socket
import time

# Connections waiting while no process accepts (a gateway being replaced): its start and model
# loading take seconds. Linux caps it at net.core.somaxconn (4096 by default since 5.4).
BACKLOG = 1024
MAX_SOCKETS = 16


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket, inheritable. TCP_NODELAY is set here because uvicorn takes an
    inherited descriptor as it is (accepted sockets inherit the option on Linux)."""
    listener = socket.create_server((host, port), backlog=BACKLOG)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.set_inheritable(True)
    return listener


def parse(spec: str) -> dict[str, tuple[str, int]]:
    """`name=host:port,...` -> {name: (host, port)}; ValueError naming the part that is wrong."""
    addresses: dict[str, tuple[str, int]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, address = part.partition("=")
        host, _, port = address.rpartition(":")
        if not name or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{part!r} is not name=host:port")
        if name in addresses:
            raise ValueError(f"{name!r} is named twice")
        addresses[name] = (host, int(port))
    if not addresses:
        raise ValueError("no socket named (name=host:port,...)")
    if len(addresses) > MAX_SOCKETS:
        raise ValueError(f"at most {MAX_SOCKETS} sockets")
    return addresses


def hand_over(conn: socket.socket, sockets: dict[str, socket.socket]) -> None:
    """Send duplicates of `sockets` on `conn`: their names as JSON, the descriptors alongside."""
    names = list(sockets)
    socket.send_fds(conn, [json.dumps(names).encode()], [sockets[name].fileno() for name in names])


def receive(path: str, timeout_s: float) -> dict[str, socket.socket]:
    """The sockets the listener at `path` holds, by name, inheritable. Waits up to `timeout_s` for
    the listener to be there; TimeoutError after that, OSError if what it sent is not sockets."""
    deadline = time.monotonic() + timeout_s
    while True:  # a hand-written retry, not tenacity: this module runs in the listener's stdlib image
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(5)
                conn.connect(path)
                message, fds, _, _ = socket.recv_fds(conn, 4096, MAX_SOCKETS)
            break
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no socket listener at {path} after {timeout_s:.0f} s") from exc
            time.sleep(0.2)
    received = [socket.socket(fileno=fd) for fd in fds]
    try:
        names = json.loads(message)
        if not isinstance(names, list) or len(names) != len(received):
            raise ValueError(f"{len(received)} sockets for the names {message[:200]!r}")
    except ValueError as exc:
        for s in received:
            s.close()
        raise OSError(f"the socket listener at {path} sent {exc}") from exc
    for s in received:
        s.set_inheritable(True)
    return dict(zip(names, received, strict=True))
