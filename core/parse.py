"""Turn a chunk of raw bytes into a columnar batch of records plus the accounting of its lines.

The whole contract is in ``docs/line-contract.md``. Valid lines are the vast majority, so a fast
path finds them: one compiled pass (``core/_scan.c``) over the chunk takes every line of plain
printable ASCII with four non-empty fields and a timestamp of the accepted form naming a real
instant, and hands those records over as Arrow columns. Every other line (a few per cent in dirty
files) is classified the full way here, line by line in Python; ``tests/test_property.py`` checks
that both ways agree on any input. Without the compiled scan, its stand-in
(``core/fallback/_scan.py``) finds the plain records with Polars and leaves every other line here.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import polars as pl

from core import compiled
from core.stats import FileStats, MalformedLine

#: The version of ``core/_scan.c`` this module is written for.
SCAN_VERSION = 3
_scan = compiled.load("_scan", SCAN_VERSION, "the compiled parser")

#: Columns and types of every record batch handed to rules.
RECORD_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Datetime("us", "UTC"),
    "status": pl.String(),
    "service": pl.String(),
    "user": pl.String(),
    "message": pl.String(),
    "record_hash": pl.UInt64(),
    "file": pl.String(),
    "line": pl.Int64(),
}

#: Why a line is malformed, in the order the contract checks; ``core/_scan.c`` numbers them so.
REASONS = ("too_long", "missing_fields", "empty_field", "invalid_utf8", "bad_characters", "bad_timestamp")
# Python's \s is str.isspace: Unicode's White_Space and the separators U+001C-U+001F.
_TOKEN = r"[^\s\x00-\x1f\x7f\ufffd]+"
_TIMESTAMP = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_VALID_LINE = re.compile(rf"({_TIMESTAMP}) ({_TOKEN}) ({_TOKEN}) ({_TOKEN})(?: (.*))?\Z", re.DOTALL)
_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
#: Characters of a malformed line kept as its sample.
SAMPLE_CHARS = 200
_NEWLINE = 0x0A
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: Every record column, for rules that do not say which they read.
RECORD_COLUMNS = tuple(RECORD_SCHEMA)


@dataclass(frozen=True)
class Chunk:
    """Whole lines of one file: bytes ``start`` to ``end``, the first of them numbered ``first_line``.

    A chunk for a line the reader discarded because it exceeded ``max_line_bytes`` has no
    ``data`` and lists that line (numbered ``first_line``) in ``overlong``.

    ``data`` may go on past ``end - start`` bytes with the start of the next line (no newline):
    the reader hands over the block it read as it is, as cutting it would copy it.
    """

    path: str
    data: bytes
    first_line: int
    start: int
    end: int
    overlong: tuple[int, ...] = ()
    #: The hash of the bytes before ``end`` where the reader kept it (a stream, ``core.sources``):
    #: None where the ledger reads them again itself, "" where they are not known.
    before: str | None = None
    #: The last few lines of the file before the chunk, and the first few after it
    #: (``CONTEXT_BYTES`` at most each), where the reader knows them: what the clocks of the
    #: chunk's first and last lines are judged against (``stray_rows``).
    context: bytes = b""
    after: bytes = b""

    @property
    def size(self) -> int:
        """Bytes of the chunk's lines: the first ``size`` bytes of ``data`` (none for a skipped line)."""
        return min(len(self.data), self.end - self.start)

    @property
    def open_tail(self) -> bool:
        """The last line has no newline (yet)."""
        return self.size > 0 and self.data[self.size - 1] != _NEWLINE

    def place(self) -> ChunkPlace:
        """Where the chunk is, without its bytes: what merging it needs."""
        return ChunkPlace(self.path, self.first_line, self.start, self.end, self.open_tail, self.before)


@dataclass(frozen=True)
class ChunkPlace:
    """A ``Chunk``'s place in its file, and whether its last line is open, without its bytes.

    The merge queue holds these: a chunk's bytes (5 MiB by default) are needed only until it
    is parsed, and held by the queue they stayed until its merge, a seal included.
    """

    path: str
    first_line: int
    start: int
    end: int
    open_tail: bool
    before: str | None = None


@dataclass(frozen=True)
class Batch:
    """Records of one chunk, as a Polars frame with the columns of ``RECORD_SCHEMA``.

    ``malformed`` counts the chunk's malformed lines by reason, for rules that report on them
    (the records themselves never include those lines).

    A batch holds one file's lines, or whole small files put together (see ``combine``): then
    ``path`` is ``""``, ``files`` names them in read order, and each record's ``file`` column
    says which it came from. Only rules with ``many_files`` are handed those; the others get
    each file's records as a batch of its own (``core.rules.Rule.many_files``).
    """

    path: str
    frame: pl.DataFrame
    malformed: Mapping[str, int] = field(default_factory=dict)
    #: Processing time (microseconds since the epoch): every rule that bounds times by "now"
    #: (``max_future``) bounds this batch's alike. The engine takes it once per pass over the
    #: data folder, on the thread that plans the work (``core.work.WorkSpec.now``), never on a worker.
    now: int = field(default_factory=lambda: time.time_ns() // 1000)
    #: Tallies rules made of this batch, shared by rules that ask for the same (``core.tally.shared``).
    tallies: list[Any] = field(default_factory=list, compare=False, repr=False)
    #: The files of a batch of several, in read order; empty for a batch of one file (``path``).
    files: tuple[str, ...] = ()
    #: For a batch of several files, each record's place as one sortable number: the rank of its
    #: file's name among ``files`` in the high 32 bits, its line in the low ones (see
    #: ``core.tally.shared``). None for a batch of one file, whose ``line`` column is that.
    ordinal: pl.Series | None = field(default=None, compare=False, repr=False)
    #: Each file's batch, for rules that take one file at a time; empty for a batch of one file.
    parts: tuple[Batch, ...] = field(default=(), compare=False, repr=False)
    #: The ``line`` numbers count from 1 at the start of a byte range read on its own
    #: (``core.work.range_work``), not at the start of the file: a line 1 may have lines before
    #: it. The committer moves the partial state to the file's numbers before merging it
    #: (``core.rules.Rule.shift_lines``); a rule only needs this to tell a file's first line.
    relative: bool = False
    #: Positions in ``frame`` of the records whose clock is a stray (``stray_rows``), in order;
    #: None if there is none. Rules that place records in event time read ``timed()``.
    stray: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __len__(self) -> int:
        return self.frame.height

    @property
    def strays(self) -> int:
        """How many records have a stray clock."""
        return 0 if self.stray is None else len(self.stray)

    def timed(self) -> Batch:
        """This batch with its stray clocks at ``STRAY_TIME``: what rules that place records in event time read.

        A stray's time is then outside every plausible range, and those rules leave it out as they
        leave out a record from 1970: every row stays where it is (lines, samples, the other
        columns), and only the ``ts`` column is new. Made once per batch, and the batch itself
        when it has no stray, so that those rules share its tallies.
        """
        if self.stray is None:
            return self
        made = self.__dict__.get("_timed")
        if made is None:
            us = micros(self.frame["ts"]).copy()
            us[self.stray] = STRAY_TIME
            ts = pl.Series("ts", us, dtype=self.frame.schema["ts"])
            frame = pl.DataFrame([ts if name == "ts" else self.frame[name] for name in self.frame.columns])
            made = Batch(self.path, frame, self.malformed, now=self.now, files=self.files, ordinal=self.ordinal,
                         relative=self.relative)
            if self.parts:  # its files' own, made if asked for (rules of several files never ask)
                object.__setattr__(made, "_untimed", self.parts)
            object.__setattr__(self, "_timed", made)
        return made

    def per_file(self) -> tuple[Batch, ...]:
        """This batch as batches of one file each."""
        untimed = self.__dict__.get("_untimed")
        if untimed is not None:  # the ``timed`` batch of several files
            return tuple(part.timed() for part in untimed)
        return self.parts or (self,)


def micros(ts: pl.Series) -> np.ndarray:
    """A Datetime("us") column's microseconds since the epoch, without a Polars query (a cast is
    one, and runs on Polars' thread pool, where the workers wait for each other: 5,000 small files
    took 6.1 s against 3.8 with a cast each)."""
    return ts.to_numpy().view(np.int64)


#: The time ``Batch.timed`` gives a stray clock (microseconds since the epoch): about 146,000 years
#: BC, before any plausible range (``core.tally.EVER`` is 2^62).
STRAY_TIME = -(2**62) + 1
#: Bits of ``Batch.ordinal`` that hold the line number: files put together are small.
ORDINAL_LINE_BITS = 32


def combine(batches: list[Batch]) -> Batch:
    """Several files' batches as one, each file's records in line order, the files in the order given.

    A batch of records is what rules pay for per call (a few Polars and compiled calls each,
    whatever its size): ten-line files one at a time cost about 10 ms each (issue 14, item 17).
    """
    if len(batches) == 1:
        return batches[0]
    frame = pl.concat([b.frame for b in batches], rechunk=True)
    files = tuple(dict.fromkeys(b.path for b in batches))
    rank = {name: i for i, name in enumerate(sorted(files))}
    heights = np.array([b.frame.height for b in batches], dtype=np.int64)
    high = np.repeat(np.array([rank[b.path] for b in batches], dtype=np.int64) << ORDINAL_LINE_BITS, heights)
    ordinal = pl.Series("ordinal", frame["line"].to_numpy() + high)
    malformed: Counter[str] = Counter()
    for b in batches:
        malformed.update(b.malformed)
    starts = np.concatenate([[0], np.cumsum(heights)[:-1]])
    strays = [b.stray + start for b, start in zip(batches, starts, strict=True) if b.stray is not None]
    return Batch("", frame, dict(malformed), now=batches[0].now, files=files, ordinal=ordinal, parts=tuple(batches),
                 relative=any(b.relative for b in batches), stray=np.concatenate(strays) if strays else None)


def parse_chunk(
    chunk: Chunk, max_line_bytes: int, sample_limit: int, columns: Collection[str] = RECORD_COLUMNS,
    samples: bool = True,
    now: int | None = None,
    stray_us: int | None = None,
) -> tuple[Batch, FileStats]:
    """Parse one chunk into its records and the counts of its lines.

    ``columns`` names the record columns the rules read. The two that cost extra are built only
    when wanted: ``message`` is otherwise all ``""``, and ``record_hash`` all 0. Without
    ``samples`` (the file has its ``sample_limit`` earliest already), malformed lines are
    counted and none is kept as a sample. ``now`` is the batch's processing time (microseconds
    since the epoch; the clock's by default). With ``stray_us``, records whose time is further
    than that from the lines around them are marked as stray clocks (``stray_rows``).
    """
    stats = FileStats(chunk.path, sample_limit=sample_limit, bytes=chunk.end - chunk.start)
    stats.lines = len(chunk.overlong)
    stats.add_malformed([MalformedLine(n, "too_long", "") for n in chunk.overlong])
    if not chunk.size:
        return _batch(chunk.path, _empty_frame(), dict(stats.reasons), now), stats
    with_message, with_hash = "message" in columns, "record_hash" in columns
    count, blank, plain, decided, undecided = _scan.scan(
        chunk.data, chunk.size, max_line_bytes, chunk.first_line, with_message, with_hash
    )
    stats.lines += count
    stats.blank = blank
    records = pl.DataFrame(compiled.series(plain))
    stats.count_malformed(*_decided(chunk, *decided, sample_limit if samples else 0))
    more, more_blank, malformed = _undecided(chunk, *undecided, max_line_bytes, with_message, with_hash)
    # From the compiled scan, none unless it and this module disagree (tests/test_property.py checks
    # they do not); its pure Python stand-in leaves the records with Unicode fields to this module.
    if more:
        records = pl.concat([records, pl.DataFrame(more, schema=records.schema, orient="row")]).sort("line")
    stats.blank += more_blank
    stats.count_malformed(Counter(m.reason for m in malformed), malformed if samples else [])
    stats.records = records.height
    stray = None if stray_us is None else _plausible_strays(
        records, stray_us, now, context_times(chunk.context, last=True), context_times(chunk.after, last=False))
    return _batch(chunk.path, _with_file(records, chunk.path), dict(stats.reasons), now, stray), stats


def _batch(path: str, frame: pl.DataFrame, malformed: dict[str, int], now: int | None,
           stray: np.ndarray | None = None) -> Batch:
    if now is None:
        return Batch(path, frame, malformed, stray=stray)
    return Batch(path, frame, malformed, now=now, stray=stray)


def _plausible_strays(records: pl.DataFrame, skew: int, now: int | None, before: np.ndarray,
                      after: np.ndarray) -> np.ndarray | None:
    """The records' stray clocks (``stray_rows``) within the plausible range rules take by default,
    judged between the times of the records ``before`` and ``after`` them in their file.

    A time outside it is implausible already: the timestamp rule reports it as such, and every
    rule placing records in event time leaves it out by its own ``min_time`` and ``max_future``.
    """
    us = micros(records["ts"])
    found = stray_rows(np.concatenate([before, us, after]) if len(before) or len(after) else us, skew)
    if found is None:
        return None
    found = found[(found >= len(before)) & (found < len(before) + len(us))] - len(before)
    latest = (time.time_ns() // 1000 if now is None else now) + PLAUSIBLE_AHEAD
    found = found[(us[found] >= PLAUSIBLE_FROM) & (us[found] <= latest)]
    return found if len(found) else None


#: Bytes of a file before (and after) a chunk that the reader hands over with it
#: (``Chunk.context``, ``Chunk.after``), and the most lines of them looked at: enough for
#: ``CONTEXT_RECORDS`` records among a few malformed lines.
CONTEXT_BYTES = 4096
CONTEXT_LINES = 12


def last_lines(data: bytes | bytearray, size: int, before: bytes = b"") -> bytes:
    """The context of what follows ``data[:size]`` in its file (whole lines, after the lines
    ``before``): its last ``CONTEXT_LINES`` whole lines, within its last ``CONTEXT_BYTES``."""
    start = max(0, size - CONTEXT_BYTES)
    text = bytes(data[start:size]) if start else before + bytes(data[:size])
    cut = start > 0 and data[start - 1] != _NEWLINE
    if len(text) > CONTEXT_BYTES:
        cut, text = text[-CONTEXT_BYTES - 1] != _NEWLINE, text[-CONTEXT_BYTES:]
    lines = text.split(b"\n")[:-1]  # what follows the last newline is not a whole line
    if cut:
        lines = lines[1:]
    return b"".join(line + b"\n" for line in lines[-CONTEXT_LINES:])


def first_lines(data: bytes | bytearray) -> bytes:
    """The context of what comes before ``data`` in its file: its first ``CONTEXT_LINES`` whole
    lines, within its first ``CONTEXT_BYTES``."""
    lines = bytes(data[:CONTEXT_BYTES]).split(b"\n")[:-1]  # what follows the last newline is cut
    return b"".join(line + b"\n" for line in lines[:CONTEXT_LINES])


def context_times(context: bytes, last: bool) -> np.ndarray:
    """The times of the last (or first) ``CONTEXT_RECORDS`` records among the lines ``context``, in line order."""
    found: list[int] = []
    lines = context.split(b"\n")
    for line in reversed(lines) if last else lines:
        fields = line.rstrip(b"\r").split(b" ", 4)
        if len(fields) < 4 or not all(fields[:4]):
            continue
        us = _scan.timestamp(fields[0].decode("ascii", "replace"))
        if us is not None:
            found.append(us)
            if len(found) == CONTEXT_RECORDS:
                break
    return np.array(found[::-1] if last else found, dtype=np.int64)


#: The plausible range of times rules take by default (``plugins.windows.MIN_TIME`` and
#: ``MAX_FUTURE``): from 2000-01-01 to five minutes past processing time, in microseconds.
PLAUSIBLE_FROM = 946_684_800_000_000
PLAUSIBLE_AHEAD = 300_000_000


def stray_rows(us: np.ndarray, skew: int) -> np.ndarray | None:
    """Positions of the stray clocks among times ``us`` in line order; None if there is none.

    A record's clock is a stray when its time is further from the median time of the records up
    to ``STRAY_REACH`` lines either side of it in the chunk (itself among them) than ``skew``, and
    than ``STRAY_SPACINGS`` times the usual step between the lines around it: a line stamped years
    away from its neighbours. So:

    - nothing in a log in time order is a stray, however sparse: each record is its own median;
    - nor are lines out of order by whole blocks of more than ``STRAY_REACH`` lines (writers
      flushing in turn), as most of the seven lie in one block, nor the lines where a sparse log's
      blocks meet (they are as far apart as its lines are);
    - up to ``STRAY_REACH`` lines in a row that jump away and back are.

    Where the lines around a record mostly share an instant, their usual step is zero, and only
    ``skew`` is left: in a sparse log with bursts, put together from blocks out of order, a line
    where two blocks meet can then be taken for a stray.

    ``us`` is a chunk's times with those of up to ``CONTEXT_RECORDS`` records before and after it
    in its file (``Chunk.context``, ``Chunk.after``), so that a chunk's first and last lines are
    judged as they would be in one chunk of the whole file. Only the first and last ``STRAY_REACH``
    records of a file (or of what has been written of it) have fewer records to go by: they are
    strays only if they are out of order with them (later than the lines after them, earlier than
    the lines before them; the other way round where most steps go back in time, a log written
    newest first) and the two records past them agree: a gap before a file's first lines or after
    its last is how a sparse log looks. Fewer than seven records are not judged, nor is a record
    without a step of more than ``skew`` between two lines within its reach: a chunk without one
    (nearly every chunk) costs a pass of differences.
    """
    n, reach = len(us), STRAY_REACH
    if n < 2 * reach + 1:
        return None
    steps = np.diff(us)
    if steps.max() <= skew and steps.min() >= -skew:  # 0.05 ms for a chunk, where abs and a mask take 0.7
        return None
    far = np.flatnonzero((steps > skew) | (steps < -skew))  # step j is from record j to j + 1
    # Judged: the records with such a step within their reach.
    at = np.unique(np.clip(far[:, None] + np.arange(1 - reach, reach + 1), 0, n - 1))
    middle = _nan_median(us, at[:, None] + np.arange(-reach, reach + 1), n)
    # The usual step around a record: of the eight steps nearest it but its own two, the second
    # smallest, which the steps to and from other strays nearby do not reach. (Not the smallest
    # step that is not zero: in a log of one-second stamps most steps are zero, and the few that
    # are not can all be a stray's.)
    around = np.r_[np.arange(-reach - 2, -1), np.arange(1, reach + 2)]
    spacing = _nan_low(steps, at[:, None] + around, n - 1)
    limit = np.maximum(skew, STRAY_SPACINGS * np.nan_to_num(spacing))
    off = us[at] - middle  # floats: exact below 2^53 microseconds, the year 2255
    if np.sign(steps).sum() < 0:  # a log written newest first: out of order is the other way
        off = -off
    lead, trail = at < reach, at >= n - reach
    past = np.where(lead, reach, n - reach - 2)
    agree = np.abs(us[past + 1] - us[past]) <= limit
    edge_ok = np.where(lead, (off > 0) & agree, np.where(trail, (off < 0) & agree, True))
    found = at[(np.abs(off) > limit) & edge_ok]
    return found if len(found) else None


#: Strays are found in runs of up to this many lines; a record is judged against the median of
#: the records this many lines either side of it, and itself.
STRAY_REACH = 3
#: The records either side of a chunk its verdicts read: a record's median (``STRAY_REACH``) and
#: its usual step (``STRAY_REACH + 2`` steps either side).
CONTEXT_RECORDS = STRAY_REACH + 3
#: A stray is further from the lines around it than this many of their usual steps (and than
#: ``limits.stray_clock_seconds``): in a log of a line an hour, 100 hours.
STRAY_SPACINGS = 100


def _picked(values: np.ndarray, index: np.ndarray, n: int,
            how: Callable[[np.ndarray], np.ndarray] = np.asarray) -> tuple[np.ndarray, np.ndarray]:
    """``how`` of ``values`` at each row of ``index`` as floats, sorted, NaN (last) where a position
    is not in ``0 .. n - 1``; and how many are."""
    inside = (index >= 0) & (index < n)
    picked = np.where(inside, how(values[np.clip(index, 0, n - 1)]).astype(np.float64), np.nan)
    picked.sort(axis=1)
    return picked, inside.sum(axis=1)


def _nan_median(values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """Per row of ``index``, the median of ``values`` at the positions in ``0 .. n - 1`` (NaN if none)."""
    picked, count = _picked(values, index, n)
    rows, last = np.arange(len(index)), index.shape[1] - 1
    median = (picked[rows, np.maximum(count - 1, 0) // 2] + picked[rows, np.minimum(count // 2, last)]) / 2
    return np.where(count > 0, median, np.nan)


def _nan_low(steps: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """Per row of ``index``, the second smallest of the sizes of ``steps`` at the positions in
    ``0 .. n - 1`` (the smallest if there is one; NaN if none)."""
    picked, count = _picked(steps, index, n, np.abs)
    return picked[np.arange(len(index)), np.minimum(count, 2) - 1 if len(index) else 0]


def _decided(
    chunk: Chunk, numbers: bytes, reasons: bytes, starts: bytes, ends: bytes, sample_limit: int
) -> tuple[Counter[str], list[MalformedLine]]:
    """Counts by reason of the malformed lines the scan decided, and the earliest as samples."""
    counts = Counter({REASONS[code]: n for code in range(len(REASONS)) if (n := reasons.count(code))})
    earliest = zip(
        _int64s(numbers)[:sample_limit], reasons[:sample_limit], _int64s(starts)[:sample_limit],
        _int64s(ends)[:sample_limit], strict=True,
    )
    samples = [MalformedLine(n, REASONS[code], _sample(chunk.data, a, b, code)) for n, code, a, b in earliest]
    return counts, samples


def _int64s(native: bytes) -> memoryview:
    """Native int64 bytes from ``core._scan`` as a sequence of ints."""
    return memoryview(native).cast("q")


def _sample(data: bytes, start: int, end: int, code: int) -> str:
    """How a malformed line begins, as its sample says; nothing for one too long."""
    return "" if REASONS[code] == "too_long" else _text(data[start:end])[:SAMPLE_CHARS]


def _text(raw: bytes) -> str:
    """A line decoded as the contract says: invalid UTF-8 as U+FFFD, one trailing \\r dropped."""
    return raw.removesuffix(b"\r").decode("utf-8", "replace")


def _undecided(
    chunk: Chunk, indexes: bytes, starts: bytes, ends: bytes, max_line_bytes: int, with_message: bool,
    with_hash: bool,
) -> tuple[list[tuple[Any, ...]], int, list[MalformedLine]]:
    """Classify the lines the scan left, the few that need decoding: their records (as rows of
    the scan's columns), how many are blank, and the malformed ones."""
    records, blank, malformed = [], 0, []
    lines = zip(_int64s(indexes), _int64s(starts), _int64s(ends), strict=True)
    for index, start, end in lines:
        number, raw = chunk.first_line + index, chunk.data[start:end].removesuffix(b"\r")
        line = raw.decode("utf-8", "replace")
        if len(raw) > max_line_bytes:
            malformed.append(MalformedLine(number, "too_long", ""))
        elif (valid := _VALID_LINE.match(line)) and (ts := _scan.timestamp(valid[1])) is not None:
            status, service, user, message = valid[2], valid[3], valid[4], valid[5] or ""
            optional = ((message,) if with_message else ()) + (
                (_scan.record_hash(ts, status, service, user, message),) if with_hash else ()
            )
            records.append((_EPOCH + timedelta(microseconds=ts), status, service, user, *optional, number))
        elif line.isspace() or not line:
            blank += 1
        else:
            malformed.append(MalformedLine(number, _reason(line), line[:SAMPLE_CHARS]))
    return records, blank, malformed


def _reason(line: str) -> str:
    """Why a line that is not a record, blank or too long is malformed: the contract's first failing check."""
    fields = line.split(" ", 4)[:4]
    if len(fields) < 4:
        return "missing_fields"
    if "" in fields:
        return "empty_field"
    if any("\ufffd" in f for f in fields):
        return "invalid_utf8"
    if any(_BAD_CHARS.search(f) for f in fields):
        return "bad_characters"
    return "bad_timestamp"


def count_newlines(data: bytes, size: int) -> int:
    """Newlines in the first ``size`` bytes of ``data``, counted without the GIL."""
    return _scan.count_newlines(data, size)


#: A batch of at most this many rows gets its constant columns written out (``_with_file``).
SMALL_BATCH_ROWS = 1024


def _with_file(frame: pl.DataFrame, path: str) -> pl.DataFrame:
    """The full record batch: ``message`` and ``record_hash`` (as placeholders where no rule reads
    them) and ``file`` added."""
    built = frame.columns
    if frame.height <= SMALL_BATCH_ROWS:
        # A small file's few rows: the constant columns written out, without a query. A query a
        # file was a third of the samples of a batch run over 5,000 ten-line files; without it
        # (and with the engine's running count of small files' bytes) the run took 3.7-4.1 s, not 4.4-4.9.
        n = frame.height
        made = {"message": pl.Series("message", [""] * n, dtype=pl.String),
                "record_hash": pl.Series("record_hash", np.zeros(n, dtype=np.uint64)),
                "file": pl.Series("file", [path] * n, dtype=pl.String)}
        return pl.DataFrame([frame[name] if name in built else made[name] for name in RECORD_COLUMNS])
    # The constant columns are Polars' scalar columns: a value and a length, never a row each
    # (a chunk's file and empty message were 2.6 MB, written out and then copied by every filter
    # of the batch). Building them is a query, 0.1 ms a chunk more.
    message = pl.col("message") if "message" in built else pl.lit("", dtype=pl.String).alias("message")
    digest = pl.col("record_hash") if "record_hash" in built else pl.lit(0, dtype=pl.UInt64).alias("record_hash")
    return frame.select("ts", "status", "service", "user", message, digest,
                        pl.lit(path, dtype=pl.String).alias("file"), "line")


def _empty_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=RECORD_SCHEMA)
