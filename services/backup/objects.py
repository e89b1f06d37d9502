"""S3 side, through the S3 API only (any S3 store: MinIO, SeaweedFS, ...): the bucket's objects are
listed page by page and streamed one at a time into and out of the archive."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from services.backup.archive import ArchiveWriter, HashingReader

PREFIX = "objects/"


def client(endpoint_url: str) -> Any:
    """An S3 client; credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY. Checksums only where
    the API requires them: S3-compatible stores differ in which of the newer ones they accept."""
    config = Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 5, "mode": "standard"},
    )
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def list_objects(s3: Any, bucket: str) -> Iterator[tuple[str, int]]:
    """(key, size) of every object, page by page; nothing when the bucket does not exist."""
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                yield str(item["Key"]), int(item["Size"])
    except ClientError as exc:
        if _code(exc) != "NoSuchBucket":
            raise


def bucket_is_empty(s3: Any, bucket: str) -> bool:
    return next(list_objects(s3, bucket), None) is None


def back_up(s3: Any, bucket: str, writer: ArchiveWriter) -> dict[str, int]:
    """Stream every object into the archive as `objects/<key>`. An object deleted between the listing
    and its download is left out (counted as `vanished`); its size is the downloaded one."""
    count = total = vanished = 0
    for key, _ in list_objects(s3, bucket):
        try:
            response = s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                vanished += 1
                continue
            raise
        size = int(response["ContentLength"])
        with response["Body"] as body:
            writer.add_stream(PREFIX + key, size, body, key=key)
        count, total = count + 1, total + size
    return {"count": count, "bytes": total, "vanished": vanished}


def restore(s3: Any, bucket: str, key: str, source: IO[bytes]) -> HashingReader:
    """Upload one archived object (multipart for big ones); returns the reader to check its checksum."""
    reader = HashingReader(source)
    s3.upload_fileobj(reader, bucket, key)
    return reader


def sizes(s3: Any, bucket: str) -> dict[str, int]:
    return dict(list_objects(s3, bucket))


def describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"S3: {error.get('Code', '?')}: {error.get('Message', '')}".strip()
    return f"S3: {exc}"
