"""The artifact bucket, created if it is missing: by the s3init job at start-up, and by a restore
(services/backup) into a store that has not got it yet."""

from __future__ import annotations

from botocore.exceptions import ClientError


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
