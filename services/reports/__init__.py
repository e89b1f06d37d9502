"""Reports and the leaderboard: `python -m services.reports build` writes self-contained HTML reports
and logs them on the session runs; `python -m services.reports serve` serves them, the leaderboard
and its Prometheus gauges (docs/reports.md)."""

from __future__ import annotations

from services.reports.settings import Settings

__all__ = ["Settings"]
