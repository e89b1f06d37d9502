"""The registered models, their aliases and the served-version tags: the one list every part derives from.

Adding a model means one `RegisteredModel` entry here (its target must be in `contracts.schema.TARGETS`)
plus one `serving-<key>` service block in docker-compose.yml (and its line in the loopback override).
The trainer trains and registers every entry, the gateway fronts every entry, the monitor and the
simulator follow them. Standard library only: host-side scripts (infra/stack.py) import it too.

Aliases: `staging` is the latest candidate of a session, `production` is what serving follows (MLflow
stages are deprecated). The serving launcher writes, on the registered model, tag `served.<alias>` =
the version its model server answers with (after a rollout completes), and `served.<alias>.error`
while a newer version named by the alias cannot start. The gateway labels and checks requests by
`served.<alias>`.
"""

from __future__ import annotations

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


def model_for_target(target: str) -> RegisteredModel:
    """The registered model that predicts `target`; KeyError naming the known targets otherwise."""
    for model in MODELS:
        if model.target == target:
            return model
    raise KeyError(f"no registered model predicts {target!r} (known: {', '.join(m.target for m in MODELS)})")


def served_tag(alias: str) -> str:
    """The registered-model tag naming the version served for `alias`."""
    return f"served.{alias}"


def served_error_tag(alias: str) -> str:
    """The registered-model tag saying why the alias's version is not the one served."""
    return f"{served_tag(alias)}.error"
