"""The prediction log's spool: answered records on disk while Postgres cannot take them.

One directory per gateway process under GATEWAY_SPOOL_DIR, held with an exclusive `flock` for the
life of the process. Records are JSON lines appended to numbered segment files; the prediction
log's writer thread replays them into Postgres oldest first and deletes a segment once all of it is
committed. Replaying a record twice is harmless (predictions and feedback are both inserted ON
CONFLICT DO NOTHING), so progress inside a segment is kept in memory only.

A process that stops with records left (Postgres down at shutdown, or a crash) leaves its directory
behind; the next gateway process (or the other one, during a hand-over) takes the free lock and
adopts the segments. Durability: every append reaches the kernel at once (a gateway crash or kill
loses nothing that was spooled); `fsync` runs at most every GATEWAY_SPOOL_FSYNC_S seconds, and when
a segment is closed, so a power loss can cost at most that much. A failed append (ENOSPC, EIO) is
cut back to the last whole line, so a full volume never leaves half a record behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import uuid
from collections import deque
from pathlib import Path

log = logging.getLogger(__name__)

LOCK = "owner.lock"
SUFFIX = ".jsonl"
READ_CHUNK = 1 << 20


class Spool:
    """This process's segment files: append at the end, read and commit from the front."""

    def __init__(self, root: str | Path, segment_bytes: int = 8 << 20, fsync_s: float = 1.0) -> None:
        self.root = Path(root)
        self._segment_bytes = segment_bytes
        self._fsync_s = fsync_s
        self.root.mkdir(parents=True, exist_ok=True)
        self.dir = self.root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.dir.mkdir()
        self._lock_fd = os.open(self.dir / LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._seq = 0
        self._closed: deque[Path] = deque()  # full segments, oldest first, then the active one
        self._active: Path | None = None
        self._fd = -1
        self._size = 0  # of the active segment
        self._synced = time.monotonic()
        self._reading: Path | None = None  # the segment being replayed and the offset committed in it
        self._offset = 0
        self.bytes = 0  # every segment of this spool
        self.rows = 0

    # -- appending (the writer thread) --------------------------------------------------------------

    def append(self, lines: list[bytes]) -> None:
        """Append whole lines (each ending in a newline). Raises OSError with nothing appended."""
        data = b"".join(lines)
        if self._fd < 0 or self._size >= self._segment_bytes:
            self._rotate()
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)  # no half line: frees what the write took
            raise
        self._size += written
        self.bytes += written
        self.rows += len(lines)
        if time.monotonic() - self._synced >= self._fsync_s:
            self.sync()

    def sync(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
        self._synced = time.monotonic()

    def _rotate(self) -> None:
        """Close the active segment (it stays queued) and open the next one."""
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1
            assert self._active is not None
            self._closed.append(self._active)
            self._active = None
        self._seq += 1
        path = self.dir / f"{self._seq:012d}{SUFFIX}"
        self._fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        self._active, self._size = path, 0
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new name survives a power loss too
        finally:
            os.close(dir_fd)

    def has_room(self, nbytes: int) -> bool:
        """Whether the volume has `nbytes` free for this process (statvfs)."""
        try:
            stat = os.statvfs(self.dir)
        except OSError:
            return False
        return stat.f_bavail * stat.f_frsize >= nbytes

    # -- replaying ----------------------------------------------------------------------------------

    def read(self, max_lines: int) -> tuple[list[bytes], int]:
        """Up to `max_lines` whole lines from the oldest uncommitted position, and the bytes they
        take (pass it to `commit` once they are in Postgres). ([], 0) when there is nothing."""
        while True:
            path = self._closed[0] if self._closed else self._active
            if path is None:
                return [], 0
            if path != self._reading:
                self._reading, self._offset = path, 0
            with path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read(READ_CHUNK)
            end = chunk.rfind(b"\n")
            if end < 0 and len(chunk) == READ_CHUNK:  # one line longer than a chunk: read it whole
                with path.open("rb") as f:
                    f.seek(self._offset)
                    chunk = f.read()
                end = chunk.rfind(b"\n")
            if end >= 0:
                lines = chunk[: end + 1].splitlines(keepends=True)[:max_lines]
                return lines, sum(len(line) for line in lines)
            if path is self._active or path == self._active:
                if self._offset and self._offset == self._size:
                    self._drop_active()  # all of it is committed: start an empty one next time
                return [], 0
            if chunk:  # a closed segment ending in half a line: only a crash mid-write leaves one
                log.error("prediction log spool: %s ends in an incomplete record (%d bytes); skipped",
                          path, len(chunk))  # fmt: skip
            self._delete_front()

    def commit(self, nbytes: int, nlines: int) -> None:
        """The lines `read` returned are in Postgres: move past them, delete what is done."""
        self._offset += nbytes
        self.rows = max(self.rows - nlines, 0)
        path = self._reading
        if self._closed and path == self._closed[0]:
            with contextlib.suppress(OSError):
                if self._offset >= path.stat().st_size:
                    self._delete_front()
        elif path == self._active and self._offset >= self._size:
            self._drop_active()

    def _delete_front(self) -> None:
        path = self._closed.popleft()
        with contextlib.suppress(FileNotFoundError):
            self.bytes -= path.stat().st_size
            path.unlink()
        self._reading, self._offset = None, 0
        self.bytes = max(self.bytes, 0)

    def _drop_active(self) -> None:
        """The active segment is fully committed: delete it (the next append opens a new one)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        assert self._active is not None
        with contextlib.suppress(FileNotFoundError):
            self._active.unlink()
        self.bytes = max(self.bytes - self._size, 0)
        self._active, self._size, self._reading, self._offset = None, 0, None, 0

    # -- adopting what other processes left -----------------------------------------------------

    def adopt_orphans(self) -> int:
        """Take over the segments of spool directories whose process is gone (their lock is free);
        they are replayed after this spool's closed segments. Returns the rows adopted."""
        adopted = 0
        for other in sorted(p for p in self.root.iterdir() if p.is_dir() and p != self.dir):
            try:
                fd = os.open(other / LOCK, os.O_CREAT | os.O_RDWR, 0o600)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its process is alive
                segments = sorted(other.glob(f"*{SUFFIX}"))
                if segments and self._fd >= 0:
                    self._rotate_out()
                for segment in segments:
                    self._seq += 1
                    target = self.dir / f"{self._seq:012d}{SUFFIX}"
                    os.rename(segment, target)
                    data = target.read_bytes()
                    self._closed.append(target)
                    self.bytes += len(data)
                    self.rows += data.count(b"\n")
                    adopted += data.count(b"\n")
                with contextlib.suppress(OSError):
                    (other / LOCK).unlink()
                    other.rmdir()
            finally:
                os.close(fd)
        return adopted

    def _rotate_out(self) -> None:
        """Queue the active segment as closed (new appends go to a new one, opened on demand)."""
        self.sync()
        os.close(self._fd)
        self._fd = -1
        assert self._active is not None
        self._closed.append(self._active)
        self._active, self._size = None, 0

    def close(self) -> None:
        """Sync and release the lock; an empty spool directory is removed."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                self.sync()
            os.close(self._fd)
            self._fd = -1
        if self._active is not None and self._size == 0:
            with contextlib.suppress(OSError):
                self._active.unlink()
        if not any(self.dir.glob(f"*{SUFFIX}")):
            with contextlib.suppress(OSError):
                (self.dir / LOCK).unlink()
                self.dir.rmdir()
        os.close(self._lock_fd)
