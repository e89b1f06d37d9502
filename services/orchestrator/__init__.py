"""The orchestrator closes the loop: it retrains a model when it drifts or decays, on a schedule or on
demand, lets the one promotion gate judge the challenger on recent production data, and watches each
new production version, rolling it back when it does worse than the one it replaced.

Triggers: Alertmanager's webhook (`POST /alerts`), a cron schedule (`RETRAIN_SCHEDULE`), and
`POST /retrain` (`make retrain`); the HTTP ones need the platform's control token (contracts/guard.py).
One retraining per model at a time; automatic triggers also wait out a cooldown; a trigger that finds
its model busy is recorded and dropped, never queued.

A retraining is an MLflow Project run (`mlflow run trainer -e retrain`) of the trainer image, started
as a container through the Docker Engine API, as a Kubernetes Job (the Helm chart), or as a process
in local mode, under a run of the
`retraining` experiment that records the trigger, the production data window, the trainer's logs and
image digest, the gate's decision and the watch's outcome. See docs/closed-loop.md.
"""

from __future__ import annotations

from services.orchestrator.settings import Settings

__all__ = ["Settings"]
