"""`python -m services.orchestrator`: serve the orchestrator on ORCHESTRATOR_PORT (8002).

`python -m services.orchestrator retrain [MODEL ...] [--candidates ...] [--reason ...]` and
`python -m services.orchestrator rollback MODEL [--reason ...]` ask a running orchestrator
(ORCHESTRATOR_URL, default http://localhost:8002) with the control token read from CONTROL_TOKEN_FILE
(default /run/secrets/control_token, the compose secret): what `make retrain` and `make rollback` run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import requests

from contracts.guard import CONTROL_TOKEN_FILE, ControlToken
from contracts.logs import configure_logging, with_request_id
from contracts.models import MODEL_NAMES
from contracts.settings import SettingsError


def serve() -> int:
    import uvicorn
    from mlflow.tracking import MlflowClient
    from prometheus_client import disable_created_metrics

    from services.orchestrator import Settings
    from services.orchestrator.app import create_app
    from services.orchestrator.coordinator import Coordinator
    from services.orchestrator.metrics import OrchestratorMetrics
    from services.orchestrator.runner import DockerRunner, KubernetesRunner, ProcessRunner, Runner

    configure_logging("orchestrator")
    try:
        settings = Settings()  # type: ignore[call-arg]
    except SettingsError as exc:
        print(f"orchestrator: error: {exc}", file=sys.stderr)
        return 1
    disable_created_metrics()
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    runner: Runner
    try:
        if settings.trainer.runner == "docker":
            runner = DockerRunner(settings)
        elif settings.trainer.runner == "kubernetes":
            runner = KubernetesRunner(settings)
        else:
            root = Path(__file__).resolve().parents[2]
            runner = ProcessRunner(settings, root / "trainer", dict(os.environ))
        coordinator = Coordinator(
            settings, MlflowClient(settings.mlflow.tracking_uri), runner, OrchestratorMetrics.create()
        )
        app = create_app(settings, coordinator)
    except ValueError as exc:
        print(f"orchestrator: error: {exc}", file=sys.stderr)
        return 1
    logging.info(
        "models %s; alerts %s; schedule %r; runner %s; listening on %s:%d",
        ",".join(settings.models), ",".join(settings.retrain.on_alerts), settings.retrain.schedule,
        settings.trainer.runner,
        settings.host, settings.port,
    )  # fmt: skip
    uvicorn.run(
        with_request_id(app), host=settings.host, port=settings.port, access_log=False, log_config=None
    )
    return 0


def ask(path: str, body: dict[str, Any], token: bytes) -> int:
    """POST `body` with the control token to the running orchestrator; print its answer; 0 on 2xx."""
    url = os.environ.get("ORCHESTRATOR_URL", "http://localhost:8002").rstrip("/") + path
    headers = {"Authorization": f"Bearer {token.decode()}"}
    try:
        answer = requests.post(url, json=body, headers=headers, timeout=30)
    except requests.RequestException as exc:
        print(f"orchestrator: cannot reach {url}: {exc} (is the platform up? make up)", file=sys.stderr)
        return 1
    if not answer.ok:
        print(f"orchestrator: {answer.status_code}: {answer.text}", file=sys.stderr)
        return 1
    print(answer.text)
    return 0


def main(argv: list[str]) -> int:
    if not argv:
        return serve()
    parser = argparse.ArgumentParser(prog="python -m services.orchestrator")
    commands = parser.add_subparsers(dest="command", required=True)
    retrain = commands.add_parser("retrain", help="retrain models now (default: every model)")
    retrain.add_argument("models", nargs="*", metavar="MODEL", help=f"one of {', '.join(MODEL_NAMES)}")
    retrain.add_argument("--candidates", default="", help="comma-separated, e.g. random-forest")
    retrain.add_argument("--reason", default="on demand")
    rollback = commands.add_parser("rollback", help="move production back to the version it replaced")
    rollback.add_argument("model", choices=MODEL_NAMES)
    rollback.add_argument("--reason", default="manual rollback")
    args = parser.parse_args(argv)
    unknown = [m for m in getattr(args, "models", []) if m not in MODEL_NAMES]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}: one of {', '.join(MODEL_NAMES)}")
    try:
        token = ControlToken(os.environ.get("CONTROL_TOKEN_FILE", CONTROL_TOKEN_FILE)).current()
    except ValueError as exc:
        print(f"orchestrator: error: {exc} (set CONTROL_TOKEN_FILE)", file=sys.stderr)
        return 1
    if args.command == "rollback":
        return ask("/rollback", {"model": args.model, "reason": args.reason}, token)
    candidates = [c for c in args.candidates.split(",") if c]
    codes = [
        ask("/retrain", {"model": model, "reason": args.reason, "candidates": candidates}, token)
        for model in args.models or MODEL_NAMES
    ]
    return max(codes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
