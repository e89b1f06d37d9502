"""The registered models, their aliases and how to ask a model server which version it serves: the one
list every part derives from.

Adding a model means one `RegisteredModel` entry here (its target must be in `contracts.schema.TARGETS`)
plus one `serving-<key>` service block in docker-compose.yml (and its line in the loopback override);
the Helm chart's copy of this list follows with `make chart-sync` (tests/static/test_chart.py fails
until then).
The trainer trains and registers every entry, the gateway fronts every entry, the monitor and the
simulator follow them. Standard library only: host-side scripts (infra/stack.py) import it too.

Aliases: `staging` is the latest candidate of a session, `production` is what serving follows (MLflow
stages are deprecated). What a model server actually serves is not the alias (during a rollout, or
while a newer version cannot start, it is still the old one): every answer of a model server carries
the header `X-Model-Version` (services/serving), and `served_version` asks for it. The gateway labels
and checks requests by it, the orchestrator's watch waits for it. Nothing is written to the registry
for it, so the serving account only reads the registry.
"""

from __future__ import annotations

import http.client
import urllib.parse
from dataclasses import dataclass

STAGING = "staging"
PRODUCTION = "production"
ALIASES = (PRODUCTION, STAGING)


@dataclass(frozen=True)
class RegisteredModel:
    """One registered model: what it predicts and which serving container answers for it."""

    name: str  # the registry name, also the gateway's URL segment
    target: str  # the column it predicts
    key: str  # short name: compose service `serving-<key>`, .env `SERVING_<KEY>_PORT`
    port: int  # the serving container's port (distinct per model: the loopback stack shares one host)

    @property
    def service(self) -> str:
        return f"serving-{self.key}"

    @property
    def upstream(self) -> str:
        """The serving container's base URL inside the stack."""
        return f"http://{self.service}:{self.port}"


MODELS: tuple[RegisteredModel, ...] = (
    RegisteredModel("latency-predictor", "latency_ms", "latency", 5001),
    RegisteredModel("bandwidth-efficiency-predictor", "bandwidth_efficiency", "bandwidth", 5002),
)

MODEL_NAMES: tuple[str, ...] = tuple(m.name for m in MODELS)


def format_upstreams(upstreams: dict[str, str]) -> str:
    """Model servers as a setting value (GATEWAY_MODELS, SERVING_UPSTREAMS): name=URL, comma-separated."""
    return ",".join(f"{name}={url}" for name, url in upstreams.items())


DEFAULT_UPSTREAMS = format_upstreams({m.name: m.upstream for m in MODELS})


def parse_upstreams(value: str, setting: str) -> dict[str, str]:
    """'a=http://x:1,b=http://y:2' -> {'a': 'http://x:1', 'b': 'http://y:2'}; ValueError naming
    `setting` if malformed or empty."""
    result: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, url = item.partition("=")
        name, url = name.strip(), url.strip().rstrip("/")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise ValueError(f"{setting} item {item!r} is not name=http://host:port")
        result[name] = url
    if not result:
        raise ValueError(f"{setting} lists no model")
    return result


def model_for_target(target: str) -> RegisteredModel:
    """The registered model that predicts `target`; KeyError naming the known targets otherwise."""
    for model in MODELS:
        if model.target == target:
            return model
    raise KeyError(f"no registered model predicts {target!r} (known: {', '.join(m.target for m in MODELS)})")


# The response header naming the version a model server answers with (set by the serving launcher).
VERSION_HEADER = "X-Model-Version"


def served_version(url: str, timeout_s: float = 5.0) -> str | None:
    """The version the model server at base URL `url` serves: the `X-Model-Version` header of its
    answer to `GET /ping`, on a fresh connection. None when it does not answer 200 or names no version
    (not started, down, or a server without the launcher).

    http.client, not the platform's HTTP client (requests): this module must import without the
    venv (infra/stack.py, on the host's bare python3)."""
    parts = urllib.parse.urlsplit(url)
    connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_type(parts.hostname or "", parts.port, timeout=timeout_s)
    try:
        connection.request("GET", f"{parts.path.rstrip('/')}/ping", headers={"Connection": "close"})
        response = connection.getresponse()
        response.read()
        return response.getheader(VERSION_HEADER) if response.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()
