"""Browser tests' shared parts: headless Chromium through Playwright, a page that records what went
wrong, screenshots, and the workshop path through the MLflow UI as checks.

Both suites use this: tests/integration/test_browser.py (`make test`, a real MLflow server with a
tiny trained session) and tests/stack/test_browser.py (`make e2e`, the compose stack).

- Chromium is Debian's (`/usr/bin/chromium`, installed by infra/test-tools.sh); Playwright never
  downloads a browser (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 at install; never `playwright install`).
  Its flags keep it off the network: no background, component-update or sync traffic.
- Every page logs in with HTTP basic auth (Playwright's `http_credentials`), as a participant.
- Every page records console errors, failed requests and every host it talked to; on exit it
  saves a full-page screenshot to $MLOPS_SCREENSHOTS (default /tmp/mlops-screenshots), where CI
  keeps its logs.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from contracts import experiments
from contracts.models import MODEL_NAMES, STAGING
from contracts.schema import TARGETS

CHROMIUM = os.environ.get("MLOPS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(os.environ.get("MLOPS_SCREENSHOTS", "/tmp/mlops-screenshots"))
VIEWPORT = {"width": 1400, "height": 900}  # the screen: the workshop's laptops
TIMEOUT_MS = 60_000  # a page of the UI on a busy 2-core machine (seen taking 45 s at load 8)
expect.set_options(timeout=TIMEOUT_MS)  # assertions wait as long as actions (Playwright's default: 5 s)


@dataclass
class PageLog:
    """What a page did besides rendering: console errors, failed requests, the origins it called."""

    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    origins: set[str] = field(default_factory=set)
    urls: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        # Chromium's ResizeObserver notice is no error of the page (MLflow's tables trigger it)
        if message.type == "error" and "ResizeObserver loop" not in message.text:
            self.console_errors.append(message.text)

    def on_request(self, request: Request) -> None:
        self.urls.append(request.url)
        parts = urllib.parse.urlsplit(request.url)
        if parts.scheme in ("http", "https"):
            self.origins.add(f"{parts.scheme}://{parts.netloc}")

    def on_failed(self, request: Request) -> None:
        # ERR_ABORTED: the page cancelled the request itself, by navigating on (seen in the stack:
        # MLflow's telemetry worker script and an artifact listing, cut by the next page.goto).
        if request.failure != "net::ERR_ABORTED":
            self.failed_requests.append(f"{request.method} {request.url}: {request.failure}")


def require_chromium() -> None:
    """Fail, never skip: `make test` installs Chromium (infra/test-tools.sh)."""
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is not installed: run `make test-tools` (Debian package chromium)")


@pytest.fixture(name="browser", scope="session")
def browser_fixture() -> Iterator[Browser]:
    """One headless Chromium for the session."""
    require_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@contextmanager
def open_page(
    browser: Browser, name: str, login: tuple[str, str], downloads: Path | None = None
) -> Iterator[tuple[Page, PageLog]]:
    """A fresh browser profile logged in as `login`; a screenshot `<name>.png` on exit, pass or fail."""
    context = browser.new_context(
        viewport=VIEWPORT,  # type: ignore[arg-type]
        http_credentials={"username": login[0], "password": login[1]},
        accept_downloads=downloads is not None,
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    record = PageLog()
    page.on("console", record.on_console)
    page.on("request", record.on_request)
    page.on("requestfailed", record.on_failed)
    try:
        yield page, record
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")
        try:
            page.screenshot(path=str(SCREENSHOTS / f"{safe}.png"), full_page=True)
        finally:
            context.close()


@pytest.fixture(name="page_as")
def page_as_fixture(browser: Browser, request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """`with page_as(login) as (page, log):` a page named after the test (its screenshot's name)."""

    @contextmanager
    def factory(login: tuple[str, str]) -> Iterator[tuple[Page, PageLog]]:
        with open_page(browser, request.node.name, login, downloads=tmp_path) as opened:
            yield opened

    return factory


@dataclass(frozen=True)
class Version:
    """A registered model's version as the registry records it: what its page must show."""

    version: str
    aliases: tuple[str, ...]
    description: str  # `<outcome>: <reason>.` (trainer/register.py)
    reason: str  # its `promotion.reason` tag


@dataclass(frozen=True)
class Session:
    """One participant's trained session, as the checks need it."""

    ui: str  # the MLflow UI's base URL as the browser reaches it
    login: tuple[str, str]  # the participant's basic-auth login
    experiment_name: str
    experiment_id: str
    parent_run_id: str
    parent_run_name: str
    candidates: dict[str, str]  # run name (`random-forest-latency_ms`) -> run id
    versions: dict[str, Version]  # registered model name -> its version at the `staging` alias


def registered_versions(client: MlflowClient) -> dict[str, Version]:
    """Each registered model's latest registered version (the one `staging` points at)."""
    found = {}
    for name in MODEL_NAMES:
        mv = client.get_model_version_by_alias(name, STAGING)
        found[name] = Version(
            str(mv.version), tuple(mv.aliases), mv.description or "", mv.tags.get("promotion.reason", "")
        )
        assert found[name].description and found[name].reason, f"{name} v{mv.version} has no decision"
    return found


def latest_session(client: MlflowClient, ui: str, login: tuple[str, str], experiment_name: str) -> Session:
    """The experiment's latest training session (a top-level run with candidate children)."""
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None, f"no experiment {experiment_name!r}"
    runs = client.search_runs([experiment.experiment_id], max_results=500, order_by=["start_time DESC"])
    for parent in (r for r in runs if "mlflow.parentRunId" not in r.data.tags):
        candidates = {
            str(r.info.run_name): r.info.run_id
            for r in runs
            if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id and "model" in r.data.params
        }
        if candidates:
            return Session(
                ui, login, experiment_name, str(experiment.experiment_id), parent.info.run_id,
                str(parent.info.run_name), candidates, registered_versions(client),
            )  # fmt: skip
    raise AssertionError(f"no training session in experiment {experiment_name!r}")


def wait_for_ui(page: Page) -> None:
    """The single-page app has rendered: its sidebar is there (it polls, so the network never idles)."""
    expect(page.get_by_role("link", name="Settings", exact=True)).to_be_visible()  # the sidebar


# --- the workshop path: each check is one step a participant takes --------------------------------
# The texts below are what MLflow 3.17.2's UI renders (seen in headless Chromium, 1400x900).


def check_first_screen(page: Page, session: Session) -> None:
    """The experiment link the platform prints opens the runs table in the model-training view:
    the page is headed "Runs" (the GenAI view heads it "Training runs"), the sidebar has the model
    registry (the GenAI one has prompts and judges instead), no "Detect Issues" pop-up, and the
    key test metrics best first (the session's own run, which has none, sorts last: on the stack
    it may be below the screen; check_candidates_table opens it)."""
    page.goto(experiments.experiment_url(session.ui, session.experiment_id))
    wait_for_ui(page)
    expect(page).to_have_url(re.compile(rf"/experiments/{session.experiment_id}/runs\b"))
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Model registry", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Judges", exact=True)).to_have_count(0)
    expect(page.get_by_text("Detect Issues")).to_have_count(0)
    expect_key_metrics_table(page)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "first-screen.png"))  # what a participant sees (docs/images)


# --- a person's first visit: the printed URL, a fresh browser, only clicks -------------------------


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def expect_model_training_view(page: Page) -> None:
    """The model-training view with nothing over it: its sidebar has the model registry (GenAI's
    has prompts and judges instead), no "Detect Issues" pop-up and no MLflow Assistant panel
    (MLflow opens it by itself once on a localhost server; its floating button may stay)."""
    expect(page.get_by_role("link", name="Model registry", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Prompts", exact=True)).to_have_count(0)
    expect(page.get_by_role("link", name="Judges", exact=True)).to_have_count(0)
    expect(page.get_by_text("Detect Issues")).to_have_count(0)
    expect(page.get_by_placeholder("Ask a question...")).to_have_count(0)  # the Assistant panel's box


def expect_key_metrics_table(page: Page) -> None:
    """The runs table as a fresh browser first shows a platform experiment: sorted by test RMSE
    (the page puts the sort into its URL), the key test metrics as column headers on screen, and
    a candidate's test RMSE in the first row."""
    expect(page).to_have_url(re.compile(r"orderByKey=metrics\.(%60|`)test_rmse(%60|`)"))
    for metric in experiments.KEY_METRICS:
        expect(page.get_by_role("columnheader", name=re.compile(rf"^{metric}\b")).first).to_be_in_viewport()
    # AG Grid draws the pinned run-name column and the others in separate rows: the best run's
    # test RMSE is the first row's cell in the test_rmse column.
    best = page.locator('.ag-center-cols-container [row-index="0"] [col-id="metrics.`test_rmse`"]')
    expect(best).to_have_text(re.compile(r"\d"))


def check_first_visit(page: Page, session: Session, printed_url: str) -> None:
    """What a person does on a browser that has never seen the platform: open the URL `make up`
    printed (the browser's basic-auth prompt takes the participant's login), then only click: their
    experiment's runs with the key test metrics, sorted by test RMSE without anyone sorting or
    picking columns, two candidates compared, a run's model and artifacts,
    the registry's versions with their aliases. A screenshot per step (`first-visit-<n>-<step>`)."""
    page.goto(printed_url)
    wait_for_ui(page)
    expect_model_training_view(page)
    screenshot(page, "first-visit-1-printed-url")

    page.get_by_role("link", name="Experiments", exact=True).click()
    page.get_by_role("link", name=session.experiment_name, exact=True).first.click()
    expect(page).to_have_url(re.compile(rf"/experiments/{session.experiment_id}/runs\b"))
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    expect_model_training_view(page)
    # The workshop's first activity (workshop guide, step 1), with nothing sorted or picked: the
    # platform's runs-table view for an experiment this browser has not opened
    # (services/mlflow/app.py, RUNS_TABLE): the key test metrics on screen, best test RMSE first.
    expect_key_metrics_table(page)
    screenshot(page, "first-visit-2-experiment")
    candidate = page.get_by_role(
        "link", name=re.compile(r"^(linear-regression|random-forest|gradient-boosting)-")
    )
    rows = page.get_by_role("row").filter(has=candidate)
    expect(rows.nth(1)).to_be_visible()
    screenshot(page, "first-visit-3-runs-by-test-rmse")

    for index in (0, 1):
        rows.nth(index).get_by_role("checkbox").first.click()
    page.get_by_role("button", name="Compare", exact=True).click()
    expect(page.get_by_role("heading", name="Comparing 2 Runs from 1 Experiment", exact=True)).to_be_visible()
    for metric in experiments.KEY_METRICS:
        expect(page.get_by_role("link", name=metric, exact=True)).to_be_visible()
    screenshot(page, "first-visit-4-compare")

    page.go_back()  # the browser's back button, to the runs table
    run = candidate.first
    run_name = run.inner_text().strip()
    run.click()
    expect(page.get_by_role("heading", name=run_name, exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name=re.compile(r"^Logged models \(\d+\)$"))).to_be_visible()
    page.get_by_role("tab", name="Artifacts", exact=True).click()
    page.get_by_text("preprocessor", exact=True).first.click()
    expect(page.get_by_text("preprocessor.skops", exact=True).first).to_be_visible()
    screenshot(page, "first-visit-5-artifacts")

    page.get_by_role("link", name="Model registry", exact=True).click()
    dismiss_registry_promotion(page)
    name, version = next(iter(session.versions.items()))
    page.get_by_role("link", name=name, exact=True).click()
    expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
    row = page.get_by_role("row").filter(
        has=page.get_by_role("link", name=f"Version {version.version}", exact=True)
    )
    for alias in version.aliases:
        expect(row.get_by_role("status", name=alias, exact=True)).to_be_visible()
    screenshot(page, "first-visit-6-registry")


def check_experiment_listed(page: Page, session: Session) -> None:
    page.goto(f"{session.ui}/#/experiments")
    wait_for_ui(page)
    expect(page.get_by_role("link", name=session.experiment_name, exact=True).first).to_be_visible()


def check_candidates_table(page: Page, session: Session) -> None:
    """The session run's description (Markdown) links to its candidates: the runs table it opens
    shows every candidate, and the link keeps the model-training view."""
    page.goto(experiments.run_url(session.ui, session.experiment_id, session.parent_run_id))
    wait_for_ui(page)
    expect(page.get_by_role("heading", name=session.parent_run_name, exact=True)).to_be_visible()
    link = page.get_by_role("link", name="All candidate runs of this session", exact=True)
    expect(link).to_be_visible()
    href = link.get_attribute("href")  # the description's links may open a new tab: follow it here
    assert href and experiments.ui_query() in href, f"the candidates link leaves the view: {href}"
    page.goto(href)
    wait_for_ui(page)
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    for name in session.candidates:
        expect(page.get_by_role("link", name=name, exact=True).first).to_be_visible()


def check_compare(page: Page, session: Session, target: str) -> None:
    """Linear regression against random forest for `target`: MAE, RMSE and R2 side by side."""
    names = [f"{model}-{target}" for model in ("linear-regression", "random-forest")]
    runs = [session.candidates[name] for name in names]
    page.goto(experiments.compare_url(session.ui, session.experiment_id, runs))
    wait_for_ui(page)
    expect(page.get_by_role("heading", name="Comparing 2 Runs from 1 Experiment", exact=True)).to_be_visible()
    for name in names:  # the "Run Name:" row
        expect(page.get_by_role("cell", name=name, exact=True)).to_be_visible()
    for metric in experiments.KEY_METRICS:  # the "Metrics" table's row headers
        expect(page.get_by_role("link", name=metric, exact=True)).to_be_visible()


def check_artifacts_download(page: Page, log: PageLog, session: Session, run_name: str) -> bytes:
    """The run lists its logged model (MLflow 3 keeps models beside the run, not in its artifact
    tree) and its artifacts hold the preprocessing pipeline; the pipeline downloads through the UI
    from the tracking server itself (proxied), never from a presigned S3 URL."""
    run_id = session.candidates[run_name]
    page.goto(experiments.run_url(session.ui, session.experiment_id, run_id))
    wait_for_ui(page)
    # a registered candidate also has its ONNX form (`model-onnx`): one or more logged models
    expect(page.get_by_role("heading", name=re.compile(r"^Logged models \(\d+\)$"))).to_be_visible()
    model = page.locator(f'a[href*="/experiments/{session.experiment_id}/models/m-"]').first
    expect(model).to_be_visible()
    page.get_by_role("tab", name="Artifacts", exact=True).click()
    page.get_by_text("preprocessor", exact=True).first.click()  # the folder in the artifact tree
    page.get_by_text("preprocessor.skops", exact=True).first.click()
    header = page.get_by_text("preprocessor/preprocessor.skops", exact=True)
    expect(header).to_be_visible()
    button = header.locator("xpath=following::button[1]")  # the icon next to the file's name
    button.hover()
    expect(page.get_by_role("tooltip", name="Download artifact")).to_be_visible()
    with page.expect_download() as download_info:
        button.click()
    download = download_info.value
    assert download.suggested_filename == "preprocessor.skops", download.suggested_filename
    content = Path(download.path()).read_bytes()
    assert content, "the downloaded preprocessor is empty"
    ui = urllib.parse.urlsplit(session.ui)
    assert log.origins == {f"{ui.scheme}://{ui.netloc}"}, (
        f"the UI called hosts besides the tracking server: {sorted(log.origins)}"
    )
    return content


def dismiss_registry_promotion(page: Page) -> None:
    """MLflow 3.17.2 greets a browser's first visit to the registry with a "new Model Registry UI"
    dialog over the list; "Try it now" closes it and keeps that UI, as a participant would."""
    dialog = page.get_by_role("dialog").filter(has_text="Model Registry UI")
    try:
        dialog.get_by_role("button", name="Try it now").click(timeout=5000)
    except PlaywrightTimeoutError:
        return  # not shown (already dismissed in this browser profile)
    expect(dialog).to_be_hidden()


def check_registry(page: Page, session: Session) -> None:
    """Both registered models, each with its latest version and that version's aliases."""
    page.goto(f"{session.ui}/#/models")
    wait_for_ui(page)
    expect(page.get_by_role("heading", name="Registered Models", exact=True)).to_be_visible()
    for name in session.versions:
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
    for name, version in session.versions.items():
        # From the list, as a participant gets there. Going from one model's page straight to the
        # other's URL keeps the page mounted, and MLflow 3.17.2's new registry view then lists no
        # versions for the second model (it does not search again; seen in this test).
        page.goto(f"{session.ui}/#/models")
        dismiss_registry_promotion(page)
        page.get_by_role("link", name=name, exact=True).click()
        wait_for_ui(page)
        expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
        link = page.get_by_role("link", name=f"Version {version.version}", exact=True)
        row = page.get_by_role("row").filter(has=link)
        expect(row).to_have_count(1)
        for alias in version.aliases:  # shown as "@ production" in the version's row
            expect(row.get_by_role("status", name=alias, exact=True)).to_be_visible()


def check_version_decision(page: Page, session: Session, name: str) -> None:
    """The latest version's page says why it was or was not promoted: its description and its
    `promotion.reason` tag, with its aliases."""
    version = session.versions[name]
    page.goto(f"{session.ui}/#/models/{urllib.parse.quote(name)}/versions/{version.version}")
    wait_for_ui(page)
    expect(page.get_by_role("heading", name=f"Version {version.version}", exact=True)).to_be_visible()
    expect(page.get_by_role("paragraph").filter(has_text=version.description).first).to_be_visible()
    reason = page.get_by_role("row", name=f"promotion.reason {version.reason}", exact=True)
    expect(reason).to_be_visible()
    for alias in version.aliases:
        expect(page.get_by_role("status", name=alias, exact=True)).to_be_visible()


def check_report_pages(page: Page, reports: str, experiment: str) -> list[str]:
    """The participant's report and the leaderboard (services/reports) as a reader sees them: every
    plot of the report drawn at a readable size, the quality plot of each target among them, and the
    leaderboard's table for each target. Returns the report's plot ids."""
    page.goto(f"{reports}/reports/{urllib.parse.quote(experiment)}", timeout=300_000)
    expect(page.locator("#summary")).to_be_visible()
    figures = page.locator("figure.plot")
    expect(figures.first).to_be_visible()
    ids = []
    for index in range(figures.count()):
        figure = figures.nth(index)
        ids.append(figure.get_attribute("id") or f"figure {index}")
        box = figure.locator("svg").first.bounding_box()
        assert box and box["width"] > 200 and box["height"] > 100, (ids[-1], box)
    assert {f"plot-quality-{target}" for target in TARGETS} <= set(ids), ids
    page.goto(f"{reports}/leaderboard")
    for target in TARGETS:
        expect(page.locator(f"#leaderboard-{target}")).to_be_visible()
    return ids
