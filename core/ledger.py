"""Which bytes of which file are already counted: identity and offset per file, for exactly-once."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core import safestate
from core.sources import FINGERPRINT_BYTES, PLAIN, Source, choose, digest

log = logging.getLogger(__name__)

#: Files that left their name (deleted or moved out of the data folder, or their name now holds
#: another file) are remembered this long (the most recent ones), by identity only, so that a
#: rotated or moved file that comes back under any name is not counted again.
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
    #: What reads the file (``core.sources``); offsets are in its bytes (a gzip file's decompressed ones).
    source: Source = PLAIN
    #: Where reading stops (the offset counted so far, see ``Ledger.counted``); None: the file's end.
    end: int | None = None

    def left(self) -> int:
        """Bytes of the file not read yet; 0 for one that cannot be looked at (its read reports why)."""
        if self.end is not None:
            return max(0, self.end - self.start)
        try:
            return max(0, self.source.size(self.path) - self.start)
        except OSError:
            return 0


def fingerprint(path: Path, length: int, start: int = 0, source: Source = PLAIN) -> str:
    """A hash of ``length`` bytes of a file from ``start`` (its first bytes by default)."""
    return source.fingerprint(path, length, start)


def bytes_before(path: Path, offset: int, source: Source = PLAIN) -> str:
    """A hash of the ``FINGERPRINT_BYTES`` (or fewer) before ``offset``."""
    length = min(FINGERPRINT_BYTES, offset)
    return source.fingerprint(path, length, offset - length)


Identity = tuple[int, int]  # (device, inode)


@safestate.register
class Ledger:
    """File name (relative to the data folder) -> ``LedgerEntry``; a plain, picklable mapping.

    A file that left its name is kept in ``departed`` by its identity alone (device and inode),
    with its fixed-size entry: what is remembered of it does not grow with names or with time.
    """

    def __init__(self, entries: dict[str, LedgerEntry] | None = None,
                 departed: dict[Identity, LedgerEntry] | None = None) -> None:
        self.entries: dict[str, LedgerEntry] = dict(entries or {})
        #: Files that are no longer under the name they were counted under, oldest first.
        self.departed: dict[Identity, LedgerEntry] = dict(departed or {})
        self._index: dict[Identity, str] | None = None  # (device, inode) -> name, made when first needed
        #: (old name, new name) of the renames ``plan`` found, for the caller to move what it keeps per name.
        self.renamed: list[tuple[str, str]] = []
        #: The base file these entries were last written to in full (name, SHA-256), see ``core.ledgerbase``;
        #: then the names and departed identities changed since.
        self.base: tuple[str, str] | None = None
        self._changed: set[str] = set()
        self._departed_changed: set[Identity] = set()
        #: The names the last ``forget_missing`` found gone, by the identity of their file (not saved).
        self._left: dict[Identity, str] = {}

    def changes(self) -> tuple[dict[str, LedgerEntry | None], dict[Identity, LedgerEntry | None]]:
        """Each entry changed since the base as it is now, by name and by identity; None where removed."""
        return ({name: self.entries.get(name) for name in self._changed},
                {identity: self.departed.get(identity) for identity in self._departed_changed})

    def apply(self, entries: dict[str, LedgerEntry | None], departed: dict[Identity, LedgerEntry | None]) -> None:
        """Apply ``changes`` made to the base this ledger was read from; they stay changes since it."""
        for held, changed in ((self.entries, entries), (self.departed, departed)):
            for key, entry in changed.items():
                held.pop(key, None)  # type: ignore[call-overload]  (a name or an identity, as held)
                if entry is not None:
                    held[key] = entry  # type: ignore[index]
        self._changed |= set(entries)
        self._departed_changed |= set(departed)
        self._index = None

    def rebase(self, base: tuple[str, str]) -> None:
        """Every entry as it is now was written to ``base``."""
        self.base = base
        self._changed.clear()
        self._departed_changed.clear()

    def __getstate__(self) -> dict[str, Any]:
        return {"entries": self.entries, "departed": self.departed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Checkpoints written before departed files were kept by identity keyed them by name.
        departed = {(e.dev, e.ino): e for e in state["departed"].values()}
        self.__init__(state["entries"], departed)

    def plan(self, name: str, path: Path, source: Source = PLAIN) -> Work | None:
        """What is left to read of a file, or None when it is fully counted. Raises ``OSError``.

        A file never seen is always planned, even empty, so that it is listed among the files.
        A name new to the ledger for a file it knows (same device, inode and first bytes) is that
        file: renamed or come back, if its other name is gone, and counted on from its offset; a
        link to it otherwise, and not read at all. Anything but a regular file raises
        ``NotRegularFile``: it is never read. A file of a source that makes ``copies`` (a gzip
        file) new to the ledger is also known by its content: a compressed copy of a file counted
        is that file, counted on from its offset (see ``_copy_of``).
        """
        info = source.identify(path)
        entry = self.entries.get(name)
        known = self._known_as(path, info, source) if entry is None else None
        if known is None and entry is None and source.copies:
            copied = self._copy_of(name, path, info, source)
            if copied is _COUNTED:
                return None
            entry = copied
        elif known is not None:
            other, entry = known
            if other is not None and _same_file(_sibling(path, name, other), info):
                log.info("%s is the same file as %s, which is counted: read once", name, other)
                return None
            self._rename(other, name, entry)
        if entry is not None and self._replaced(entry, path, info, source):
            log.warning("%s was replaced, rewritten or truncated; reading it again as a new file", name)
            if (info.st_dev, info.st_ino) != (entry.dev, entry.ino):  # the old file may live on under another name
                self._depart(name, entry)
            entry = None
        start, line, open_tail = (entry.offset, entry.line, entry.open_tail) if entry else (0, 1, False)
        if entry is not None and source.size(path, info) <= start:
            return None
        length, head = _head(path, info, source)
        return Work(name, path, start, line, info.st_dev, info.st_ino, head, length, open_tail, source)

    def counted(self, name: str, path: Path, source: Source = PLAIN) -> Work | None:
        """The bytes of ``name`` counted so far, as work from its first byte to its offset; None when
        none are, or when ``path`` is no longer the file they were counted from (``plan`` reads it anew)."""
        entry = self.entries.get(name)
        if entry is None or entry.offset == 0:
            return None
        try:
            info = source.identify(path)
            if self._replaced(entry, path, info, source):
                return None
        except OSError:
            return None
        return Work(name, path, 0, 1, entry.dev, entry.ino, entry.fingerprint, entry.fingerprint_len,
                    end=entry.offset, source=source)

    def counted_as(self, info: os.stat_result) -> LedgerEntry | None:
        """The entry of the file with this device and inode, under whatever name it is counted; None if none."""
        found = self._named((info.st_dev, info.st_ino))
        return found[1] if found is not None else None

    def _named(self, identity: Identity) -> tuple[str, LedgerEntry] | None:
        """The name and entry of the file with this device and inode among the names; None if none."""
        if self._index is None:
            self._index = {(e.dev, e.ino): n for n, e in self.entries.items()}
        name = self._index.get(identity)
        entry = self.entries.get(name) if name is not None else None
        return (name, entry) if name is not None and entry is not None and (entry.dev, entry.ino) == identity else None

    def forget_missing(self, present: set[str]) -> None:
        """Move the files whose names are not in ``present`` (the data folder as listed) to ``departed``."""
        self._left = {}
        for name in [n for n in self.entries if n not in present]:
            entry = self.entries.pop(name)
            self._left[(entry.dev, entry.ino)] = name
            self._changed.add(name)
            self._depart(name, entry)
            if self._index is not None and self._index.get((entry.dev, entry.ino)) == name:
                del self._index[(entry.dev, entry.ino)]

    def _replaced(self, entry: LedgerEntry, path: Path, info: os.stat_result, source: Source) -> bool:
        if (info.st_dev, info.st_ino) != (entry.dev, entry.ino):
            return True
        return not _holds(entry, path, source.size(path, info), source)

    def _known_as(self, path: Path, info: os.stat_result, source: Source) -> tuple[str | None, LedgerEntry] | None:
        """The name the ledger knows this file by (device, inode and first bytes) and its entry; the
        name is None for a file that departed from it. None if the file is unknown."""
        identity = (info.st_dev, info.st_ino)
        named = self._named(identity)
        known, entry = named if named is not None else (None, self.departed.get(identity))
        if entry is None:
            return None
        size = source.size(path, info)
        if size < entry.fingerprint_len or source.fingerprint(path, entry.fingerprint_len) != entry.fingerprint:
            return None  # a reused inode
        return known, entry

    def _copy_of(self, name: str, path: Path, info: os.stat_result, source: Source) -> LedgerEntry | object | None:
        """The entry of the file counted before that ``path`` is a copy of, by content: its first
        bytes, and the bytes before its offset, are this file's (a rotated log compressed as
        ``app.log.1.gz``).

        A copy of a file still there under its name is ``_COUNTED``: read once, like a link. A
        copy of a file gone from its name (departed, or its name now holds a new file) takes its
        entry over, with its own device and inode, and counts on from its offset. None for
        content the ledger does not know.
        """
        for known, entry in self._by_content(path, source):
            if not _holds(entry, path, source.size(path, info), source):
                continue
            if known is not None and _is_file(_sibling(path, name, known), entry):
                log.info("%s is a copy of %s, which is counted: read once", name, known)
                return _COUNTED
            log.info("%s is a copy of %s, counted before: counting on from line %d (byte %d)",
                     name, f"{known} as it was" if known else "a file gone since", entry.line, entry.offset)
            if known is not None:  # its name holds a new file now, which is read as new
                del self.entries[known]
                self._changed.add(known)
            if self.departed.get((entry.dev, entry.ino)) == entry:
                del self.departed[(entry.dev, entry.ino)]
                self._departed_changed.add((entry.dev, entry.ino))
                left = self._left.pop((entry.dev, entry.ino), None)
                if left is not None:  # it left its name in this listing, nothing new is there: its counts move
                    self.renamed.append((left, name))
            entry = replace(entry, dev=info.st_dev, ino=info.st_ino)
            self.entries[name] = entry
            self._changed.add(name)
            self._index = None
            return entry
        return None

    def _by_content(self, path: Path, source: Source) -> list[tuple[str | None, LedgerEntry]]:
        """The counted files whose first bytes are those of ``path`` (most recent first)."""
        with source.open(path, 0) as handle:
            head = handle.read(FINGERPRINT_BYTES)
        found: list[tuple[str | None, LedgerEntry]] = []
        digests: dict[int, str] = {}
        candidates = [(n, e) for n, e in self.entries.items()] + [(None, e) for e in reversed(self.departed.values())]
        for known, entry in candidates:
            length = entry.fingerprint_len
            if entry.offset == 0 or length == 0 or length > len(head):
                continue
            if length not in digests:
                digests[length] = digest(head[:length])
            if digests[length] == entry.fingerprint:
                found.append((known, entry))
        return found

    def _depart(self, name: str, entry: LedgerEntry) -> None:
        log.debug("%s departed from its name; remembered by its identity", name)
        identity = (entry.dev, entry.ino)
        self.departed.pop(identity, None)  # to the end: the most recent
        self.departed[identity] = entry
        self._departed_changed.add(identity)
        while len(self.departed) > DEPARTED_KEPT:
            oldest = next(iter(self.departed))
            del self.departed[oldest]
            self._departed_changed.add(oldest)

    def _rename(self, old: str | None, new: str, entry: LedgerEntry) -> None:
        """``new`` is the file known as ``old`` (None: a departed file come back): it is counted on."""
        if old is None:
            del self.departed[(entry.dev, entry.ino)]
            self._departed_changed.add((entry.dev, entry.ino))
            # Gone from its name in this listing (so nothing new is there): renamed. Gone before, its
            # counts under that name may be mixed with a newer file's there: they are left there.
            old = self._left.pop((entry.dev, entry.ino), None)
            if old is None:
                log.info("%s is a file counted before under another name: counting on from byte %d", new,
                         entry.offset)
        else:
            del self.entries[old]
            self._changed.add(old)
        if old is not None:
            self.renamed.append((old, new))
            log.info("%s was renamed to %s: counting on from byte %d", old, new, entry.offset)
        self.entries[new] = entry
        self._changed.add(new)
        if self._index is not None:
            self._index[(entry.dev, entry.ino)] = new

    def advance(self, work: Work, offset: int, line: int, open_tail: bool, before: str | None = None) -> None:
        """Record that the file of ``work`` is counted up to ``offset`` (next line ``line``).

        ``before`` is the hash of the bytes before ``offset`` when the reader kept it (a stream,
        where reading them again means reading everything before them); otherwise it is read here.
        """
        length = min(work.fingerprint_len, offset)
        head = work.fingerprint if length == work.fingerprint_len else fingerprint(work.path, length, 0, work.source)
        if before is None:
            try:
                before = bytes_before(work.path, offset, work.source)
            except OSError:  # gone since it was read: the next plan finds it replaced or missing anyway
                before = ""
        self.entries[work.name] = LedgerEntry(work.dev, work.ino, head, length, offset, line, open_tail, before)
        self._changed.add(work.name)
        if self._index is not None:
            self._index[(work.dev, work.ino)] = work.name


#: ``Ledger._copy_of``: a copy of a file that is still there, counted under its own name.
_COUNTED = object()


def _head(path: Path, info: os.stat_result, source: Source) -> tuple[int, str]:
    """How many of a file's first bytes identify it (up to ``FINGERPRINT_BYTES``), and their hash.

    A stream's are read, not its size, which means reading all of it (a new gzip file is read
    once, when it is counted).
    """
    if source.seekable:
        length = min(FINGERPRINT_BYTES, source.size(path, info))
        return length, source.fingerprint(path, length)
    with source.open(path, 0) as handle:
        first = handle.read(FINGERPRINT_BYTES)
    return len(first), digest(first)


def _holds(entry: LedgerEntry, path: Path, size: int, source: Source) -> bool:
    """Whether the file still holds what ``entry`` counted: as long, the same bytes before the
    offset and the same first bytes."""
    if size < entry.offset:
        return False
    if entry.before and bytes_before(path, entry.offset, source) != entry.before:
        return False
    return source.fingerprint(path, entry.fingerprint_len) == entry.fingerprint


def _sibling(path: Path, name: str, other: str) -> Path:
    """The path of ``other``, a name in the same data folder as ``path`` (named ``name``); an
    object's (``core.objectstore.ObjectPath``) is another object under the same prefix."""
    if not isinstance(path, Path):
        return path.sibling(name, other)  # type: ignore[no-any-return]
    return path.parents[len(Path(name).parts) - 1] / other


def _is_file(path: Path, entry: LedgerEntry) -> bool:
    """Whether ``path`` is still the file ``entry`` was counted from: same device and inode (not a
    reused one: it holds what was counted)."""
    source = choose(path.name) if isinstance(path, Path) else path.source()  # type: ignore[attr-defined]
    try:
        other = path.stat()
        return (other.st_dev, other.st_ino) == (entry.dev, entry.ino) and _holds(entry, path, source.size(path),
                                                                                  source)
    except OSError:
        return False


def _same_file(path: Path, info: os.stat_result) -> bool:
    try:
        other = path.stat()
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (info.st_dev, info.st_ino)
