"""One process per output folder: an exclusive lock on its state folder, held while the process lives."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.errors import StateLocked

log = logging.getLogger(__name__)

FILE_NAME = "lock"
#: How often ``--wait-lock`` tries again; the lock's holder is a run of seconds to days.
WAIT_POLL_SECONDS = 0.2


class StateLock:
    """``fcntl.flock`` on ``<state folder>/lock``; the file names the holder (pid, command, since when).

    The kernel drops the lock with the last descriptor of its holder, however it ends (``kill -9``
    included), so a lock is never stale. The file itself stays: deleting it would let a process that
    opened the old file and one that creates a new one both hold "the" lock.
    """

    def __init__(self, state_dir: Path, output_dir: Path, command: str) -> None:
        self.path = state_dir / FILE_NAME
        self.output_dir = output_dir
        self.command = command
        self._fd: int | None = None

    def acquire(self, *, wait: bool = False) -> None:
        """Take the lock, or raise ``StateLocked`` naming its holder; with ``wait``, wait for it instead."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:  # a symlink put in its place is refused, never followed to overwrite what it points at
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot open the lock file ({exc.strerror}; a symlink or a folder "
                                     "in its place?)", str(self.path)) from None
        try:
            if not _try_lock(fd):
                holder = self.holder()
                if not wait:
                    raise StateLocked(self.output_dir, holder)
                log.warning("output folder '%s' is in use by %s; waiting for it to finish (--wait-lock)",
                            self.output_dir, holder)
                _wait_for_lock(fd)
            self._note_holder(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def keep(self) -> None:
        """Hold the lock on the file at ``path`` now; raise ``StateLocked`` if another process took it.

        The lock is on a file: if the output folder (or its lock file) is deleted while a watcher
        holds it, a run started then creates a new one and locks that. A watcher calls this before
        each commit: the lock file it holds is still there, or it takes the new one, or it stops.
        """
        if self._fd is None:
            return
        try:
            at, held = os.stat(self.path, follow_symlinks=False), os.fstat(self._fd)
            if (at.st_dev, at.st_ino) == (held.st_dev, held.st_ino):
                return
        except OSError:
            pass
        log.warning("the lock file '%s' was deleted or replaced while this process held it (the output folder "
                    "deleted?); taking it again", self.path)
        old, self._fd = self._fd, None
        try:
            self.acquire()
        finally:
            os.close(old)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    def __enter__(self) -> StateLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def holder(self) -> str:
        """Who holds the lock, as the holder wrote it: ``pid 1234 (runpipeline --watch), since ...``."""
        try:
            noted: Any = json.loads(self.path.read_text(encoding="utf-8"))
            pid, command, since = int(noted["pid"]), str(noted["command"]), str(noted["since"])
        except (OSError, ValueError, KeyError, TypeError):
            return "another process (it has not said which yet)"  # it has the lock, not yet written its name
        return f"pid {pid} ({command}), since {since}"

    def _note_holder(self, fd: int) -> None:
        since = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        noted = json.dumps({"pid": os.getpid(), "command": self.command, "since": since}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, noted + b"\n", 0)


def _wait_for_lock(fd: int) -> None:
    """Poll for the lock rather than block in ``flock``: a blocked ``flock`` was not interrupted by
    Ctrl-C (the kernel restarts it), and a poll lets the signal handlers run between tries."""
    while not _try_lock(fd):
        time.sleep(WAIT_POLL_SECONDS)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
