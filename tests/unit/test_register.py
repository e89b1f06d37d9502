"""What the trainer leaves in the registry after a failure (trainer/register.py, trainer/train.py):
never a half-registered version. A real MLflow registry on SQLite."""

from __future__ import annotations

from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from trainer.register import delete_unfinished
from trainer.train import one_line


def test_only_this_sessions_unfinished_versions_are_deleted(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m")
    source = (tmp_path / "model").as_uri()

    def version(run_id: str, description: str = "", alias: str = "") -> str:
        mv = client.create_model_version("m", source, tags={"run_id": run_id})
        if description:
            client.update_model_version("m", mv.version, description=description)
        if alias:
            client.set_registered_model_alias("m", alias, mv.version)
        return str(mv.version)

    done = version("session", "Kept in staging: not better.", "staging")
    no_description = version("session")
    no_alias = version("session", "Promoted to production: better.")
    other_session = version("other")
    assert sorted(delete_unfinished(client, "m", {"session"})) == sorted([no_description, no_alias])
    left = {str(mv.version) for mv in client.search_model_versions("name = 'm'")}
    assert left == {done, other_session}
    assert delete_unfinished(client, "absent", {"session"}) == []


def test_a_failed_request_is_one_line_naming_the_route_and_the_cause() -> None:
    refused = MlflowException(
        "API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/log-batch failed with exception "
        "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded with url: "
        '/api/2.0/mlflow/runs/log-batch (Caused by NewConnectionError("HTTPConnection(host='
        "'127.0.0.1', port=5000): Failed to establish a new connection: [Errno 111] Connection refused\"))"
    )
    try:
        try:
            raise refused
        except MlflowException:  # ending the run fails next; the first failure is reported
            raise MlflowException("API request to endpoint /api/2.0/mlflow/runs/update failed") from None
    except MlflowException as exc:
        assert (
            one_line(exc) == "the tracking server failed /api/2.0/mlflow/runs/log-batch (Connection refused)"
        )
    answered = MlflowException(
        "API request to endpoint /api/2.0/mlflow/runs/create failed with error code 503"
    )
    assert one_line(answered) == "the tracking server failed /api/2.0/mlflow/runs/create (HTTP 503)"
    assert one_line(ValueError("a\nb")) == "a b"
    full = OSError(28, "No space left on device", "/scratch/model.pkl")
    assert one_line(full) == "No space left on device (/scratch/model.pkl)"
