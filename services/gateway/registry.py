"""What each model serves: the served version and its signature.

A daemon thread polls every GATEWAY_REFRESH_S. The served version is the one the model server
answers with (its `X-Model-Version` header, `contracts.models.served_version`): during a rollout, or
after a version that failed to start, it is still the old one. While the model server does not answer
(not started yet, restarting), the alias's version: the one a starting server will serve. When it
changes (or on the first poll) the poller loads that version's signature, then swaps
the model's `current` in one assignment, so a request sees either the old version or the new one,
never a mix. When the tracking server is down the gateway keeps serving what it has loaded.

`current` is what requests are checked against. What labels an answer (its `version`, the prediction
log, the metrics) is the `X-Model-Version` of that answer itself (upstream.Response): for a moment
after a rollout the old server still answers on the keep-alive connections it accepted, after a poll
on a fresh connection has already reached the new one (seen in CI: the label said v2, the
predictions were v1's).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from contracts.models import served_version
from contracts.registry import is_absent
from services.gateway.metrics import ModelMetrics
from services.gateway.validation import SCHEMA_COLUMNS, Columns, columns_from_signature

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedVersion:
    """One loaded model version."""

    version: str
    run_id: str
    columns: Columns  # what requests are checked against: the signature's, else the schema's


@dataclass
class ServedModel:
    """A model the gateway fronts, and the version it currently serves (None until loaded)."""

    name: str
    upstream: str
    metrics: ModelMetrics
    current: ServedVersion | None = None


def load_version(client: MlflowClient, name: str, version: str, run_id: str) -> ServedVersion:
    """The signature of `name` version `version`."""
    info = mlflow.models.get_model_info(f"models:/{name}/{version}")
    columns = columns_from_signature(info.signature)
    if columns is None:
        log.warning("%s v%s has no column signature: records are checked against the schema", name, version)
        columns = SCHEMA_COLUMNS
    elif columns.names != SCHEMA_COLUMNS.names:
        log.warning(
            "%s v%s: its signature's columns differ from contracts.schema (the OpenAPI describes the "
            "schema); requests are checked against the signature",
            name,
            version,
            extra={"columns": [c.name for c in columns]},
        )
    return ServedVersion(version, run_id, columns)


class NotInRegistry(Exception):
    """The registry has no such model, or no version behind the alias (yet)."""


class RegistryPoller:
    """Keeps every ServedModel's `current` in line with the registry alias."""

    def __init__(
        self,
        tracking_uri: str,
        alias: str,
        models: dict[str, ServedModel],
        refresh_s: float,
        on_loaded: Callable[[ServedModel, ServedVersion | None, ServedVersion], None],
    ) -> None:
        mlflow.set_tracking_uri(tracking_uri)  # get_model_info resolves models:/ URIs through it
        self._client = MlflowClient(tracking_uri)
        self._alias = alias
        self._models = models
        self._refresh_s = refresh_s
        self._on_loaded = on_loaded
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-poller", daemon=True)
        self._problems: dict[str, str] = {}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self._refresh_s)

    def poll_once(self) -> None:
        """One look at the registry for every model; problems are logged once each, not raised.
        What the registry does not have (contracts.registry's policy) is told apart from a
        tracking server that is down or failing."""
        for model in self._models.values():
            try:
                self._refresh(model)
            except NotInRegistry as exc:
                self._problem(model, f"registry: {exc}")
            except MlflowException as exc:
                reason = str(exc.message).splitlines()[0][:300] if exc.message else exc.error_code
                if is_absent(exc):
                    self._problem(model, f"registry: {model.name}@{self._alias} not found ({reason})")
                else:  # MLflow reports connection failures as MlflowException too
                    self._problem(model, f"tracking server unreachable or failing ({reason})")
            except Exception as exc:  # requests/urllib3 errors and the unexpected
                self._problem(model, f"tracking server unreachable ({type(exc).__name__}: {exc})"[:400])
            else:
                if self._problems.pop(model.name, None):
                    log.info("registry reachable again for %s", model.name)

    def _refresh(self, model: ServedModel) -> None:
        try:
            registered = self._client.get_registered_model(model.name)
        except MlflowException as exc:
            if is_absent(exc):
                raise NotInRegistry(f"{model.name} is not registered yet") from None
            raise
        version = served_version(model.upstream) or registered.aliases.get(self._alias)
        if version is None:
            raise NotInRegistry(f"{model.name} has no {self._alias!r} alias yet")
        version = str(version)
        previous = model.current
        if previous is not None and previous.version == version:
            return
        found = self._client.get_model_version(model.name, version)
        loaded = load_version(self._client, model.name, version, found.run_id or "")
        model.current = loaded
        self._on_loaded(model, previous, loaded)
        log.info(
            "serving %s v%s (alias %s, run %s)%s",
            model.name,
            version,
            self._alias,
            loaded.run_id,
            f", was v{previous.version}" if previous else "",
            extra={"model": model.name, "version": version, "previous": previous and previous.version},
        )

    def _problem(self, model: ServedModel, message: str) -> None:
        if self._problems.get(model.name) != message:
            self._problems[model.name] = message
            serving = f"keeps serving v{model.current.version}" if model.current else "nothing loaded yet"
            log.warning("%s (%s)", message, serving, extra={"model": model.name})
