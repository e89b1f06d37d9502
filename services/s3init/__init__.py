"""Create the artifact bucket if it is missing (idempotent, retries while the store starts)."""

from __future__ import annotations

import logging

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.s3init.settings import Settings

log = logging.getLogger(__name__)
__all__ = ["Settings", "ensure_bucket", "run"]


def ensure_bucket(client, bucket: str) -> bool:  # type: ignore[no-untyped-def]
    """Create `bucket` unless it exists. Returns True when it was created."""
    try:
        client.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return False
        raise
    return True


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
