"""`python -m trainer`: train, compare, register and promote models. See `--help`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mlflow.exceptions import MlflowException

from contracts.models import MODELS
from contracts.settings import split_commas
from trainer.config import Settings
from trainer.data import SchemaError
from trainer.train import (
    CANDIDATES,
    Options,
    TrackingUnavailable,
    production_exists,
    run_session,
    wait_for_tracking_server,
)


def _csv_list(value: str) -> tuple[str, ...]:
    try:
        return tuple(split_commas(value))
    except ValueError:
        raise argparse.ArgumentTypeError("expected a comma-separated list") from None


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
        type=_csv_list,
        default=CANDIDATES,
        help=f"candidates, comma-separated (default {','.join(CANDIDATES)})",
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    overrides = {
        k: v for k, v in {"participant": args.participant, "tracking_uri": args.tracking_uri}.items() if v
    }
    settings = Settings(**overrides)
    options = Options(
        n_rows=args.n_rows,
        seed=args.seed,
        models=args.models,
        targets=args.targets,
        data_csv=args.data_csv,
        drift=args.drift,
        register=not args.no_register,
    )
    try:
        wait_for_tracking_server(settings)
        if args.if_no_production and production_exists(settings, options.targets):
            print("trainer: production models exist already; nothing to do (use `make train` to retrain)")
            return 0
        result = run_session(settings, options)
    except (TrackingUnavailable, SchemaError, ValueError, MlflowException) as exc:
        print(f"trainer: error: {exc}", file=sys.stderr)
        return 1
    for r in result.results:
        where = (
            f"v{r.version} ({'production' if r.promoted else 'staging only'})"
            if r.version
            else "not registered"
        )
        scores = ", ".join(f"{k} {v:.4f}" for k, v in r.test_rmse.items())
        print(f"{r.target}: best {r.best_model} -> {where}; test RMSE {scores}")
    print(
        f"session run {result.parent_run_id} in experiment {result.experiment_name} ({settings.tracking_uri})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
