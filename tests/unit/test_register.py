"""What the trainer leaves in the registry after a failure (trainer/register.py, trainer/train.py):
never a half-registered version. A real MLflow registry on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from trainer.gate import decide
from trainer.register import (
    BASELINE_SET_TAG,
    BASELINE_TAG,
    BASELINE_VERSION_TAG,
    REFERENCE_SET,
    delete_unfinished,
    promote_approved,
    record_reference_baseline,
    reference_baseline,
)
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


def _scores(test: float, reference: float) -> dict[str, dict[str, float]]:
    return {"test": {"root_mean_squared_error": test}, "reference": {"root_mean_squared_error": reference}}


def test_the_reference_baseline_is_recorded_once_and_never_moved(tmp_path: Path) -> None:
    """The first production version's reference RMSE becomes the registered model's baseline; later
    promotions, better or worse, leave it where it is."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert reference_baseline(client, "m") is None  # no model yet
    client.create_registered_model("m")
    assert reference_baseline(client, "m") is None
    first = decide(_scores(3.0, 2.9), None)
    assert record_reference_baseline(client, "m", first, "1")
    tags = client.get_registered_model("m").tags
    assert reference_baseline(client, "m") == 2.9
    assert tags[BASELINE_VERSION_TAG] == "1" and tags[BASELINE_SET_TAG] == REFERENCE_SET
    better = decide(_scores(2.5, 2.5), _scores(3.0, 2.9), "1", reference_baseline=2.9)
    assert better.promote and not record_reference_baseline(client, "m", better, "2")
    assert reference_baseline(client, "m") == 2.9


def test_a_model_from_before_the_baseline_records_its_champions(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m")
    kept = decide(_scores(3.5, 3.9), _scores(3.0, 3.1), "4")  # refused, but the baseline is the champion's
    assert not kept.promote and record_reference_baseline(client, "m", kept, "5")
    assert reference_baseline(client, "m") == 3.1
    assert client.get_registered_model("m").tags[BASELINE_VERSION_TAG] == "4"
    awaiting = decide(_scores(3.0, 2.9), None, approval_required=True)  # the CI pipeline: not yet production
    client.create_registered_model("n")
    assert not record_reference_baseline(client, "n", awaiting, "1")


def test_a_baseline_that_is_not_a_number_is_refused(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m", tags={BASELINE_TAG: "low"})
    with pytest.raises(ValueError, match="gate.reference_baseline_rmse='low' is not a number"):
        reference_baseline(client, "m")


def test_an_approved_first_version_records_the_baseline(tmp_path: Path) -> None:
    """The CI pipeline: the first version waited for approval; its promotion records the baseline."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m")
    decision = decide(_scores(3.0, 2.9), None, approval_required=True)
    mv = client.create_model_version("m", (tmp_path / "model").as_uri(), tags=decision.tags())
    promote_approved(client, "m", str(mv.version), "reviewer")
    assert reference_baseline(client, "m") == 2.9
    assert client.get_registered_model("m").tags[BASELINE_VERSION_TAG] == str(mv.version)
