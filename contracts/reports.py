"""Names the reports service shares with the trainer, the orchestrator and the tests.

What a training session leaves in MLflow, as the reports read it (trainer/train.py writes it):
- the session run: params `models` and `targets`, tag `participant`, and per target the tags
  `<target>.best_model`, `<target>.version` and `<target>.promotion.*`;
- one nested candidate run per candidate and target: params `model` and `target`, metrics
  `val_*`/`test_*` (MAE, RMSE, R2), `fit_seconds` and `resource/*`;
- gate runs (`gate.role` tag) are nested too, but are no candidates.

The report of a session is logged on its run as `REPORT_ARTIFACT`; its page's address is written
into the run's description (`mlflow.note.content`) under `REPORT_LINK_LABEL`. Standard library only.
"""

from __future__ import annotations

import urllib.parse

REPORT_ARTIFACT = "reports/report.html"
# Tag with the report page's address, next to the description link (easy to read back by code).
REPORT_URL_TAG = "report.url"
# The line of the run description that carries the link; the reports service replaces it, never
# the rest of the description.
REPORT_LINK_LABEL = "Report:"
NOTE_TAG = "mlflow.note.content"
PARENT_TAG = "mlflow.parentRunId"
GATE_ROLE_TAG = "gate.role"

# Candidate-run params and metrics the reports read.
MODEL_PARAM, TARGET_PARAM = "model", "target"
SESSION_PARAMS = ("models", "targets")
METRICS = ("mae", "rmse", "r2")
SPLITS = ("val", "test")
FIT_SECONDS = "fit_seconds"
CPU_SECONDS = "resource/cpu_seconds"
PEAK_RSS_MB = "resource/peak_rss_megabytes"


def metric_name(split: str, metric: str) -> str:
    """'test', 'rmse' -> 'test_rmse' (trainer/evaluate.regression_metrics)."""
    return f"{split}_{metric}"


def report_path(experiment: str, session_run_id: str | None = None) -> str:
    """The page of an experiment's report, or of one session's: `/reports/<experiment>[/sessions/<id>]`."""
    path = f"/reports/{urllib.parse.quote(experiment, safe='')}"
    return f"{path}/sessions/{session_run_id}" if session_run_id else path


def describe_with_link(description: str | None, url: str) -> str:
    """The run description with its report line set to `url`; every other line kept as it was."""
    lines = [line for line in (description or "").splitlines() if not line.startswith(REPORT_LINK_LABEL)]
    while lines and not lines[-1].strip():
        lines.pop()
    link = f"{REPORT_LINK_LABEL} [{url}]({url})"
    return "\n\n".join(part for part in ("\n".join(lines), link) if part)
