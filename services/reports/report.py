"""One report as a self-contained HTML page: the written summary, the candidates, cost vs quality,
the registry's history, retrainings and serving. Plots are inline SVG; the page loads nothing."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from jinja2 import Environment, select_autoescape
from markupsafe import Markup

from contracts import reports as names
from contracts.models import model_for_target
from services.reports import plots
from services.reports.collect import Candidate, ReportData, Version, best_candidate
from services.reports.serving import ServingData
from services.reports.templates import BASE_CSS, CSP_META, REPORT, dom_id


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}g}"


def when(ms: int | float | None) -> str:
    if not ms:
        return "–"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.2f}%"


def cell(value: float | None, metric: str, digits: int = 4) -> Markup:
    """A number cell: shown rounded, exact in `data-value` (what tests and scripts read)."""
    if value is None or not math.isfinite(value):
        return Markup('<td class="num" data-metric="{}" data-value="">–</td>').format(metric)
    return Markup('<td class="num" data-metric="{}" data-value="{}">{}</td>').format(
        metric, repr(float(value)), fmt(value, digits)
    )


# Every value a template prints is escaped; what is not must be wrapped in Markup, and only our own
# constant text and matplotlib's SVG are (below and in `render`).
ENV = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
ENV.filters.update(fmt=fmt, when=when, percent=percent, cell=cell)
ENV.globals.update(dom_id=dom_id, csp=CSP_META)
# Our constant stylesheet (the policy allows it by its hash).
ENV.globals["css"] = Markup(BASE_CSS)  # nosec B704


@dataclass
class Report:
    title: str
    html: str
    summary: list[str]


def summarize(data: ReportData, serving: ServingData | None) -> list[str]:
    """A few sentences from the numbers: best per target and what it costs, the registry, live."""
    lines = []
    for target in data.targets():
        best = data.best(target)
        if best is None:
            continue
        # Compared with the other candidates of the same session (same data split).
        others = [
            c
            for c in data.candidates
            if c.target == target and c.session_id == best.session_id and c.run_id != best.run_id
        ]
        line = (
            f"Best for {target} (lowest validation RMSE): {best.model} (run {best.run_name}), test RMSE "
            f"{fmt(best.metric('test_rmse'))}, MAE {fmt(best.metric('test_mae'))}, "
            f"R2 {fmt(best.metric('test_r2'), 3)}"
        )
        runner = best_candidate(others)
        if runner is not None:
            gain = (runner.metrics["test_rmse"] - best.metrics["test_rmse"]) / runner.metrics["test_rmse"]
            word = "lower" if gain >= 0 else "higher"
            line += f"; {abs(gain) * 100:.1f}% {word} test RMSE than {runner.model}"
        cpu, memory = best.metric(names.CPU_SECONDS), best.metric(names.PEAK_RSS_MB)
        line += f". It cost {fmt(cpu, 3)} CPU s and {fmt(memory, 3)} MB peak memory to train"
        cheapest = min(
            (c for c in [best, *others] if c.metric(names.CPU_SECONDS)),
            key=lambda c: c.metrics[names.CPU_SECONDS],
            default=None,
        )
        if cheapest is not None and cheapest is not best and cpu:
            line += f" ({cpu / cheapest.metrics[names.CPU_SECONDS]:.1f}x the CPU of {cheapest.model})"
        lines.append(line + ".")
    for model, versions in data.versions.items():
        production = next((v for v in versions if "production" in v.aliases), None)
        if production is not None:
            lines.append(
                f"{model}: production is v{production.version} ({production.candidate or 'unknown model'}, "
                f"test RMSE {fmt(production.test_rmse)}); {len(versions)} version(s) registered."
            )
        elif versions:
            lines.append(f"{model}: {len(versions)} version(s), none in production.")
    if serving is None:
        pass
    elif not serving.available:
        lines.append(f"Serving: Prometheus could not be read: {serving.reason}; live figures are missing.")
    elif not serving.has_traffic:
        lines.append(f"Serving: no requests in the last {serving.window}.")
    else:
        for name, m in serving.models.items():
            if not m.requests_per_s:
                continue
            text = (
                f"Live over {serving.window}, {name}: {m.requests_per_s:.2f} requests/s, p99 "
                f"{fmt((m.p99_s or 0) * 1000, 3)} ms, {percent(m.error_rate)} errors"
            )
            trained = training_rmse(data, name, m.versions)
            if "rmse" in m.live and trained:
                ratio = m.live["rmse"] / trained
                text += f"; live RMSE {fmt(m.live['rmse'])} is {ratio:.2f}x the training RMSE {fmt(trained)}"
            text += "; input drift detected." if m.dataset_drift else "; no input drift."
            lines.append(text)
    return lines


def training_rmse(data: ReportData, model: str, served: dict[str, float]) -> float | None:
    """Test RMSE at training time of the version that served most in the window (else production)."""
    versions = {v.version: v for v in data.versions.get(model, [])}
    if served:
        top = max(served, key=lambda k: served[k])
        if top in versions:
            return versions[top].test_rmse
    production = next((v for v in versions.values() if "production" in v.aliases), None)
    return production.test_rmse if production else None


def candidate_rows(data: ReportData, target: str) -> list[Candidate]:
    return sorted(
        (c for c in data.candidates if c.target == target),
        key=lambda c: (
            c.session_id != (data.latest_session.run_id if data.latest_session else ""),
            c.metrics.get("test_rmse", math.inf),
        ),
    )


def build_plots(data: ReportData, serving: ServingData | None) -> dict[str, str]:
    """Plot id -> inline SVG."""
    found: dict[str, str] = {}
    for target in data.targets():
        rows = candidate_rows(data, target)
        latest = [
            c for c in rows if data.latest_session and c.session_id == data.latest_session.run_id
        ] or rows
        scored = [c for c in latest if c.metric("val_rmse") is not None and c.metric("test_rmse") is not None]
        if scored:
            found[f"plot-quality-{target}"] = plots.quality_bars(
                target,
                [c.model for c in scored],
                [c.metrics["val_rmse"] for c in scored],
                [c.metrics["test_rmse"] for c in scored],
            )
        costed = [
            (
                c.model,
                c.metrics[names.CPU_SECONDS],
                c.metric(names.PEAK_RSS_MB) or 0.0,
                c.metrics["test_rmse"],
            )
            for c in latest
            if c.metric(names.CPU_SECONDS) is not None and c.metric("test_rmse") is not None
        ]
        if costed:
            found[f"plot-cost-{target}"] = plots.cost_vs_quality(target, costed)
    for model, versions in data.versions.items():
        points = [
            (v.version, v.test_rmse, v.decision == "promoted") for v in versions if v.test_rmse is not None
        ]
        if points:
            found[f"plot-registry-{model}"] = plots.registry_history(model, points)  # type: ignore[arg-type]
    if serving is not None and serving.available:
        for name, m in serving.models.items():
            if m.rate_series or m.p99_series:
                found[f"plot-serving-{name}"] = plots.serving_timeline(name, m.rate_series, m.p99_series)
    return found


def version_events(versions: list[Version]) -> list[dict[str, str]]:
    """The alias history that the registry's tags tell: promotions, approvals and rollbacks, in time order."""
    events = []
    for v in versions:
        if v.decision == "promoted":
            events.append(
                {
                    "at": when(v.created_ms),
                    "version": v.version,
                    "event": "production -> v" + v.version,
                    "why": v.reason,
                }
            )
        elif v.decision:
            events.append(
                {
                    "at": when(v.created_ms),
                    "version": v.version,
                    "event": "staging -> v" + v.version,
                    "why": v.reason,
                }
            )
        if "rollback.to_version" in v.tags:
            events.append(
                {
                    "at": v.tags.get("rollback.at", ""),
                    "version": v.version,
                    "event": f"production v{v.version} -> v{v.tags['rollback.to_version']} (rollback)",
                    "why": v.tags.get("rollback.reason", ""),
                }
            )
    return events


def render(data: ReportData, serving: ServingData | None, links: dict[str, str] | None = None) -> Report:
    """The page for `data` (and the serving figures, when read)."""
    session = data.latest_session
    if data.session_id and session:
        title = f"Training session {session.run_name} in {data.experiment}"
    else:
        title = f"Experiment {data.experiment}: {len(data.sessions)} training session(s)"
    summary = summarize(data, serving)
    # SVG written by matplotlib, which escapes text (labels become paths, comments are escaped); its
    # ids and references are made from `dom_id` (plots.to_svg).
    svg = {k: Markup(v) for k, v in build_plots(data, serving).items()}  # nosec B704
    html = ENV.from_string(REPORT).render(
        title=title,
        data=data,
        session=session,
        summary=summary,
        targets=data.targets(),
        rows={t: candidate_rows(data, t) for t in data.targets()},
        best={t: data.best(t) for t in data.targets()},
        registered={t: model_for_target(t).name for t in data.targets() if _known_target(t)},
        plots=svg,
        events={m: version_events(vs) for m, vs in data.versions.items()},
        serving=serving,
        training_rmse=training_rmse,
        names=names,
        links=links or {},
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    )
    return Report(title, html, summary)


def _known_target(target: str) -> bool:
    try:
        model_for_target(target)
    except KeyError:
        return False
    return True
