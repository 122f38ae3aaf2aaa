"""Per-file line accounting: mergeable counts of lines, records, blanks and malformed lines."""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from core import safestate


@safestate.register
@dataclass(frozen=True, order=True)
class MalformedLine:
    """One malformed line kept as a sample: where it is, why it was rejected, how it began."""

    line: int
    reason: str
    text: str


@safestate.register
@dataclass
class FileStats:
    """Counts for one file, or part of one; ``merge`` adds parts in any order."""

    path: str
    sample_limit: int = 100
    bytes: int = 0
    lines: int = 0
    records: int = 0
    blank: int = 0
    malformed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    samples: list[MalformedLine] = field(default_factory=list)
    seconds: float = 0.0

    def add_malformed(self, found: list[MalformedLine]) -> None:
        """Count malformed lines and keep the earliest ``sample_limit`` of them as samples."""
        self.count_malformed(Counter(m.reason for m in found), found)

    def count_malformed(self, reasons: Counter[str], earliest: list[MalformedLine]) -> None:
        """Count malformed lines by reason; ``earliest`` holds at least the first ``sample_limit``."""
        self.malformed += reasons.total()
        self.reasons.update(reasons)
        self.samples = _earliest(self.sample_limit, self.samples, earliest)

    def shift_lines(self, by: int) -> None:
        """Add ``by`` to the line numbers of the samples (a part read as a range of its own: ``Rule.shift_lines``)."""
        if by and self.samples:
            self.samples = [MalformedLine(s.line + by, s.reason, s.text) for s in self.samples]

    def merge(self, other: FileStats) -> None:
        """Add another part of the same file; associative and commutative."""
        self.bytes += other.bytes
        self.lines += other.lines
        self.records += other.records
        self.blank += other.blank
        self.malformed += other.malformed
        self.reasons.update(other.reasons)
        self.samples = _earliest(self.sample_limit, self.samples, other.samples)
        self.seconds += other.seconds

    def as_dict(self) -> dict[str, Any]:
        """The file's entry in ``summary.json``; timing is left out so that outputs are reproducible."""
        return {
            "path": self.path,
            "bytes": self.bytes,
            "lines": self.lines,
            "records": self.records,
            "blank": self.blank,
            "malformed": self.malformed,
            "malformed_reasons": dict(sorted(self.reasons.items())),
        }


def _earliest(limit: int, kept: list[MalformedLine], more: list[MalformedLine]) -> list[MalformedLine]:
    """The ``limit`` earliest of ``kept`` (sorted) and ``more``, sorted.

    Parts of a file mostly arrive in order, so nothing of ``more`` usually makes it: that is
    found by comparing line numbers, before any sorting.
    """
    if not more or limit == 0 or (len(kept) >= limit and kept[limit - 1].line < min(m.line for m in more)):
        return kept[:limit]
    # A file's lines are numbered once each, so the line orders them (and cheaply: a dataclass's
    # own comparison was most of the time the parser spent on samples).
    if not kept:
        return sorted(more, key=_LINE)[:limit]
    return heapq.nsmallest(limit, [*kept, *more], key=_LINE)


_LINE = attrgetter("line")


def merge_file_stats(into: dict[str, FileStats], other: dict[str, FileStats]) -> None:
    """Merge per-path stats of ``other`` into ``into``; a path merged moves to the end (most recent)."""
    for path, stats in other.items():
        held = into.pop(path, None)
        if held is not None:
            held.merge(stats)
            stats = held
        into[path] = stats


#: The counts ``FileTotals`` keeps, as ``FileStats`` names them.
COUNTS = ("bytes", "lines", "records", "blank", "malformed")


@safestate.register
@dataclass
class FileTotals:
    """The counts of files no longer listed one by one: how many, and their lines, records, etc. added up.

    A watcher that runs for months reads hundreds of thousands of files; their per-file counts
    (and malformed samples) are folded in here, so that what is kept and written at each commit
    does not grow with them.
    """

    files: int = 0
    bytes: int = 0
    lines: int = 0
    records: int = 0
    blank: int = 0
    malformed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def fold(self, stats: FileStats | FileTotals, files: int = 1) -> None:
        """Add one file's counts (or another ``FileTotals``, with its ``files``)."""
        self.files += files
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(stats, name))
        self.reasons.update(stats.reasons)

    def merge(self, other: FileTotals) -> None:
        """Associative and commutative, like every state."""
        self.fold(other, other.files)


def fold_oldest(files: dict[str, FileStats], totals: FileTotals, keep: int) -> None:
    """Fold all but the ``keep`` most recently merged files of ``files`` into ``totals``."""
    while len(files) > keep:
        totals.fold(files.pop(next(iter(files))))
