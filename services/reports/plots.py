"""The report's plots as inline SVG, in one style that stays readable printed in black and white:
dark text, light grid, the Okabe-Ito palette, and a distinct marker or hatch per series."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib import rc_context  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.dates import DateFormatter  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from services.reports.templates import dom_id  # noqa: E402

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
HATCHES = ("", "//", "..", "xx", "\\\\", "++")
STYLE: dict[str, Any] = {
    "font.size": 9,
    "font.family": "DejaVu Sans",
    "axes.edgecolor": "#333333",
    "axes.labelcolor": "#111111",
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.grid": True,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "xtick.color": "#333333",
    "ytick.color": "#333333",
    "legend.frameon": False,
    "legend.fontsize": 8,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "svg.fonttype": "path",  # no font needed to view it
    "svg.hashsalt": "mlops-reports",  # the same figure gives the same SVG
}


@contextmanager
def figure(width: float = 6.4, height: float = 3.2) -> Iterator[tuple[Figure, Axes]]:
    with rc_context(STYLE):  # type: ignore[arg-type]
        fig = Figure(figsize=(width, height))
        yield fig, fig.add_subplot()


def plain(text: str) -> str:
    """Participant text as matplotlib shows it literally: a `$` would start mathtext, whose parser
    fails on text such as `$\\frac{$` (and the whole report with it)."""
    return text.replace("$", r"\$")


def to_svg(fig: Figure, prefix: str) -> str:
    """The figure as an inline <svg>; its internal ids start with `prefix` (made a safe id, since it
    names a target or model) so that several plots on one page never share an id."""
    prefix = dom_id(prefix)
    buffer = io.StringIO()
    # bbox "tight": legends placed beside the axes stay inside the picture.
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    # Inline: no XML prolog, DOCTYPE or RDF metadata block (nothing a reader needs), and no <style>:
    # matplotlib's one rule (line joins and caps) is in the page's stylesheet, the only one the
    # Content-Security-Policy allows.
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", text[text.index("<svg") :], flags=re.S)
    svg = re.sub(r"\s*<style type=\"text/css\">[^<]*</style>", "", svg)
    for before, after in (
        ('id="', f'id="{prefix}-'),
        ("url(#", f"url(#{prefix}-"),
        ('href="#', f'href="#{prefix}-'),
    ):
        svg = svg.replace(before, after)
    return svg


def quality_bars(target: str, models: Sequence[str], val: Sequence[float], test: Sequence[float]) -> str:
    """Validation and test RMSE of each candidate for one target (lower is better)."""
    with figure() as (fig, ax):
        xs = range(len(models))
        width = 0.38
        for i, (label, values) in enumerate((("validation", val), ("test", test))):
            bars = ax.bar(
                [x + (i - 0.5) * width for x in xs],
                values,
                width,
                label=f"{label} RMSE",
                color=PALETTE[i],
                hatch=HATCHES[i],
                edgecolor="#333333",
                linewidth=0.5,
            )
            ax.bar_label(bars, fmt="%.4g", fontsize=7, padding=2)
        ax.set_xticks(list(xs), [plain(m) for m in models], rotation=15, ha="right")
        ax.set_ylabel(f"RMSE of {plain(target)} (lower is better)")
        ax.set_title(f"{plain(target)}: candidates' RMSE")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.margins(y=0.15)
        return to_svg(fig, f"svg-quality-{target}")


def cost_vs_quality(target: str, points: Sequence[tuple[str, float, float, float]]) -> str:
    """Each candidate as (label, CPU seconds, peak memory MB, test RMSE): cost on x, error on y,
    marker size by memory."""
    with figure() as (fig, ax):
        peak = max((p[2] for p in points), default=1) or 1
        for i, (label, cpu, memory, rmse) in enumerate(points):
            ax.scatter(
                [cpu],
                [rmse],
                s=40 + 160 * memory / peak,
                marker=MARKERS[i % len(MARKERS)],
                color=PALETTE[i % len(PALETTE)],
                edgecolor="#222222",
                linewidth=0.6,
                label=f"{plain(label)} ({memory:.0f} MB peak)",
            )
        ax.set_xlabel("training CPU seconds")
        ax.set_ylabel(f"test RMSE of {plain(target)}")
        ax.set_title(f"{plain(target)}: cost of accuracy (lower left is better)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.margins(0.15)
        return to_svg(fig, f"svg-cost-{target}")


def registry_history(model: str, versions: Sequence[tuple[str, float, bool]]) -> str:
    """Test RMSE of each version (version, RMSE, promoted): filled markers were promoted."""
    with figure(height=2.8) as (fig, ax):
        xs = [int(v) for v, _, _ in versions]
        ax.plot(xs, [r for _, r, _ in versions], color=PALETTE[6], linewidth=0.8, linestyle=":")
        for promoted, marker, color, label in (
            (True, "o", PALETTE[2], "promoted"),
            (False, "X", PALETTE[5], "kept out"),
        ):
            chosen = [(int(v), r) for v, r, p in versions if p == promoted]
            if chosen:
                xy = ([x for x, _ in chosen], [y for _, y in chosen])
                ax.scatter(*xy, marker=marker, color=color, s=50, label=label, zorder=3)
        ax.set_xticks(xs, [f"v{x}" for x in xs])
        ax.set_ylabel("test RMSE")
        ax.set_title(f"{plain(model)}: versions")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return to_svg(fig, f"svg-registry-{model}")


def serving_timeline(
    model: str, rate: Sequence[tuple[float, float]], p99: Sequence[tuple[float, float]]
) -> str:
    """Requests per second (left axis) and p99 latency in ms (right axis) over the window."""
    with figure(height=2.8) as (fig, ax):
        if rate:
            ax.plot(
                [datetime.fromtimestamp(t, UTC) for t, _ in rate],  # type: ignore[arg-type]
                [v for _, v in rate],
                color=PALETTE[0],
                marker=MARKERS[0],
                markersize=3,
                label="requests/s",
            )
        ax.set_ylabel("requests/s")
        ax.xaxis.set_major_formatter(DateFormatter("%H:%M"))
        right = ax.twinx()
        right.grid(False)
        if p99:
            right.plot(
                [datetime.fromtimestamp(t, UTC) for t, _ in p99],  # type: ignore[arg-type]
                [v * 1000 for _, v in p99],
                color=PALETTE[5],
                marker=MARKERS[1],
                markersize=3,
                linestyle="--",
                label="p99 latency (ms)",
            )
        right.set_ylabel("p99 latency (ms)")
        ax.set_xlabel("time (UTC)")
        ax.set_title(f"{plain(model)}: traffic and p99 latency")
        handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        ax.legend(
            handles, [str(h.get_label()) for h in handles], loc="upper left", bbox_to_anchor=(1.08, 1.0)
        )
        return to_svg(fig, f"svg-serving-{model}")
