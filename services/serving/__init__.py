"""Serve a registered model alias with `mlflow models serve`, once the alias exists.

Until the alias is set (the first training run has not finished yet), the launcher waits and says
what it waits for, instead of crashing in a restart loop. It then serves the alias's version and
keeps watching the alias. When the alias moves, the new version starts beside the old one and the
old one stops only once the new one is up: no request is refused. If the new version cannot start,
the old one keeps serving.

The launcher owns the listening socket and hands it to every `mlflow models serve` it starts, as
standard input (inetd style: `mlflow models serve` closes other inherited descriptors before it
runs uvicorn, and uvicorn takes `UVICORN_FD=0`). Both servers accept from it during a rollout, and
connections that arrive while none accepts wait in its backlog instead of being refused. One race
remains: a connection the old server accepted in the instant it stops, before reading its request,
is closed without an answer (uvicorn's shutdown closes connections with no request in progress;
seen once in a rollout under load). The gateway repeats such a request once
(services/gateway/upstream.py); a client calling a model server directly should do the same.

Readiness: a new server is ready once it answers on the shared socket. Each model server is started
with a default response header `X-Model-Version: <version>` (uvicorn's `--header`, set through
`UVICORN_HEADERS` like the socket through `UVICORN_FD`). The launcher sends `GET /ping` to the public
port on fresh connections until an answer carries the new version: the kernel gives each connection
to whichever server accepts first, so the old server's answers do not count and the next probe tries
again. uvicorn accepts only once the app, and so the model, has loaded. Alternatives ruled out:
- a private port per server: uvicorn, and so `mlflow models serve`, listens on exactly one socket
  (`--fd`, `--uds` or `--host/--port`), and it must be the shared one;
- `/ping` and `/version` do not tell servers apart (`/version` is the MLflow version);
- uvicorn's log lines change between versions and vanish with `UVICORN_LOG_LEVEL=warning`.
Failure is safe: without the header no answer matches, the new version counts as not started and the
old one keeps serving. The version names one server because the launcher never runs two servers of
one version. With `SERVING_WORKERS` > 1 the first worker to answer makes the server ready; the others
load the same model meanwhile and accept nothing before they have. Clients see the header too: it
names the version that answered, also during a rollout.

What is actually served is that header, not the alias (`contracts.models.served_version`): the
gateway follows it, so it labels predictions and checks signatures by the version that answers, and
the orchestrator's rollout watch waits for it. The launcher writes nothing to the registry: the
serving account only reads (services/access).

The modules: registry.py (the alias's version), server.py (a model server on the shared socket and
its readiness probe), __main__.py (the launcher's loop). This file holds the settings only.
"""

from __future__ import annotations

from services.serving.settings import Settings

__all__ = ["Settings"]
