"""services.reports pieces without servers: windows, the description link, the plots' style, a
report rendered from hand-made runs, and the same with participant text made of script payloads."""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi import FastAPI
from mlflow.tracking import MlflowClient
from starlette.testclient import TestClient

from contracts import reports as names
from contracts.errors import install_error_handlers
from services.reports import Settings
from services.reports.app import create_app
from services.reports.build import nav_links
from services.reports.cache import Cache
from services.reports.collect import Candidate, ReportData, Retraining, Session, Version
from services.reports.leaderboard import Entry
from services.reports.report import ENV, render
from services.reports.routes import api, pages
from services.reports.routes.deps import get_cache, get_client, get_settings
from services.reports.routes.pages import html_error
from services.reports.serving import ServingData, window_seconds
from services.reports.templates import BASE_CSS, CSP, CSP_META, INDEX, LEADERBOARD, SECURITY_HEADERS


@pytest.mark.parametrize(("window", "seconds"), [("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800)])
def test_windows(window: str, seconds: int) -> None:
    assert window_seconds(window) == seconds


@pytest.mark.parametrize("window", ["", "1", "0h", "1w", "1h30m", "-1h", "1 h"])
def test_bad_windows_name_the_expected_form(window: str) -> None:
    with pytest.raises(ValueError, match="expected a number and a unit s, m, h or d"):
        window_seconds(window)


def test_the_report_link_replaces_its_line_and_keeps_the_rest() -> None:
    url = "http://localhost:8003/reports/alice/sessions/abc"
    assert names.describe_with_link(None, url) == f"Report: [{url}]({url})"
    first = names.describe_with_link("Trained for the workshop.\n", url)
    assert first == f"Trained for the workshop.\n\nReport: [{url}]({url})"
    again = names.describe_with_link(first, url + "2")
    assert (
        again.count("Report:") == 1 and again.startswith("Trained for the workshop.") and again.endswith("2)")
    )


def test_report_paths_quote_the_experiment() -> None:
    assert names.report_path("alice") == "/reports/alice"
    assert names.report_path("a b/c", "r1") == "/reports/a%20b%2Fc/sessions/r1"


def candidate(run_id: str, model: str, val_rmse: float, test_rmse: float, cpu: float) -> Candidate:
    metrics = {"val_rmse": val_rmse, "test_rmse": test_rmse, "val_mae": 1.0, "test_mae": 2.0}
    metrics |= {"val_r2": 0.5, "test_r2": 0.25, names.CPU_SECONDS: cpu, names.PEAK_RSS_MB: 300.0}
    metrics[names.FIT_SECONDS] = cpu / 2
    return Candidate(run_id, f"{model}-latency_ms", model, "latency_ms", "s1", "alice", 1_000, 5_000, metrics)


def test_a_report_from_hand_made_runs_says_what_the_numbers_say() -> None:
    data = ReportData(
        "alice",
        "1",
        [Session("s1", "session-1", "alice", 1_000, 9_000, "FINISHED", {}, ("latency_ms",))],
        # The forest is best on validation, though linear regression is better on test: the
        # trainer's choice (validation) is the best, and the text says it is worse on test.
        [
            candidate("r1", "linear-regression", 12.0, 10.0, 1.0),
            candidate("r2", "random-forest", 11.0, 11.0, 4.0),
        ],
        {
            "latency-predictor": [
                Version(
                    "latency-predictor",
                    "latency_ms",
                    "1",
                    "r2",
                    2_000,
                    ("production",),
                    {
                        "promotion.decision": "promoted",
                        "promotion.reason": "no production version yet",
                        "model": "random-forest",
                    },
                    11.0,
                    "alice",
                )
            ]
        },  # fmt: skip
    )
    unavailable = ServingData("1h", "http://127.0.0.1:1", available=False, reason="ConnectionError: refused")
    report = render(data, unavailable)
    assert report.summary[0].startswith("Best for latency_ms (lowest validation RMSE): random-forest")
    assert "10.0% higher test RMSE than linear-regression" in report.summary[0]
    assert "(4.0x the CPU of linear-regression)" in report.summary[0]
    assert report.summary[1].startswith("latency-predictor: production is v1 (random-forest, test RMSE 11)")
    assert "Prometheus could not be read: ConnectionError: refused; live" in report.summary[2]
    assert re.search(r'<tr data-run-id="r2" data-model="random-forest"[^>]*class="best"', report.html)
    assert 'id="plot-quality-latency_ms"' in report.html and 'id="plot-cost-latency_ms"' in report.html
    assert 'id="serving-unavailable"' in report.html
    # Text from MLflow is escaped, never markup.
    data.candidates[0] = candidate("r1", "<b>x</b>", 12.0, 10.0, 1.0)
    assert "<b>x</b>" not in render(data, None).html


def test_the_cache_keeps_values_and_lets_a_page_use_another_key() -> None:
    cache = Cache(ttl_s=60)
    calls: list[str] = []

    def board() -> str:
        calls.append("board")
        return "b"

    assert cache.get(("page",), lambda: cache.get(("board",), board) + "!") == "b!"
    assert cache.get(("board",), board) == "b" and calls == ["board"]


# --- participant text that tries to become markup ----------------------------------------------
# Each payload would run script (set window.__pwned, call alert) if it came through as markup: a
# tag, an event attribute from a broken-out quote, the end of the inline <svg>, an HTML comment's
# end, a `javascript:` link, and mathtext that matplotlib's parser rejects.
PAYLOADS = (
    "<script>window.__pwned=1</script>",
    '"><img src=x onerror="window.__pwned=2">',
    "' onmouseover='alert(3)' x='",
    "</svg><script>alert(4)</script><svg>",
    "--><img src=x onerror=alert(5)><!--",
    "javascript:alert(6)",
    "$\\frac{$",
)
HOSTILE = "".join(PAYLOADS)


class Parsed(HTMLParser):
    """Every element and attribute of a page, and its text, as a browser's tokenizer reads it."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))

    handle_startendtag = handle_starttag

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def shape(self) -> tuple[set[str], set[str]]:
        """The element names and attribute names used."""
        return {t for t, _ in self.elements}, {a for _, attrs in self.elements for a in attrs}


def session_of(text: str) -> ReportData:
    """A session whose every participant-controlled string is `text` (experiment, session and run
    names, the model and target params, the registry's tags, the retraining's tags)."""
    metrics = {"val_rmse": 2.0, "test_rmse": 3.0, names.CPU_SECONDS: 1.0, names.PEAK_RSS_MB: 50.0}
    candidates = [
        Candidate(f"r{i}", f"{text}-run{i}", f"{text}-model{i}", f"{text}-target", "s1", text, 1_000, 2_000,
                  {k: v + i for k, v in metrics.items()})
        for i in (1, 2)
    ]  # fmt: skip
    tags = {"promotion.decision": text, "promotion.reason": text, "promotion.trigger": text, "model": text}
    tags |= {"rollback.to_version": text, "rollback.reason": text, "rollback.at": text}
    version = Version("latency-predictor", "latency_ms", "1", "r1", 2_000, (text,), tags, 3.0, text)
    return ReportData(
        text,
        "1",
        [Session("s1", f"{text}-session", text, 1_000, 9_000, "FINISHED", {"participant": text}, ())],
        candidates,
        {"latency-predictor": [version]},
        [Retraining("r9", text, text, text, text, text, 5_000)],
        session_id="s1",
    )  # fmt: skip


def hostile_pages(text: str) -> dict[str, str]:
    """The report, the index, the leaderboard and an error page, with `text` everywhere it can go."""
    data = session_of(text)
    report = render(data, None, nav_links(data)).html
    index = ENV.from_string(INDEX).render(
        experiments=[
            {
                "name": text,
                "href": names.report_path(text),
                "sessions": [{"name": text, "start_ms": 1_000, "href": names.report_path(text, "s1")}],
            }
        ],
        cache_s=30,
    )
    entry = Entry(
        text, text, text, "r1", text, 1.0, 2.0, 0.5, 1.0, 50.0, 0.5, 3, 2_000, names.report_path(text)
    )
    board = ENV.from_string(LEADERBOARD).render(targets={text: [entry]})
    error = html_error(404, f"no experiment named {text}").body.decode()
    return {"report": report, "index": index, "leaderboard": board, "error": error}


def test_participant_text_never_becomes_markup() -> None:
    benign = {name: Parsed(html) for name, html in hostile_pages("plain words").items()}
    for name, html in hostile_pages(HOSTILE).items():
        page = Parsed(html)
        tags, attributes = page.shape()
        # Nothing the payloads carry: no script, no image, no event handler, no javascript: link.
        assert not tags & {"script", "img", "iframe", "object", "embed"}, (name, tags)
        assert not [a for a in attributes if a.startswith("on")], (name, attributes)
        for _, attrs in page.elements:
            for attribute in ("href", "src", "xlink:href", "action"):
                assert not attrs.get(attribute, "").strip().lower().startswith("javascript:"), (name, attrs)
        # The same elements and attributes as the page with harmless text: the payloads added none.
        assert page.shape() == benign[name].shape(), name
        # Ids are plain identifiers, also where they name a hostile target or model (and the SVG's
        # references to them; matplotlib's own ids have dots), and none repeats.
        ids = [attrs["id"] for _, attrs in page.elements if "id" in attrs]
        assert all(re.fullmatch(r"[A-Za-z0-9_.-]{1,120}", i) for i in ids), (name, ids)
        assert len(ids) == len(set(ids)), name
        assert all(re.fullmatch(r"#[A-Za-z0-9_-]+", ref) for ref in re.findall(r"url\((#[^)]*)\)", html)), (
            name
        )
        # The text is there, as text: escaped in the source, whole once parsed.
        assert HOSTILE in "".join(page.text), name
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html, name
        # Every page carries the policy in a <meta> (the service also sends it as a header).
        policies = [
            a["content"] for t, a in page.elements if a.get("http-equiv") == "Content-Security-Policy"
        ]
        assert policies == [CSP_META], name
    report = Parsed(hostile_pages(HOSTILE)["report"])
    # In attributes the payload stays one value (quotes did not end it).
    models = {attrs.get("data-model") for _, attrs in report.elements}
    assert f"{HOSTILE}-model1" in models and f"{HOSTILE}-model2" in models
    # The inline plots were drawn (mathtext is off for participant text) and their ids are safe.
    assert len([1 for t, _ in report.elements if t == "svg"]) == 3  # quality, cost, registry


def test_the_pages_policy_allows_only_the_stylesheet() -> None:
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["default-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
    assert "script-src" not in directives and "unsafe-inline" not in directives["style-src"]
    assert CSP.removesuffix("; frame-ancestors 'none'") == CSP_META  # frame-ancestors: ignored in a <meta>
    digest = base64.b64encode(hashlib.sha256(BASE_CSS.encode()).digest()).decode()
    assert directives["style-src"] == f"'sha256-{digest}'"
    # Rendered, the <style> element holds exactly the hashed text.
    html = render(session_of("x"), None).html
    assert html.count("<style") == 1 and f"<style>{BASE_CSS}</style>" in html


def test_every_answer_of_the_service_carries_the_security_headers() -> None:
    """The routes that answer without MLflow: error pages, JSON errors, health (the pages that read
    MLflow: tests/integration/test_reports_hostile.py)."""
    settings = Settings.from_env(
        dict(MLFLOW_TRACKING_URI="http://127.0.0.1:9", PROMETHEUS_URL="http://127.0.0.1:9")
    )
    client = TestClient(create_app(settings), raise_server_exceptions=False, base_url="http://reports:8003")
    for path, status in (
        ("/reports/alice?window=forever", 400),
        # (a `/` in an experiment's name, even quoted, is no page: the router decodes it)
        (f"/reports/{urllib.parse.quote(PAYLOADS[1], safe='')}?window=%3Cscript%3E", 400),
        ("/reports/alice/sessions/x?window=1", 400),
        ("/no-such-page", 404),
        ("/health", 200),
        ("/favicon.ico", 204),
    ):
        answer = client.get(path)
        assert answer.status_code == status, (path, answer.text)
        for header, value in SECURITY_HEADERS.items():
            assert answer.headers.get(header) == value, (path, header)
        if answer.headers.get("content-type", "").startswith("text/html"):
            assert not Parsed(answer.text).shape()[0] & {"script", "img"}, path


# --- The routes alone: the pages and the JSON on a bare app, MLflow given by override. ------------


def test_the_pages_read_mlflow_through_their_dependencies(tmp_path: Path) -> None:
    """pages.router and api.router on an app of their own, their client a real SQLite store with one
    participant experiment that has runs but no training session yet."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store)
    experiment = client.create_experiment("alice", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment)
    client.log_param(run.info.run_id, names.MODEL_PARAM, "linear-regression")
    client.log_param(run.info.run_id, names.TARGET_PARAM, "latency_ms")
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(pages.router)
    app.include_router(api.router)
    settings = Settings.from_env({"MLFLOW_TRACKING_URI": store, "PROMETHEUS_URL": "http://127.0.0.1:9"})
    app.dependency_overrides |= {
        get_client: lambda: client,
        get_cache: lambda: Cache(ttl_s=0),
        get_settings: lambda: settings,
    }
    http = TestClient(app, raise_server_exceptions=False)
    index = http.get("/")
    assert index.status_code == 200 and 'href="/reports/alice"' in index.text, index.text
    assert http.get("/api/leaderboard").json() == {"targets": {}}
    empty = http.get("/reports/alice")
    assert empty.status_code == 404 and "has no training sessions yet" in empty.text
    assert "no experiment" in http.get("/reports/bob").text.lower()
    bad_window = http.get("/reports/alice?window=forever")
    assert bad_window.status_code == 400 and "a number and a unit" in bad_window.text
