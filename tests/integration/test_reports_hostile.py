"""Reports of a participant whose every name is a script payload, in headless Chromium.

A real MLflow server on Postgres holds a session logged the way a participant can log one, with
their own client: the experiment, run names, the `model`/`target` params, the registry's and the
closed loop's tags are payloads that set `window.__pwned`, open a dialog or write to the console
when they run. The real reports service serves it; the report file is built and logged as
`make report` does. Each page is opened twice: with its Content-Security-Policy bypassed (escaping
alone must stop every payload) and with it (nothing executes, and the policy had nothing to block).
Then a script we inject on purpose is blocked by the policy: the header's, and the report file's
<meta>, which is all the file has where it is opened from MLflow.
"""

from __future__ import annotations

import re
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.tracking import MlflowClient
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, Route

from contracts import reports as names
from contracts.experiments import RETRAINING_EXPERIMENT
from services.local import Processes, start_mlflow, wait_http
from services.reports import Settings
from services.reports.build import build
from services.reports.templates import SECURITY_HEADERS
from tests.browser import TIMEOUT_MS
from tests.conftest import free_port, fresh_database

pytestmark = pytest.mark.integration

# Each payload, if it ran, would leave a trace: the flag, a dialog, or a console line with PWNED.
RUNS = (
    "<script>window.__pwned='script';console.log('PWNED script')</script>",
    "\"><img src=x onerror=\"window.__pwned='img';alert('PWNED img')\">",
    "' onmouseover='window.__pwned=1' autofocus onfocus='window.__pwned=\"focus\"' x='",
    "</svg><svg onload=\"window.__pwned='svg';confirm('PWNED svg')\">",
    "--><img src=x onerror=\"window.__pwned='comment'\"><!--",
    "$\\frac{$ javascript:window.__pwned='js'",
)
HOSTILE = "".join(RUNS)
RUN_NAMES = (RUNS[1] + RUNS[5], RUNS[0] + RUNS[3], RUNS[2] + RUNS[4])  # MLflow keeps 250 characters
# A page path holds no `/`, so the experiment's name (in every page, and in the report's address)
# gets the payloads without one.
EXPERIMENT = "\"><svg onload=\"window.__pwned='experiment'\"><img src=x onerror=alert('PWNED')>' x='"
TARGET = f"{HOSTILE}-target"
SERVED_ORIGIN = "http://report.test"  # pages the browser gets from a route handler, never the network


@dataclass
class Hostile:
    tracking: str
    client: MlflowClient
    session_id: str
    reports: str  # the reports service's URL


def log_hostile_session(client: MlflowClient) -> str:
    """A session of two candidates as the trainer leaves one (contracts/reports.py), every name a
    payload; a registered version and a retraining run whose tags are payloads. Returns the session id."""
    experiment_id = client.create_experiment(EXPERIMENT)
    session = client.create_run(experiment_id, run_name=RUN_NAMES[0], tags={"participant": HOSTILE})
    session_id = session.info.run_id
    client.log_param(session_id, "models", HOSTILE)
    client.log_param(session_id, "targets", TARGET)
    for i in (1, 2):
        run = client.create_run(
            experiment_id, run_name=RUN_NAMES[i], tags={names.PARENT_TAG: session_id, "note": HOSTILE}
        )
        client.log_param(run.info.run_id, names.MODEL_PARAM, f"{HOSTILE}-model{i}")
        client.log_param(run.info.run_id, names.TARGET_PARAM, TARGET)
        client.log_param(run.info.run_id, "comment", HOSTILE)
        for key, value in {"val_rmse": 2.0, "test_rmse": 3.0, "val_mae": 1.0, "test_mae": 1.5}.items():
            client.log_metric(run.info.run_id, key, value + i)
        client.log_metric(run.info.run_id, names.CPU_SECONDS, 0.5 * i)
        client.log_metric(run.info.run_id, names.PEAK_RSS_MB, 100.0 * i)
        client.set_terminated(run.info.run_id)
        if i == 1:
            candidate = run.info.run_id
    client.set_terminated(session_id)
    client.create_registered_model("latency-predictor")
    tags = {k: HOSTILE for k in ("promotion.decision", "promotion.reason", "promotion.trigger", "model")}
    tags |= {"rollback.to_version": HOSTILE, "rollback.reason": HOSTILE}
    client.create_model_version(
        "latency-predictor", f"runs:/{candidate}/model", candidate, tags={**tags, "run_id": candidate}
    )
    retraining = client.create_experiment(RETRAINING_EXPERIMENT)
    loop = client.create_run(
        retraining, tags={"trigger": HOSTILE, "trigger.detail": HOSTILE, "model": HOSTILE}
    )
    client.set_tag(loop.info.run_id, "outcome.reason", HOSTILE)
    client.set_terminated(loop.info.run_id)
    return session_id


@pytest.fixture(scope="module")
def hostile(postgres_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    base = tmp_path_factory.mktemp("reports-hostile")
    procs = Processes(log_dir=base / "logs")
    try:
        tracking = start_mlflow(procs, fresh_database(postgres_uri, "reports_hostile"), base, free_port())
        client = MlflowClient(tracking)
        session_id = log_hostile_session(client)
        port = free_port()
        env = {
            "MLFLOW_TRACKING_URI": tracking,
            "PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: section empty
            "REPORTS_HOST": "127.0.0.1",
            "REPORTS_PORT": str(port),
            "REPORTS_CACHE_S": "0",
        }
        proc = procs.start("reports", [sys.executable, "-m", "services.reports", "serve"], env)
        wait_http(f"http://127.0.0.1:{port}/health", proc, 60, "the reports service")
        yield Hostile(tracking, client, session_id, f"http://127.0.0.1:{port}")
    finally:
        procs.stop_all()


def page_paths(hostile: Hostile) -> dict[str, tuple[str, int]]:
    """Every HTML page of the service: name -> (path, status)."""
    experiment = urllib.parse.quote(EXPERIMENT, safe="")
    return {
        "index": ("/", 200),
        "report": (f"/reports/{experiment}", 200),
        "session": (f"/reports/{experiment}/sessions/{hostile.session_id}", 200),
        "leaderboard": ("/leaderboard", 200),
        "bad window": (f"/reports/{experiment}?window={urllib.parse.quote(RUNS[1])}", 400),
        "unknown experiment": (f"/reports/{urllib.parse.quote(RUNS[1] + RUNS[2], safe='')}", 404),
    }


@dataclass
class Traces:
    """What script would have left: dialogs, console lines, policy violations."""

    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def on_console(self, message: ConsoleMessage) -> None:
        self.console.append(f"{message.type}: {message.text}")

    @property
    def violations(self) -> list[str]:
        return [line for line in self.console if "Content Security Policy" in line]


@contextmanager
def browsing(browser: Browser, bypass_csp: bool) -> Iterator[tuple[Page, Traces]]:
    context = browser.new_context(bypass_csp=bypass_csp)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    traces = Traces()
    page.on("dialog", traces.on_dialog)
    page.on("console", traces.on_console)
    try:
        yield page, traces
    finally:
        context.close()


def assert_nothing_ran(page: Page, traces: Traces, what: str) -> None:
    # Give handlers a chance: focus and hover over the whole page, every element's load/error fired.
    page.mouse.move(10, 10)
    page.keyboard.press("Tab")
    page.wait_for_timeout(200)
    assert page.evaluate("typeof window.__pwned") == "undefined", (what, page.evaluate("window.__pwned"))
    assert not traces.dialogs, (what, traces.dialogs)
    assert not [line for line in traces.console if "PWNED" in line], (what, traces.console)


def serve_in_browser(page: Page, html: str, headers: dict[str, str]) -> None:
    """`html` at SERVED_ORIGIN with `headers`; anything else the page asks for is a 404."""

    def handle(route: Route) -> None:
        if route.request.url.rstrip("/") == SERVED_ORIGIN:
            route.fulfill(
                status=200, body=html, headers={"Content-Type": "text/html; charset=utf-8", **headers}
            )
        else:
            route.fulfill(status=404, body="")

    page.route("**/*", handle)
    page.goto(SERVED_ORIGIN + "/")


def test_every_page_sends_the_security_headers_and_shows_the_payloads_as_text(hostile: Hostile) -> None:
    for name, (path, status) in page_paths(hostile).items():
        answer = requests.get(hostile.reports + path, timeout=300)
        assert answer.status_code == status, (name, answer.text[:500])
        assert answer.headers["content-type"].startswith("text/html"), name
        for header, value in SECURITY_HEADERS.items():
            assert answer.headers.get(header) == value, (name, header, answer.headers.get(header))
    report = requests.get(hostile.reports + page_paths(hostile)["report"][0], timeout=300).text
    assert "&lt;script&gt;window.__pwned=&#39;script&#39;" in report
    assert len(re.findall(r'<figure class="plot"', report)) == 3  # quality, cost, registry: drawn


def test_nothing_runs_in_the_browser_by_escaping_alone_or_with_the_policy(
    hostile: Hostile, browser: Browser
) -> None:
    for bypass_csp in (True, False):
        with browsing(browser, bypass_csp) as (page, traces):
            for name, (path, _) in page_paths(hostile).items():
                page.goto(hostile.reports + path, timeout=300_000)
                page.wait_for_load_state("load")
                assert_nothing_ran(page, traces, f"{name} (policy {'bypassed' if bypass_csp else 'on'})")
                if name == "report":
                    # The payloads are on the page as text, where a reader sees them.
                    assert f"{HOSTILE}-model1" in page.locator("#candidates").inner_text()
            # Escaping stopped every payload: the policy had nothing to block.
            assert not traces.violations, traces.violations


def test_the_report_file_runs_nothing_and_its_meta_policy_blocks_an_injected_script(
    hostile: Hostile, browser: Browser, tmp_path: Path
) -> None:
    settings = Settings.from_env(
        dict(MLFLOW_TRACKING_URI=hostile.tracking, PROMETHEUS_URL=f"http://127.0.0.1:{free_port()}")
    )
    [built] = build(hostile.client, settings, session=hostile.session_id, out=tmp_path)
    assert built.logged_on == hostile.session_id, built.problem
    logged = Path(
        mlflow.artifacts.download_artifacts(
            run_id=hostile.session_id, artifact_path=names.REPORT_ARTIFACT, tracking_uri=hostile.tracking
        )
    ).read_text()
    assert logged == built.report.html
    # As the file is opened from MLflow or from disk: no header, only its <meta> policy.
    for bypass_csp in (True, False):
        with browsing(browser, bypass_csp) as (page, traces):
            serve_in_browser(page, logged, {})
            assert_nothing_ran(page, traces, f"report file (policy {'bypassed' if bypass_csp else 'on'})")
            assert not traces.violations, traces.violations
    # A script that got in anyway (here, on purpose, right after the <meta>) is blocked by it...
    injected = logged.replace("<title>", "<script>window.__pwned='injected'</script><title>", 1)
    with browsing(browser, bypass_csp=False) as (page, traces):
        serve_in_browser(page, injected, {})
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert traces.violations, traces.console
    # ...and runs without the policy: the check above can fail.
    with browsing(browser, bypass_csp=True) as (page, traces):
        serve_in_browser(page, injected, {})
        assert page.evaluate("window.__pwned") == "injected"


def test_the_header_policy_alone_blocks_an_injected_script(hostile: Hostile, browser: Browser) -> None:
    """A served page without its <meta>, with a script injected, under the service's own headers."""
    answer = requests.get(f"{hostile.reports}/leaderboard", timeout=300)
    html = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", answer.text)
    assert "Content-Security-Policy" not in html
    injected = html.replace("</h1>", "</h1><script>window.__pwned='injected'</script>", 1)
    headers = {k: v for k, v in answer.headers.items() if k.lower() in {h.lower() for h in SECURITY_HEADERS}}
    assert len(headers) == len(SECURITY_HEADERS)
    with browsing(browser, bypass_csp=False) as (page, traces):
        serve_in_browser(page, injected, headers)
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert traces.violations, traces.console
        # The stylesheet is allowed by its hash: the page is styled (the table header's grey).
        background = page.locator("th").first.evaluate("e => getComputedStyle(e).backgroundColor")
        assert background == "rgb(238, 238, 238)", background
