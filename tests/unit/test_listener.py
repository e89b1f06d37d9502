"""The socket listener (services/listener): parsing its setting, the hand-over, and the real process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from services.common.sockets import hand_over, listen, parse, receive
from tests.conftest import free_port


def test_parse_names_each_socket() -> None:
    assert parse("public=0.0.0.0:8000, metrics=127.0.0.1:9100") == {
        "public": ("0.0.0.0", 8000),
        "metrics": ("127.0.0.1", 9100),
    }


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("", "no socket named"),
        ("public=8000", "'public=8000' is not name=host:port"),
        ("public=0.0.0.0:http", "is not name=host:port"),
        ("public=0.0.0.0:70000", "is not name=host:port"),
        ("=0.0.0.0:8000", "is not name=host:port"),
        ("a=h:1,a=h:2", "'a' is named twice"),
    ],
)
def test_parse_says_what_is_wrong(spec: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse(spec)


def serve_once(path: Path, send: Callable[[socket.socket], None]) -> None:
    """A Unix socket at `path` whose first connection gets `send(conn)`, in the background."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        with conn, server:
            send(conn)

    threading.Thread(target=run, daemon=True).start()


def test_a_handed_over_socket_accepts_the_connections_made_to_the_original(tmp_path: Path) -> None:
    port = free_port()
    with listen("127.0.0.1", port) as original:
        serve_once(tmp_path / "h.sock", lambda conn: hand_over(conn, {"public": original}))
        received = receive(str(tmp_path / "h.sock"), timeout_s=5)
        assert set(received) == {"public"}
        public = received["public"]
        assert public.fileno() != original.fileno() and public.get_inheritable()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            accepted, _ = public.accept()
            client.sendall(b"x")
            assert accepted.recv(1) == b"x"
            accepted.close()
        public.close()
    with pytest.raises(OSError):  # the original closed too: nothing listens any more
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_receive_gives_up_after_its_timeout_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(TimeoutError, match=f"no socket listener at {tmp_path}/none.sock"):
        receive(str(tmp_path / "none.sock"), timeout_s=0.3)


def test_receive_refuses_names_that_do_not_match_the_sockets(tmp_path: Path) -> None:
    def send(conn: socket.socket) -> None:
        with listen("127.0.0.1", free_port()) as one:
            socket.send_fds(conn, [b'["public", "metrics"]'], [one.fileno()])

    serve_once(tmp_path / "h.sock", send)
    with pytest.raises(OSError, match="sent 1 sockets for the names"):
        receive(str(tmp_path / "h.sock"), timeout_s=5)


def listener_env(tmp_path: Path, sockets: str) -> dict[str, str]:
    return {**os.environ, "LISTENER_SOCKETS": sockets, "LISTENER_PATH": str(tmp_path / "l.sock")}


def test_the_listener_process_hands_its_sockets_to_each_asker_and_its_check_passes(tmp_path: Path) -> None:
    ports = free_port(), free_port()
    env = listener_env(tmp_path, f"public=127.0.0.1:{ports[0]},metrics=127.0.0.1:{ports[1]}")
    proc = subprocess.Popen([sys.executable, "-m", "services.listener"], env=env, stderr=subprocess.PIPE)
    try:
        for _ in range(2):  # a gateway, then the one that replaces it
            held = receive(env["LISTENER_PATH"], timeout_s=10)
            assert {name: s.getsockname()[1] for name, s in held.items()} == {
                "public": ports[0],
                "metrics": ports[1],
            }
            for s in held.values():
                s.close()
        assert (tmp_path / "l.sock").stat().st_mode & 0o077 == 0  # its owner only
        check = subprocess.run([sys.executable, "-m", "services.listener", "check"], env=env, timeout=30)
        assert check.returncode == 0
        # Nothing accepts yet: a connection waits in the backlog instead of being refused.
        with socket.create_connection(("127.0.0.1", ports[0]), timeout=5):
            pass
    finally:
        proc.terminate()
        assert proc.wait(10) == 0  # SIGTERM stops it at once, although it is PID 1 in its container


def test_the_check_fails_in_one_line_without_a_listener(tmp_path: Path) -> None:
    env = listener_env(tmp_path, "public=127.0.0.1:1")
    check = subprocess.run(
        [sys.executable, "-m", "services.listener", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 1
    assert check.stderr.strip() == f"listener: no socket listener at {tmp_path}/l.sock after 0 s"


def test_a_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = listener_env(tmp_path, "public=8000")
    done = subprocess.run(
        [sys.executable, "-m", "services.listener"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "listener: LISTENER_SOCKETS: 'public=8000' is not name=host:port"
