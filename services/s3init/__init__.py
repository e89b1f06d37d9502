"""Create the artifact bucket if it is missing (idempotent, retries while the store starts).

The job is bucket.py (the check-then-create is shared with backup: services/common/s3.py); this file
holds the settings only.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


class Settings(BaseSettings):
    endpoint_url: str = Field(alias="S3_ENDPOINT_URL")
    bucket: str = Field("mlflow", alias="S3_BUCKET")
    attempts: int = Field(10, alias="S3_INIT_ATTEMPTS")
