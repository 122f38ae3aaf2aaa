"""Which bytes of which file are already counted: identity and offset per file, for exactly-once."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from core.discover import check_regular, open_regular

log = logging.getLogger(__name__)

#: How many leading bytes identify a file's content, so a reused inode is still caught.
FINGERPRINT_BYTES = 1024


@dataclass(frozen=True)
class LedgerEntry:
    """A file as last committed: who it is (device, inode, first bytes) and how far it is counted.

    ``offset`` is the first byte not yet counted and ``line`` its line number. ``open_tail`` is
    true when the last counted line had no newline (a batch run counts it); bytes appended to that
    line later are not counted again.
    """

    dev: int
    ino: int
    fingerprint: str
    fingerprint_len: int
    offset: int
    line: int
    open_tail: bool = False


@dataclass(frozen=True)
class Work:
    """A file's uncounted bytes: read from ``start`` (line ``first_line``), as identified when planned."""

    name: str
    path: Path
    start: int
    first_line: int
    dev: int
    ino: int
    fingerprint: str
    fingerprint_len: int
    skip_to_newline: bool = False


def fingerprint(path: Path, length: int) -> str:
    """A hash of the first ``length`` bytes of a regular file."""
    with open_regular(path) as handle:
        return hashlib.blake2b(handle.read(length), digest_size=16).hexdigest()


class Ledger:
    """File name (relative to the data folder) -> ``LedgerEntry``; a plain, picklable mapping."""

    def __init__(self, entries: dict[str, LedgerEntry] | None = None) -> None:
        self.entries: dict[str, LedgerEntry] = dict(entries or {})

    def plan(self, name: str, path: Path) -> Work | None:
        """What is left to read of a file, or None when it is fully counted. Raises ``OSError``.

        A file never seen is always planned, even empty, so that it is listed among the files.
        Anything but a regular file raises ``NotRegularFile``: it is never read.
        """
        info = os.stat(path)
        check_regular(path, info)
        entry = self.entries.get(name)
        if entry is not None and self._replaced(entry, path, info):
            log.warning("%s was replaced or truncated; reading it again as a new file", name)
            entry = None
        start, line, open_tail = (entry.offset, entry.line, entry.open_tail) if entry else (0, 1, False)
        if entry is not None and info.st_size <= start:
            return None
        length = min(FINGERPRINT_BYTES, info.st_size)
        return Work(
            name, path, start, line, info.st_dev, info.st_ino, fingerprint(path, length), length, open_tail
        )

    def _replaced(self, entry: LedgerEntry, path: Path, info: os.stat_result) -> bool:
        if (info.st_dev, info.st_ino) != (entry.dev, entry.ino) or info.st_size < entry.offset:
            return True
        return fingerprint(path, entry.fingerprint_len) != entry.fingerprint

    def advance(self, work: Work, offset: int, line: int, open_tail: bool) -> None:
        """Record that the file of ``work`` is counted up to ``offset`` (next line ``line``)."""
        length = min(work.fingerprint_len, offset)
        digest = work.fingerprint if length == work.fingerprint_len else fingerprint(work.path, length)
        self.entries[work.name] = LedgerEntry(work.dev, work.ino, digest, length, offset, line, open_tail)
