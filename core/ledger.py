"""Which bytes of which file are already counted: identity and offset per file, for exactly-once."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import safestate
from core.discover import check_regular, open_regular

log = logging.getLogger(__name__)

#: How many leading bytes identify a file's content, so a reused inode is still caught.
FINGERPRINT_BYTES = 1024
#: Files whose name now holds another file are remembered this long (the most recent ones), so that
#: a rotated file found under its new name after its old name was reused is not counted again.
DEPARTED_KEPT = 10_000


@safestate.register
@dataclass(frozen=True)
class LedgerEntry:
    """A file as last committed: who it is (device, inode, first bytes) and how far it is counted.

    ``offset`` is the first byte not yet counted and ``line`` its line number. ``open_tail`` is
    true when the last counted line had no newline (a batch run counts it); bytes appended to that
    line later are not counted again. ``before`` is a hash of the ``FINGERPRINT_BYTES`` before the
    offset: a file rewritten in place, even with the same first bytes and longer, is caught by it.
    """

    dev: int
    ino: int
    fingerprint: str
    fingerprint_len: int
    offset: int
    line: int
    open_tail: bool = False
    before: str = ""


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

    def left(self) -> int:
        """Bytes of the file not read yet; 0 for one that cannot be looked at (its read reports why)."""
        try:
            return max(0, self.path.stat().st_size - self.start)
        except OSError:
            return 0


def fingerprint(path: Path, length: int, start: int = 0) -> str:
    """A hash of ``length`` bytes of a regular file from ``start`` (its first bytes by default)."""
    with open_regular(path) as handle:
        return hashlib.blake2b(os.pread(handle.fileno(), length, start), digest_size=16).hexdigest()


def bytes_before(path: Path, offset: int) -> str:
    """A hash of the ``FINGERPRINT_BYTES`` (or fewer) before ``offset``."""
    length = min(FINGERPRINT_BYTES, offset)
    return fingerprint(path, length, offset - length)


@safestate.register
class Ledger:
    """File name (relative to the data folder) -> ``LedgerEntry``; a plain, picklable mapping."""

    def __init__(self, entries: dict[str, LedgerEntry] | None = None,
                 departed: dict[str, LedgerEntry] | None = None) -> None:
        self.entries: dict[str, LedgerEntry] = dict(entries or {})
        #: Files that were under a name now holding another file, by their last name.
        self.departed: dict[str, LedgerEntry] = dict(departed or {})
        self._index: dict[tuple[int, int], str] | None = None  # (device, inode) -> name, made when first needed
        #: (old name, new name) of the renames ``plan`` found, for the caller to move what it keeps per name.
        self.renamed: list[tuple[str, str]] = []

    def __getstate__(self) -> dict[str, Any]:
        return {"entries": self.entries, "departed": self.departed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["entries"], state["departed"])

    def plan(self, name: str, path: Path) -> Work | None:
        """What is left to read of a file, or None when it is fully counted. Raises ``OSError``.

        A file never seen is always planned, even empty, so that it is listed among the files.
        A name new to the ledger for a file it knows under another name (same device, inode and
        first bytes) is that file: renamed, if the other name is gone, and counted on from its
        offset; a link to it otherwise, and not read at all. Anything but a regular file raises
        ``NotRegularFile``: it is never read.
        """
        info = os.stat(path)
        check_regular(path, info)
        entry = self.entries.get(name)
        if entry is None:
            known = self._known_as(path, info)
            if known is not None and known[0] != name:
                other, departed = known
                if not departed and _same_file(_sibling(path, name, other), info):
                    log.info("%s is the same file as %s, which is counted: read once", name, other)
                    return None
                entry = self._rename(other, name, departed)
                log.info("%s was renamed to %s: counting on from byte %d", other, name, entry.offset)
        if entry is not None and self._replaced(entry, path, info):
            log.warning("%s was replaced, rewritten or truncated; reading it again as a new file", name)
            if (info.st_dev, info.st_ino) != (entry.dev, entry.ino):  # the old file may live on under another name
                self._depart(name, entry)
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
        if entry.before and bytes_before(path, entry.offset) != entry.before:
            return True
        return fingerprint(path, entry.fingerprint_len) != entry.fingerprint

    def _known_as(self, path: Path, info: os.stat_result) -> tuple[str, bool] | None:
        """The name the ledger knows this file by (device, inode and first bytes), and whether that
        name has been reused by another file since (the file *departed* from it); None if unknown."""
        if self._index is None:
            self._index = {(e.dev, e.ino): n for n, e in self.entries.items()}
        identity = (info.st_dev, info.st_ino)
        known = self._index.get(identity)
        entry = self.entries.get(known) if known is not None else None
        departed = entry is None or (entry.dev, entry.ino) != identity
        if departed:
            known = next((n for n, e in self.departed.items() if (e.dev, e.ino) == identity), None)
            entry = self.departed.get(known) if known is not None else None
        if known is None or entry is None:
            return None
        if info.st_size < entry.fingerprint_len or fingerprint(path, entry.fingerprint_len) != entry.fingerprint:
            return None  # a reused inode
        return known, departed

    def _depart(self, name: str, entry: LedgerEntry) -> None:
        self.departed.pop(name, None)
        self.departed[name] = entry
        while len(self.departed) > DEPARTED_KEPT:
            del self.departed[next(iter(self.departed))]

    def _rename(self, old: str, new: str, departed: bool) -> LedgerEntry:
        entry = self.departed.pop(old) if departed else self.entries.pop(old)
        self.entries[new] = entry
        if not departed:  # a departed file's counts are mixed with its old name's new file's: left there
            self.renamed.append((old, new))
        if self._index is not None:
            self._index[(entry.dev, entry.ino)] = new
        return entry

    def advance(self, work: Work, offset: int, line: int, open_tail: bool) -> None:
        """Record that the file of ``work`` is counted up to ``offset`` (next line ``line``)."""
        length = min(work.fingerprint_len, offset)
        digest = work.fingerprint if length == work.fingerprint_len else fingerprint(work.path, length)
        try:
            before = bytes_before(work.path, offset)
        except OSError:  # gone since it was read: the next plan finds it replaced or missing anyway
            before = ""
        self.entries[work.name] = LedgerEntry(work.dev, work.ino, digest, length, offset, line, open_tail, before)
        if self._index is not None:
            self._index[(work.dev, work.ino)] = work.name


def _sibling(path: Path, name: str, other: str) -> Path:
    """The path of ``other``, a name in the same data folder as ``path`` (named ``name``)."""
    return path.parents[len(Path(name).parts) - 1] / other


def _same_file(path: Path, info: os.stat_result) -> bool:
    try:
        other = os.stat(path)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (info.st_dev, info.st_ino)
