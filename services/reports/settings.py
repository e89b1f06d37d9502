"""The reports service's settings (`python -m services.reports build|serve`)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from contracts.guard import GuardSettings
from contracts.settings import EnvSettings, LocalMlflowSettings, PrometheusSettings, nested
from services.reports.serving import window_seconds


class LocalPrometheusSettings(PrometheusSettings):
    url: str = Field("http://localhost:9090", description="Prometheus's base URL (the serving sections)")


class Settings(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="REPORTS_")

    public_url: str = Field(
        "http://localhost:8003",
        description="the address participants open the pages at: the link written into session runs",
    )
    window: str = Field("1h", description="the serving sections' window, like 30m, 1h or 2d")
    cache_s: float = Field(30.0, ge=0, description="seconds a built page is served before it is built again")
    host: str = Field("0.0.0.0", description="address the reports service listens on")
    port: int = Field(8003, description="port of the reports and the leaderboard (docs/reports.md)")
    mlflow: LocalMlflowSettings = nested(LocalMlflowSettings)
    prometheus: LocalPrometheusSettings = nested(LocalPrometheusSettings)
    guard: GuardSettings = nested(GuardSettings)

    @field_validator("window")
    @classmethod
    def _window_parses(cls, value: str) -> str:
        window_seconds(value)
        return value
