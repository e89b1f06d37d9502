"""The prediction log's spool on real file systems: order, segment deletion, and a full volume.

The full volume is a real 64 KiB tmpfs mounted in a user namespace of the test's own child process
(`unshare -Urm`: no privileges needed), so writes fail with ENOSPC as on a full Docker volume.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from services.gateway.spool import Spool
from tests.conftest import ROOT, python_env


def lines(n: int, start: int = 0, width: int = 100) -> list[bytes]:
    return [json.dumps([i, "x" * width]).encode() + b"\n" for i in range(start, start + n)]


def test_lines_come_back_in_order_and_committed_segments_are_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1000, fsync_s=0)
    for chunk in range(10):
        spool.append(lines(5, start=chunk * 5))
    assert spool.rows == 50 and len(list(spool.dir.glob("*.jsonl"))) > 3
    seen: list[int] = []
    while True:
        batch, nbytes = spool.read(7)
        if not batch:
            break
        seen += [json.loads(line)[0] for line in batch]
        spool.commit(nbytes, len(batch))
    assert seen == list(range(50))
    assert (spool.rows, spool.bytes, list(spool.dir.glob("*.jsonl"))) == (0, 0, [])
    spool.close()
    assert list(tmp_path.iterdir()) == []  # an empty spool leaves nothing behind


def test_a_live_process_keeps_its_spool_and_a_stopped_one_is_adopted(tmp_path: Path) -> None:
    first, second = Spool(tmp_path), Spool(tmp_path)
    first.append(lines(3))
    assert second.adopt_orphans() == 0  # first still holds its lock
    first.close()
    assert second.adopt_orphans() == 3
    batch, _ = second.read(10)
    assert [json.loads(line)[0] for line in batch] == [0, 1, 2]
    second.close()


FILL = """
import errno, json, sys
from services.gateway.spool import Spool
spool = Spool(sys.argv[1], segment_bytes=1 << 20, fsync_s=0)
appended = 0
while True:
    try:
        spool.append([json.dumps([appended + i, "x" * 300]).encode() + b"\\n" for i in range(10)])
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
        break
    appended += 10
size = sum(p.stat().st_size for p in spool.dir.glob("*.jsonl"))
data = b"".join(p.read_bytes() for p in sorted(spool.dir.glob("*.jsonl")))
print(json.dumps({"appended": appended, "size": size, "bytes": spool.bytes,
                  "ids": [json.loads(line)[0] for line in data.splitlines()]}))
"""


def test_a_full_volume_fails_the_append_and_keeps_every_earlier_line_whole(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is not installed")
    script = textwrap.dedent(FILL)
    mount = 'mount -t tmpfs -o size=64k spool-test "$1" && exec "$2" -c "$3" "$1"'
    done = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", mount, "sh", str(tmp_path), sys.executable, script],
        env=python_env(), cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert 0 < result["appended"] < 300  # 64 KiB hold about 200 lines of 320 bytes
    assert result["size"] == result["bytes"]  # the failed append was cut back, not left half written
    assert result["ids"] == list(range(result["appended"]))
