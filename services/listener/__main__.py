"""`python -m services.listener`: open the listening sockets, hand them to whoever asks, never accept.

    LISTENER_SOCKETS=public=0.0.0.0:8000,metrics=0.0.0.0:9100  the sockets, by name
    LISTENER_PATH=/run/listener/gateway.sock                   the Unix socket they are handed on

`python -m services.listener check` (the container's health check) asks for them as a server would
and checks that every named socket came back listening.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys

from contracts.logs import configure_logging
from services.common.sockets import hand_over, listen, parse, receive

log = logging.getLogger("services.listener")


def check(path: str, names: set[str]) -> int:
    try:
        sockets = receive(path, timeout_s=0)
    except OSError as exc:
        print(f"listener: {exc}", file=sys.stderr)
        return 1
    listening = {name for name, s in sockets.items() if s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)}
    for s in sockets.values():
        s.close()
    if listening != names:
        print(f"listener: holds {sorted(listening)}, expected {sorted(names)}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    configure_logging("listener")
    path = os.environ.get("LISTENER_PATH", "")
    if not path:
        print("listener: set LISTENER_PATH (the Unix socket to hand the sockets on)", file=sys.stderr)
        return 2
    try:
        addresses = parse(os.environ.get("LISTENER_SOCKETS", ""))
    except ValueError as exc:
        print(f"listener: LISTENER_SOCKETS: {exc}", file=sys.stderr)
        return 2
    if sys.argv[1:] == ["check"]:
        return check(path, set(addresses))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 in its container: no default action
    try:
        sockets = {name: listen(host, port) for name, (host, port) in addresses.items()}
        if os.path.exists(path):  # left by an earlier listener: nobody can be listening on it now
            os.unlink(path)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket file: its owner only (the gateway runs as the same user)
        try:
            server.bind(path)
        finally:
            os.umask(old_umask)
        server.listen(16)
    except OSError as exc:
        print(f"listener: cannot listen: {exc}", file=sys.stderr)
        return 1
    log.info("holding %s; handing them over on %s",
             ", ".join(f"{n}={h}:{p}" for n, (h, p) in addresses.items()), path)  # fmt: skip
    while True:
        conn, _ = server.accept()
        with conn:
            try:
                hand_over(conn, sockets)
            except OSError as exc:  # the asker went away: its problem, not the listener's
                log.warning("hand-over failed: %s", exc)


if __name__ == "__main__":
    sys.exit(main())
