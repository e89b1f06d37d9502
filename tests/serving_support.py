"""A model server's version answer, for tests of what follows the served version (gateway, watch)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from contracts.models import VERSION_HEADER


class ModelServerPing:
    """A loopback HTTP server answering `GET /ping` as a model server of `version` does (the serving
    launcher's header); `version` None: 200 without the header."""

    def __init__(self) -> None:
        self.version: str | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self.send_response(200 if self.path == "/ping" else 404)
                if outer.version is not None:
                    self.send_header(VERSION_HEADER, outer.version)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
