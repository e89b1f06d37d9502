"""Reports and the leaderboard: `python -m services.reports build` writes self-contained HTML reports
and logs them on the session runs; `python -m services.reports serve` serves them, the leaderboard
and its Prometheus gauges (docs/reports.md)."""

from __future__ import annotations

from pydantic import Field

from contracts.guard import GuardSettings


class Settings(GuardSettings):
    tracking_uri: str = Field("http://localhost:5000", alias="MLFLOW_TRACKING_URI")
    prometheus_url: str = Field("http://localhost:9090", alias="PROMETHEUS_URL")
    # The address participants open the pages at: the link written into session runs' descriptions.
    public_url: str = Field("http://localhost:8003", alias="REPORTS_PUBLIC_URL")
    window: str = Field("1h", alias="REPORTS_WINDOW")
    cache_s: float = Field(30.0, ge=0, alias="REPORTS_CACHE_S")
    host: str = Field("0.0.0.0", alias="REPORTS_HOST")
    port: int = Field(8003, alias="REPORTS_PORT")
