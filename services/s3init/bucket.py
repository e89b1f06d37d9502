"""The bucket ensured, retrying connection failures while the store starts (`python -m services.s3init`)."""

from __future__ import annotations

import boto3
from botocore.exceptions import BotoCoreError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.common.s3 import ensure_bucket
from services.s3init import Settings


def run(settings: Settings) -> bool:
    """Ensure the bucket, retrying connection failures with backoff while the store starts."""
    client = boto3.client("s3", endpoint_url=settings.s3.endpoint_url)

    @retry(
        retry=retry_if_exception_type((BotoCoreError, ConnectionError)),
        stop=stop_after_attempt(settings.attempts),
        wait=wait_exponential(multiplier=0.5, max=5),
        reraise=True,
    )
    def attempt() -> bool:
        return ensure_bucket(client, settings.s3.bucket)

    return attempt()
