"""`python -m services.reports build|serve`: write reports and log them on their session runs, or
serve the report pages and the leaderboard on REPORTS_PORT (8003). See `--help`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from mlflow.exceptions import MlflowException

from contracts.logs import configure_logging, with_request_id
from contracts.settings import SettingsError
from services.reports import Settings
from services.reports.collect import NotFound
from services.reports.serving import window_seconds


def _window(value: str) -> str:
    try:
        window_seconds(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m services.reports",
        description="Reports of training sessions (quality, cost, registry, serving) and the leaderboard.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser(
        "build",
        help="write one HTML report per participant experiment (or one) and log it on its session run",
    )
    which = build.add_mutually_exclusive_group()
    which.add_argument("--experiment", help="only this participant's experiment")
    which.add_argument("--session", help="only this training session (its run id)")
    build.add_argument(
        "--window", type=_window, help="serving window, like 1h or 30m (default $REPORTS_WINDOW or 1h)"
    )
    build.add_argument(
        "--out", type=Path, default=Path("reports"), help="folder for the HTML files (default ./reports)"
    )
    build.add_argument("--no-log", action="store_true", help="write the files only; log nothing on the runs")
    commands.add_parser(
        "serve", help="serve the index, the reports, /leaderboard, /api/leaderboard, /metrics, /health"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # `build` prints the reports it wrote on stdout: its log lines go to stderr.
    configure_logging("reports", stream=None if args.command == "serve" else sys.stderr)
    try:
        settings = Settings()  # type: ignore[call-arg]
    except SettingsError as exc:
        print(f"reports: error: {exc}", file=sys.stderr)
        return 1
    # Fail within seconds when the tracking server is down, not after MLflow's default retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    if args.command == "serve":
        return serve(settings)
    return build(settings, args)


def build(settings: Settings, args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from services.reports.build import build as build_reports

    try:
        built = build_reports(
            MlflowClient(settings.mlflow.tracking_uri),
            settings,
            experiment=args.experiment,
            session=args.session,
            window=args.window or settings.window,
            out=args.out,
            log_artifact=not args.no_log,
        )
    except NotFound as exc:
        print(f"reports: error: {exc}", file=sys.stderr)
        return 2
    except MlflowException as exc:
        reason = " ".join(str(exc.message).split())
        reason = reason if len(reason) <= 200 else reason[:197] + "..."
        print(
            f"reports: error: tracking server {settings.mlflow.tracking_uri} failed "
            f"({exc.error_code}): {reason}",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:  # the server unreachable and the like: one line, no traceback
        text = " ".join(str(exc).split())[:300]
        print(f"reports: error: {type(exc).__name__}: {text}", file=sys.stderr)
        return 1
    for result in built:
        where = (
            f"logged on run {result.logged_on} ({result.url})"
            if result.logged_on
            else result.problem or "not logged"
        )
        print(f"{result.path}: {result.report.title}; {where}")
    return 0


def serve(settings: Settings) -> int:
    import uvicorn

    from services.reports.app import create_app

    logging.info(
        "reports of %s, serving figures from %s; listening on %s:%d",
        settings.mlflow.tracking_uri,
        settings.prometheus.url,
        settings.host,
        settings.port,
    )
    uvicorn.run(
        with_request_id(create_app(settings)),
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_config=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
