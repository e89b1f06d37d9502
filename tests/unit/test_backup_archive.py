"""The backup archive format and the host-side helpers of make backup / restore / upgrade."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from services.backup.archive import MANIFEST, ArchiveWriter, BackupError, verify
from services.backup.create import dump_order
from tests.conftest import ROOT


def load_stack():  # type: ignore[no-untyped-def]
    """infra/stack.py as the module `stack` (its dataclasses need it registered), loaded once."""
    loaded = sys.modules.get("stack")
    if loaded is not None and Path(loaded.__file__ or "") == ROOT / "infra" / "stack.py":
        return loaded
    spec = importlib.util.spec_from_file_location("stack", ROOT / "infra" / "stack.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["stack"] = module
    spec.loader.exec_module(module)
    return module


stack = load_stack()


def write_archive(path: Path, members: dict[str, bytes], extra: dict[str, bytes] | None = None) -> None:
    """An archive as make backup writes it, plus `extra` members the manifest does not list."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        writer = ArchiveWriter(tar, 0)
        for name, data in members.items():
            writer.add_stream(name, len(data), io.BytesIO(data))
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        writer.add_manifest({"format": 1, "created": "now", "mlflow_schema_revision": None})


def test_verify_accepts_an_intact_archive_and_lists_every_member(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar"
    write_archive(archive, {"databases/mlflow.dump": b"dump", "objects/a b/ü": b"", "objects/x": b"1" * 5000})
    manifest = verify(archive)
    assert set(manifest["members"]) == {"databases/mlflow.dump", "objects/a b/ü", "objects/x"}
    assert manifest["members"]["objects/x"]["size"] == 5000


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("unlisted member", "is not in the manifest"),
        ("short stream", "unexpected end of data"),
        ("no manifest", "has no manifest.json"),
        ("bad manifest", "not valid JSON"),
        ("other format", "unknown manifest format"),
    ],
)
def test_verify_names_what_is_wrong(tmp_path: Path, damage: str, expected: str) -> None:
    archive = tmp_path / "a.tar"
    if damage == "unlisted member":
        write_archive(archive, {"objects/x": b"x"}, extra={"objects/sneaked-in": b"y"})
    elif damage == "short stream":
        with tarfile.open(archive, "w") as tar, pytest.raises(OSError, match=expected):
            ArchiveWriter(tar, 0).add_stream("objects/x", 10, io.BytesIO(b"short"))
        return
    else:
        manifest = {
            "no manifest": None,
            "bad manifest": b"{",
            "other format": json.dumps({"format": 9}).encode(),
        }
        with tarfile.open(archive, "w") as tar:
            data = manifest[damage]
            if data is not None:
                info = tarfile.TarInfo(MANIFEST)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with pytest.raises(BackupError, match=expected):
        verify(archive)


def test_the_store_other_databases_refer_to_is_dumped_last() -> None:
    assert dump_order(["mlflow", "monitoring", "mlflow_auth"], "mlflow") == [
        "mlflow_auth",
        "monitoring",
        "mlflow",
    ]
    assert dump_order(["monitoring"], "mlflow") == ["monitoring"]


def test_every_long_running_writer_is_stopped_for_a_restore() -> None:
    """A service that talks to MLflow, its store or the prediction log must be in WRITERS, or a
    restore or a migration would run under its writes, or it would read a half-restored store."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    writes = ("MLFLOW_TRACKING_URI", "MLFLOW_BACKEND_STORE_URI", "MONITORING_DB_URI")
    writers = {
        name
        for name, service in services.items()  # YAML merge keys resolved: anchors included
        if service.get("restart") and set(writes) & set(service.get("environment") or {})
    }
    assert writers and writers <= set(stack.WRITERS), writers - set(stack.WRITERS)
    assert set(stack.WRITERS) <= set(services)


@pytest.fixture
def backups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(stack, "ROOT", tmp_path)
    monkeypatch.setattr(stack, "BACKUPS", tmp_path / "backups")
    return tmp_path / "backups"


def test_backup_dir_is_made_for_the_jobs_user(backups: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0:  # without root no chown: the one line names the command to run
        assert stack.main(["backup-dir"]) == 1
        assert f"sudo chown {stack.BACKUP_UID}:{stack.BACKUP_UID} backups" in capsys.readouterr().err
        return
    assert stack.main(["backup-dir"]) == 0
    assert backups.stat().st_uid == stack.BACKUP_UID and backups.stat().st_mode & 0o777 == 0o700
    (backups / "mlops-1.tar").write_bytes(b"x")
    assert stack.main(["backup-dir", str(backups / "mlops-1.tar")]) == 0
    assert (backups / "mlops-1.tar").stat().st_uid == stack.BACKUP_UID


def test_restore_reads_only_existing_archives_in_backups(
    backups: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "mlops-2.tar"
    elsewhere.write_bytes(b"x")
    assert stack.main(["backup-dir", str(elsewhere)]) == 1
    assert "reads archives in ./backups only" in capsys.readouterr().err
    assert stack.main(["backup-dir", str(backups / "missing.tar")]) == 1
    assert "no archive" in capsys.readouterr().err
