"""Create the artifact bucket if it is missing (idempotent, retries while the store starts)."""

from __future__ import annotations

import logging

import boto3
from botocore.exceptions import BotoCoreError
from pydantic import Field
from pydantic_settings import BaseSettings
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.common.s3 import ensure_bucket

log = logging.getLogger(__name__)


class Settings(BaseSettings):
    endpoint_url: str = Field(alias="S3_ENDPOINT_URL")
    bucket: str = Field("mlflow", alias="S3_BUCKET")
    attempts: int = Field(10, alias="S3_INIT_ATTEMPTS")


def run(settings: Settings) -> bool:
    """Ensure the bucket, retrying connection failures with backoff while the store starts."""
    client = boto3.client("s3", endpoint_url=settings.endpoint_url)

    @retry(
        retry=retry_if_exception_type((BotoCoreError, ConnectionError)),
        stop=stop_after_attempt(settings.attempts),
        wait=wait_exponential(multiplier=0.5, max=5),
        reraise=True,
    )
    def attempt() -> bool:
        return ensure_bucket(client, settings.bucket)

    return attempt()
