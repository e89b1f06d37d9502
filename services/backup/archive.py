"""The backup archive: one uncompressed tar whose last member, `manifest.json`, lists every other
member with its size and sha256 (standard library only).

Layout: `databases/<name>.dump` (pg_dump's custom format, already compressed), `objects/<key>` (the
bucket's objects, byte for byte), `manifest.json`. Members are streamed in and out, never held in
memory whole; `verify` reads the archive once and checks every member against the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

MANIFEST = "manifest.json"
FORMAT = 1
CHUNK = 1 << 20


class BackupError(Exception):
    """A problem worth one line to the operator (the CLI prints it and exits 1)."""


class HashingReader(io.RawIOBase):
    """Reads through `source`, counting bytes and hashing them on the way."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(n)
        self.sha256.update(data)
        self.size += len(data)
        return data


class ArchiveWriter:
    """Adds members to a new archive and remembers their checksums for the manifest."""

    def __init__(self, tar: tarfile.TarFile, mtime: float) -> None:
        self.tar = tar
        self.mtime = mtime
        self.members: dict[str, dict[str, Any]] = {}

    def add_stream(self, name: str, size: int, source: IO[bytes], **extra: Any) -> None:
        """Copy exactly `size` bytes of `source` into member `name` (tarfile raises on a short read)."""
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, int(self.mtime), 0o600
        reader = HashingReader(source)
        self.tar.addfile(info, reader)
        self.members[name] = {"size": size, "sha256": reader.sha256.hexdigest(), **extra}

    def add_file(self, name: str, path: Path) -> None:
        with path.open("rb") as source:
            self.add_stream(name, path.stat().st_size, source)

    def add_manifest(self, manifest: dict[str, Any]) -> None:
        data = json.dumps({**manifest, "members": self.members}, indent=1, sort_keys=True).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime, info.mode = len(data), int(self.mtime), 0o600
        self.tar.addfile(info, io.BytesIO(data))


def open_archive(path: Path) -> tarfile.TarFile:
    if not path.is_file():
        raise BackupError(f"no archive at {path}")
    try:
        return tarfile.open(path, mode="r:", format=tarfile.PAX_FORMAT)
    except (tarfile.TarError, OSError) as exc:
        raise BackupError(f"{path} is not a readable tar archive ({exc})") from None


def read_manifest(path: Path) -> dict[str, Any]:
    """The archive's manifest, without checking members (verify does that)."""
    with open_archive(path) as tar:
        try:
            member = tar.getmember(MANIFEST)
            handle = tar.extractfile(member)
            assert handle is not None  # noqa: S101  (a regular member always has a file object)
            manifest = json.loads(handle.read())
        except KeyError:
            raise BackupError(f"{path} has no {MANIFEST}: truncated, or not made by make backup") from None
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BackupError(f"{path} is truncated or damaged ({exc})") from None
        except ValueError:
            raise BackupError(f"{path}: {MANIFEST} is not valid JSON (damaged archive)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: unknown manifest format (expected format {FORMAT})")
    return manifest


def members(path: Path) -> Iterator[tuple[tarfile.TarInfo, IO[bytes]]]:
    """Each member except the manifest, in archive order, with a readable stream of its bytes."""
    with open_archive(path) as tar:
        try:
            for info in tar:
                if info.name == MANIFEST:
                    continue
                handle = tar.extractfile(info)
                if handle is None:
                    raise BackupError(f"{path}: unexpected member {info.name!r} (not a regular file)")
                yield info, handle
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BackupError(f"{path} is truncated or damaged ({exc})") from None


def check_member(path: Path, manifest: dict[str, Any], name: str, reader: HashingReader) -> None:
    expected = manifest["members"].get(name)
    if expected is None:
        raise BackupError(f"{path}: member {name!r} is not in the manifest")
    if reader.size != expected["size"] or reader.sha256.hexdigest() != expected["sha256"]:
        raise BackupError(f"{path}: checksum mismatch in {name!r} (damaged archive)")


def verify(path: Path) -> dict[str, Any]:
    """Read the whole archive once: every member listed in the manifest is there, with its size and
    sha256. Returns the manifest; raises BackupError on the first problem."""
    manifest = read_manifest(path)
    seen = set()
    for info, handle in members(path):
        reader = HashingReader(handle)
        try:
            while reader.read(CHUNK):
                pass
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BackupError(f"{path} is truncated or damaged ({exc})") from None
        check_member(path, manifest, info.name, reader)
        seen.add(info.name)
    missing = set(manifest["members"]) - seen
    if missing:
        raise BackupError(f"{path}: {len(missing)} member(s) missing, e.g. {sorted(missing)[0]!r}")
    return manifest


def fsync_and_rename(partial: Path, final: Path) -> None:
    """Make the finished archive durable, then give it its final name (atomic on one file system)."""
    with partial.open("rb") as handle:
        os.fsync(handle.fileno())
    partial.rename(final)
    directory = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
