"""The serving launcher's listening socket, which every `mlflow models serve` it starts inherits."""

from __future__ import annotations

import socket

from services.serving import Settings
from services.serving.server import listen
from tests.conftest import free_port


def test_the_listener_is_inheritable_and_its_connections_skip_nagle() -> None:
    port = free_port()
    settings = Settings.from_env(
        dict(
            MLFLOW_TRACKING_URI="http://unused",
            SERVING_MODEL_NAME="m",
            SERVING_HOST="127.0.0.1",
            SERVING_PORT=port,
        )
    )
    with listen(settings) as listener, socket.create_connection(("127.0.0.1", port)):
        assert listener.get_inheritable()
        accepted, _ = listener.accept()
        with accepted:
            # uvicorn does not set TCP_NODELAY on an inherited socket's connections: they must inherit
            # it from the listener, or answers stall on delayed ACKs (docs/benchmarks.md).
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
