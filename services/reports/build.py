"""Build reports: read MLflow (and Prometheus), render, write the files, log each on its session run
with a link to its page in the run's description."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from contracts import reports as names
from services.reports import Settings
from services.reports.collect import (
    NotFound,
    ReportData,
    load_experiment,
    load_session,
    participant_experiments,
)
from services.reports.report import Report, render
from services.reports.serving import ServingData, read_serving

log = logging.getLogger(__name__)


@dataclass
class Built:
    data: ReportData
    report: Report
    path: Path | None
    logged_on: str | None  # the session run the report was logged on
    url: str | None  # the page linked from that run's description
    problem: str = ""  # why it was not logged, when it was not


def page_url(settings: Settings, data: ReportData) -> str:
    session = data.session_id or (data.latest_session.run_id if data.latest_session else None)
    return settings.public_url.rstrip("/") + names.report_path(data.experiment, session)


def nav_links(data: ReportData) -> dict[str, str]:
    links = {"Reports": "/", "Leaderboard": "/leaderboard"}
    if data.session_id:
        links[f"Experiment {data.experiment}"] = names.report_path(data.experiment)
    return links


def log_on_run(client: MlflowClient, run_id: str, html: str, url: str) -> None:
    """The report as the run's artifact, and the page's link in its description (other lines kept)."""
    client.log_text(run_id, html, names.REPORT_ARTIFACT)
    note = client.get_run(run_id).data.tags.get(names.NOTE_TAG)
    client.set_tag(run_id, names.NOTE_TAG, names.describe_with_link(note, url))
    client.set_tag(run_id, names.REPORT_URL_TAG, url)


def build(
    client: MlflowClient,
    settings: Settings,
    experiment: str | None = None,
    session: str | None = None,
    window: str = "1h",
    out: Path | None = None,
    log_artifact: bool = True,
) -> list[Built]:
    """One report per participant experiment, or for `experiment`, or for the session `session`."""
    if session:
        datasets = [load_session(client, session)]
    elif experiment:
        datasets = [load_experiment(client, experiment)]
    else:
        datasets = [load_experiment(client, e.name) for e in participant_experiments(client)]
        if not datasets:
            raise NotFound("no experiment has a training session yet (make train)")
    serving: ServingData = read_serving(settings.prometheus.url, window)
    if not serving.available:
        log.warning("serving section left empty: %s", serving.reason)
    built = []
    for data in datasets:
        report = render(data, serving, nav_links(data))
        path = None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            stem = (
                data.experiment if not data.session_id else f"{data.experiment}-session-{data.session_id[:8]}"
            )
            path = out / f"{safe_name(stem)}.html"
            path.write_text(report.html, encoding="utf-8")
        result = Built(data, report, path, None, None)
        target = data.session_id or (data.latest_session.run_id if data.latest_session else None)
        if log_artifact and target:
            url = page_url(settings, data)
            try:
                log_on_run(client, target, report.html, url)
                result.logged_on, result.url = target, url
            except MlflowException as exc:
                result.problem = (
                    f"not logged on run {target} ({exc.error_code}): this login may not write there"
                )
                log.warning("%s", result.problem)
        built.append(result)
    return built


def safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
