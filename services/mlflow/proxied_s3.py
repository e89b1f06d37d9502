"""`s3proxied://bucket/path`: MLflow's S3 artifact store with every transfer proxied by the server.

Since MLflow 3.15 a tracking server whose `--artifacts-destination` is S3 advertises presigned
direct transfers: clients and the web UI then download (and upload files over 500 MB) straight from
the S3 endpoint the server itself uses. In a compose stack that endpoint is `http://minio:9000`,
a name only containers on the stack's network resolve, so downloads from a laptop's Python or
browser hang or fail. This repository is MLflow's S3 repository without those capabilities (it
delegates instead of inheriting them), so the server proxies every transfer, as documented for
`--artifacts-destination`, and clients need neither S3 credentials nor a route to S3.

Registered through the `mlflow.artifact_repository` entry point (pyproject.toml).
"""

from __future__ import annotations

from typing import Any

from mlflow.entities import FileInfo
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

SCHEME = "s3proxied"


class ProxiedS3ArtifactRepository(ArtifactRepository):
    """S3 storage behind the tracking server: no presigned URLs reach clients."""

    def __init__(self, artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None):
        super().__init__(artifact_uri, tracking_uri, registry_uri)
        if not artifact_uri.startswith(f"{SCHEME}://"):
            raise ValueError(f"expected a {SCHEME}:// URI, got {artifact_uri!r}")
        s3_uri = "s3://" + artifact_uri.removeprefix(f"{SCHEME}://")
        self._s3 = S3ArtifactRepository(s3_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)

    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None:
        self._s3.log_artifact(local_file, artifact_path)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        self._s3.log_artifacts(local_dir, artifact_path)

    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        return self._s3.list_artifacts(path)

    def _download_file(self, remote_file_path: str, local_path: str) -> None:
        self._s3._download_file(remote_file_path, local_path)

    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        self._s3.delete_artifacts(artifact_path)

    def __getattr__(self, name: str) -> Any:
        # Anything else the server asks of an S3 store (never the presigned/multipart API,
        # which the server only uses when isinstance() finds the mixins this class lacks).
        return getattr(self._s3, name)
