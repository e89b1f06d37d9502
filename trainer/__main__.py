"""`python -m trainer`: train, compare, register and promote models. See `--help`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from contracts.logs import configure_logging
from contracts.models import MODELS, model_for_target
from contracts.settings import SettingsError, split_commas
from trainer import register
from trainer.config import Settings
from trainer.data import SchemaError
from trainer.gate import Thresholds
from trainer.train import (
    CANDIDATES,
    SHORT_NAMES,
    Options,
    TrackingUnavailable,
    candidate_name,
    one_line,
    production_exists,
    run_session,
    wait_for_tracking_server,
)


def _csv_list(value: str) -> tuple[str, ...]:
    try:
        return tuple(split_commas(value))
    except ValueError:
        raise argparse.ArgumentTypeError("expected a comma-separated list") from None


def _model_list(value: str) -> tuple[str, ...]:
    try:
        return tuple(dict.fromkeys(candidate_name(name) for name in split_commas(value)))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 100:
        raise argparse.ArgumentTypeError(f"must be at least 100, got {number}")
    return number


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Train latency and bandwidth-efficiency regressors, log them to MLflow, "
        "register the best per target (alias staging) and promote it to production if it beats "
        "the current production version on the same test data.",
    )
    parser.add_argument("--n-rows", type=_positive_int, default=20000, help="synthetic rows (default 20000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed for data and models")
    parser.add_argument(
        "--models",
        type=_model_list,
        default=CANDIDATES,
        help=f"candidates, comma-separated (default {','.join(CANDIDATES)}; short names "
        f"{', '.join(SHORT_NAMES)} work too)",
    )
    parser.add_argument(
        "--targets",
        type=_csv_list,
        default=tuple(m.target for m in MODELS),
        help=f"targets (default {','.join(m.target for m in MODELS)})",
    )
    parser.add_argument(
        "--data-csv",
        type=Path,
        help="train on this CSV (same columns as the generator) instead of synthetic data",
    )
    parser.add_argument(
        "--drift", type=float, default=0.0, help="shift synthetic feature distributions (0 none .. 1 strong)"
    )
    parser.add_argument("--participant", help="experiment name (default $PARTICIPANT or the OS user)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI)")
    parser.add_argument("--no-register", action="store_true", help="log runs only; do not touch the registry")
    parser.add_argument(
        "--if-no-production",
        action="store_true",
        help="do nothing when every model already has a production version",
    )
    retrain = parser.add_argument_group("retraining on production data (trainer/MLproject `retrain`)")
    retrain.add_argument("--production-data", help="artifact URI of a production window CSV to train on too")
    retrain.add_argument(
        "--holdout-data", help="artifact URI of the held-out recent window the gate judges on"
    )
    retrain.add_argument("--trigger", default="manual", help="what asked for this session (recorded)")
    gate_args = parser.add_argument_group("the promotion gate (docs/closed-loop.md)")
    defaults = Thresholds()
    gate_args.add_argument(
        "--gate-min-improvement",
        type=float,
        default=defaults.min_relative_improvement,
        help="relative RMSE improvement the candidate needs (default: strictly better)",
    )
    gate_args.add_argument(
        "--gate-min-rows",
        type=int,
        default=defaults.min_labelled_rows,
        help="held-out production rows the gate needs to judge",
    )
    gate_args.add_argument(
        "--gate-max-test-regression",
        type=float,
        default=defaults.max_test_regression,
        help="relative test RMSE regression allowed when the window says better",
    )
    gate_args.add_argument(
        "--gate-max-reference-regression",
        type=float,
        default=defaults.max_reference_regression,
        help="how far (relative) the reference RMSE may be above the model's recorded baseline",
    )
    pipeline = parser.add_argument_group("the CI pipeline (.github/workflows/retrain.yml)")
    pipeline.add_argument(
        "--no-promote",
        action="store_true",
        help="the gate judges; a version that passes waits for approval (staging only)",
    )
    pipeline.add_argument("--decisions-file", type=Path, help="write each target's gate decision here (JSON)")
    pipeline.add_argument(
        "--promote-approved",
        type=Path,
        metavar="DECISIONS_FILE",
        help="train nothing: move production to the versions in the file that await approval",
    )
    return parser.parse_args(argv)  # fmt: skip


def promote_approved(settings: Settings, decisions_file: Path) -> int:
    """The CI pipeline's promotion job: production for each version in the file that passed the gate."""
    try:
        decisions = json.loads(decisions_file.read_text())
    except (OSError, ValueError) as exc:
        print(f"trainer: error: cannot read {decisions_file}: {exc}", file=sys.stderr)
        return 1
    client, code = MlflowClient(settings.mlflow.tracking_uri), 0
    approver = os.environ.get("GITHUB_ACTOR") or settings.tags.participant
    for entry in decisions:
        name, version = entry["model"], str(entry.get("version"))
        if entry.get("decision") != "awaiting_approval":
            print(f"{name} v{version}: not promoted ({entry.get('decision')})")
            continue
        try:
            register.promote_approved(client, name, version, approver)
            print(f"{name} v{version} -> production (approved by {approver})")
        except (ValueError, MlflowException) as exc:
            print(f"trainer: error: {exc}", file=sys.stderr)
            code = 1
    return code


def main(argv: list[str] | None = None) -> int:
    configure_logging("trainer", stream=sys.stderr)  # stdout: the summary
    # MLflow prints a link per run built from the tracking URI (http://mlflow:5000 in the stack,
    # which no browser resolves); the summary below prints them with MLFLOW_PUBLIC_URL instead.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # A restart of the tracking server or its database must not fail a session: every MLflow call
    # is retried 7 times, waiting 2 s doubling up to 120 s (about 4 minutes in all; MLflow's own
    # defaults, kept on purpose). A restarted MLflow server took 80 s to answer again on a busy
    # 2-core machine (tests/integration/test_trainer_faults.py); docs/training.md, "Faults".
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "2")
    # log_model records which environment variables serving the model reads by patching
    # os.environ for the whole process while it validates the input example; another thread that
    # reads the environment meanwhile (the system-metrics thread, retrying its logging while
    # Postgres restarted) changes the set it then sorts: `RuntimeError: Set changed size during
    # iteration`, seen in `make e2e`. The record only feeds Databricks serving tips: off.
    os.environ.setdefault("MLFLOW_RECORD_ENV_VARS_IN_MODEL_LOGGING", "false")
    args = parse_args(argv)
    try:
        settings = Settings()  # type: ignore[call-arg]
    except SettingsError as exc:
        print(f"trainer: error: invalid settings: {exc}", file=sys.stderr)
        return 2
    settings.tags.participant = args.participant or settings.tags.participant
    settings.mlflow.tracking_uri = args.tracking_uri or settings.mlflow.tracking_uri
    if args.promote_approved:
        return promote_approved(settings, args.promote_approved)
    try:
        thresholds = Thresholds(
            args.gate_min_improvement,
            args.gate_min_rows,
            args.gate_max_test_regression,
            args.gate_max_reference_regression,
        )
    except ValueError as exc:
        print(f"trainer: error: {exc}", file=sys.stderr)
        return 2
    options = Options(
        n_rows=args.n_rows,
        seed=args.seed,
        models=args.models,
        targets=args.targets,
        data_csv=args.data_csv,
        drift=args.drift,
        register=not args.no_register,
        production_data=args.production_data,
        holdout_data=args.holdout_data,
        trigger=args.trigger,
        thresholds=thresholds,
        approval_required=args.no_promote,
    )
    try:
        wait_for_tracking_server(settings)
        if args.if_no_production and production_exists(settings, options.targets):
            print("trainer: production models exist already; nothing to do (use `make train` to retrain)")
            return 0
        result = run_session(settings, options)
    except (TrackingUnavailable, SchemaError, ValueError) as exc:
        print(f"trainer: error: {exc}", file=sys.stderr)
        return 1
    except (MlflowException, requests.RequestException, OSError) as exc:
        # A fault during the session (the tracking server gone for longer than the retries, a full
        # disk, a scratch directory gone): its runs are marked FAILED by now (trainer/train.py).
        done = "".join(f"; {note}" for note in getattr(exc, "__notes__", []))
        print(f"trainer: error: the session failed: {one_line(exc)}{done}", file=sys.stderr)
        return 1
    for r in result.results:
        where = (
            f"v{r.version} ({'production' if r.promoted else 'staging only'})"
            if r.version
            else "not registered"
        )
        scores = ", ".join(f"{k} {v:.4f}" for k, v in r.test_rmse.items())
        print(f"{r.target}: best {r.best_model} -> {where}; test RMSE {scores}")
        if link := settings.run_link(result.experiment_id, r.best_run_id):
            print(f"  best run: {link}")
    print(f"session run {result.parent_run_id} in experiment {result.experiment_name}")
    if args.decisions_file:
        decisions = [
            {"model": model_for_target(r.target).name, "target": r.target, "version": r.version,
             "decision": r.decision, "best_model": r.best_model}
            for r in result.results
        ]  # fmt: skip
        args.decisions_file.parent.mkdir(parents=True, exist_ok=True)
        args.decisions_file.write_text(json.dumps(decisions, indent=2) + "\n")
    for what, link in (
        ("session", settings.run_link(result.experiment_id, result.parent_run_id)),
        ("experiment", settings.experiment_link(result.experiment_id)),
    ):
        if link:
            print(f"  {what}: {link}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
