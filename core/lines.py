"""Read the text of given lines of a file, fast on multi-GB files and never blocking on special files."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, BinaryIO

from core.parse import _text, count_newlines
from core.sources import DEFAULT_SOURCES, Source, choose

#: Bytes read at a time. A block with no wanted line in it costs one read and one count of its
#: newlines (compiled, without the GIL); only the block holding a wanted line is searched. The
#: engine notes a line start about every 256 KiB it reads (``core.reader.START_EVERY``), so that
#: a wanted line is mostly in the first block read after a seek: blocks of 8 MiB read 8 MiB a line.
BLOCK_BYTES = 256 * 1024
#: Inside that block, newlines are counted this many bytes at a time to reach the wanted line,
#: and only the last stretch is walked line by line.
_STRIDE = 64 * 1024
#: Bytes kept of a line beyond ``max_bytes``: enough to finish a UTF-8 character cut at the limit.
_SLACK = 4
#: Files whose line starts are remembered (the most recently read), and starts kept per file: the
#: engine notes one about every 256 KiB (a 1 GB file's 4,000 fit); a file with more keeps every
#: other one, then notes on. At most about 12 MB (an entry is ~90 bytes) however long a run.
_FILES = 32
_STARTS_PER_FILE = 4096

#: Known line starts, per file (device, inode): line number -> byte offset. A cache the engine
#: fills as it reads chunks, so that a sample line near the end of a large file is read by
#: seeking close to it rather than by counting every newline before it.
_starts: OrderedDict[tuple[int, int], dict[int, int]] = OrderedDict()


#: The sources of the run whose outputs are being built (``core.run.write_outputs`` sets them on its
#: thread), so that sample lines are read back through the source that read them.
SOURCES: ContextVar[Sequence[Source]] = ContextVar("omp_sources", default=DEFAULT_SOURCES)


def remember(path: str | Path, line: int, offset: int, more: Iterable[tuple[int, int]] = ()) -> None:
    """Note that line ``line`` of ``path`` starts at byte ``offset``, and each (line, offset) of
    ``more`` too (best effort; never raises)."""
    try:
        info = os.stat(path)
    except OSError:
        return
    key = (info.st_dev, info.st_ino)
    known = _starts.get(key)
    if known is None:
        known = _starts[key] = {}
        while len(_starts) > _FILES:
            _starts.popitem(last=False)
    else:
        _starts.move_to_end(key)
    for number, start in ((line, offset), *more):
        if len(known) >= _STARTS_PER_FILE:  # every other one, spread over the file
            kept = sorted(known.items())[::2]
            known.clear()
            known.update(kept)
        known[number] = start


def read_lines(
    path: str | Path, numbers: Iterable[int], *, max_bytes: int = 200, block_bytes: int = BLOCK_BYTES
) -> dict[int, str]:
    """The text of each wanted line that exists, by its 1-based number as the engine counts lines.

    Each text is decoded as the line contract says (invalid UTF-8 as U+FFFD, one trailing ``\\r``
    dropped) and cut to at most ``max_bytes`` bytes of UTF-8, never inside a character. Reading
    stops after the last wanted line. A missing, unreadable or special file (FIFO, device) and a
    line past the end give no entry; this never raises ``OSError``.
    """
    wanted = sorted({number for number in numbers if number >= 1})
    if not wanted:
        return {}
    scan = _LineScan(wanted, max(0, max_bytes))
    source = choose(os.fspath(path), SOURCES.get())  # a gzip file's lines are read from its decompressed bytes
    try:
        with source.open(path, 0) as handle:
            info = _opened(handle, path, source)
            known = _starts.get((info.st_dev, info.st_ino), {})
            # Only starts within the file as it is now: a file cut shorter may have moved its lines. (A
            # stream's offsets are in its decompressed bytes: a wrong start is caught as it is read.)
            # (Copied in one step first: the engine may be noting more, and thinning them, meanwhile.)
            jumps = sorted((line, offset) for line, offset in list(known.items())
                           if offset <= info.st_size or not source.seekable)
            _read_blocks(handle, scan, max(1, block_bytes), jumps)
    except OSError:
        pass  # what was found before the error stands; the rest has no entry
    return scan.found


def _opened(handle: Any, path: str | Path, source: Source) -> os.stat_result:
    """Who the input just opened is: its open file's own (a local file), else as its source identifies it."""
    try:
        return os.fstat(handle.fileno())
    except (AttributeError, OSError, ValueError):  # a stream, or an object in object storage: no descriptor
        return source.identify(path)


def _read_blocks(handle: BinaryIO, scan: _LineScan, block_bytes: int,
                 jumps: list[tuple[int, int]] = ()) -> None:
    """Feed the file to ``scan`` block by block, seeking past lines it does not want where a start is known."""
    buffer = bytearray(block_bytes)  # one buffer for every read: no new pages to fault in per block
    position, at = 0, 0
    while not scan.done:
        if scan.pending is None:
            target = scan.wanted[scan.next]
            while at + 1 < len(jumps) and jumps[at + 1][0] <= target:
                at += 1
            if at < len(jumps) and scan.line < jumps[at][0] <= target and jumps[at][1] > position:
                if _starts_a_line(handle, jumps[at][1]):
                    scan.line, position = jumps[at]
                else:  # the file changed since: count its lines instead
                    jumps = []
                handle.seek(position)
        size = handle.readinto(buffer)
        position += size
        if not size:
            break
        scan.feed(buffer, size)
    scan.end_of_file()


def _starts_a_line(handle: BinaryIO, offset: int) -> bool:
    """Whether a line starts at ``offset``: the file's start, or just after a newline."""
    if offset == 0:
        return True
    handle.seek(offset - 1)
    return handle.read(1) == b"\n"


class _LineScan:
    """Walks the blocks of a file in order, keeping the start of each wanted line it passes."""

    def __init__(self, wanted: list[int], max_bytes: int) -> None:
        self.wanted = wanted
        self.max_bytes = max_bytes
        self.keep = max_bytes + _SLACK
        self.found: dict[int, str] = {}
        self.next = 0  # index in ``wanted`` of the next line to find
        self.line = 1  # number of the line the next block starts in
        self.pending: bytearray | None = None  # the kept start of a wanted line not ended yet
        self.pending_size = 0  # its length so far, kept or not

    @property
    def done(self) -> bool:
        return self.next == len(self.wanted)

    def feed(self, block: bytearray, size: int) -> None:
        """Take the next ``size`` bytes of the file, in ``block[:size]``."""
        newlines = count_newlines(block, size)
        pos = 0
        if self.pending is not None:
            pos = self._continue(self.pending, block, size)
            if pos < 0:
                return
            newlines -= 1
        while not self.done and self.wanted[self.next] <= self.line + newlines:
            skip = self.wanted[self.next] - self.line
            pos = _after_newlines(block, size, pos, skip)
            newlines -= skip
            self.line += skip
            pos = self._start(block, size, pos)
            if pos < 0:
                return
            newlines -= 1
        self.line += newlines

    def end_of_file(self) -> None:
        """A last line without a newline is a line, as in a batch run; an empty one is not."""
        if self.pending is not None and self.pending_size:
            self._finish(self.pending, self.pending_size)
        self.pending = None

    def _start(self, block: bytearray, size: int, pos: int) -> int:
        """Keep the wanted line that starts at ``pos``; where the next line starts, -1 if in a later block."""
        end = block.find(b"\n", pos, size)
        if end < 0:
            self.pending = bytearray(block[pos:min(size, pos + self.keep)])
            self.pending_size = size - pos
            return -1
        self._finish(block[pos:min(end, pos + self.keep)], end - pos)
        return end + 1

    def _continue(self, pending: bytearray, block: bytearray, size: int) -> int:
        """Add this block's part of the pending line; where the next line starts, -1 if not here."""
        end = block.find(b"\n", 0, size)
        stop = size if end < 0 else end
        pending += block[:max(0, min(stop, self.keep - len(pending)))]
        self.pending_size += stop
        if end < 0:
            return -1
        self._finish(pending, self.pending_size)
        self.pending = None
        return end + 1

    def _finish(self, kept: bytes | bytearray, length: int) -> None:
        raw = bytes(kept)
        # Only a line kept whole ends in its own \r; in a longer one that byte is past the cut.
        text = _text(raw) if length <= len(raw) else raw.decode("utf-8", "replace")
        self.found[self.wanted[self.next]] = _cut(text, self.max_bytes)
        self.next += 1
        self.line += 1


def _after_newlines(block: bytearray, size: int, pos: int, count: int) -> int:
    """The offset just past the ``count``-th newline from ``pos``; ``block[pos:size]`` holds that many."""
    view = memoryview(block)
    while count:
        stop = min(pos + _STRIDE, size)
        inside = count_newlines(view[pos:stop], stop - pos)
        if inside >= count:
            break
        count, pos = count - inside, stop
    for _ in range(count):
        pos = block.index(b"\n", pos, size) + 1
    return pos


def _cut(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` bytes of UTF-8, dropping a character that would not fit whole.

    The text was decoded from at most ``max_bytes + 4`` bytes, so a character its own cut split
    (decoded as U+FFFD) begins past ``max_bytes`` and is cut off here.
    """
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", "ignore")
