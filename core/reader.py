"""Read a file as chunks of whole lines, in bounded memory whatever the file's shape."""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Generator, Iterator

from core.parse import CONTEXT_BYTES, CONTEXT_LINES, Chunk, count_newlines, first_lines, last_lines
from core.sources import FINGERPRINT_BYTES, PLAIN, Handle, Source, digest

log = logging.getLogger(__name__)
#: Chunks hold about as many lines as ``chunk_bytes`` of lines of this length (what the memory
#: budget's factors were measured with, core/budget.py): longer lines make larger chunks ...
NOMINAL_LINE_BYTES = 96
#: ... up to this many times ``chunk_bytes``.
MAX_GROWTH = 2.0
#: Besides each chunk's first line, where a line starts about every this many bytes of it (see
#: ``ChunkReader.starts``): a sample line is read back from at most about this far before it
#: (``core.lines``). With a start a chunk only, reading a report's 53 sample lines back out of a
#: 1 GB file took 40-80 ms, most of the time it took to build the anomalies.
START_EVERY = 256 * 1024
#: Chunk buffers kept for reuse (see ``ChunkBuffers``): what is in flight at once with the default
#: settings (a chunk per worker, one queued, the one being read and the one before it) and one more.
KEPT_BUFFERS = 6


class ChunkBuffers:
    """The buffers plain files' chunks are read into, kept for the next chunks once nobody holds them.

    A chunk read as a new bytes object was a new buffer of ``chunk_bytes`` each time: from the heap,
    where it left holes that other buffers filled (a run's peak grew with its length), or a new
    mapping whose pages all faulted in (a third of the system time). A kept buffer is reused only
    when this list holds the one reference to it left: whatever still reads a chunk's bytes (a
    queued chunk, a worker parsing it, a slice being decoded) keeps its buffer out of reuse, so no
    bytes change under anyone. Buffers beyond ``KEPT_BUFFERS`` in use at once are not kept.
    """

    def __init__(self, keep: int = KEPT_BUFFERS) -> None:
        self._keep = keep
        self._kept: list[bytearray] = []
        self._lock = threading.Lock()

    def read(self, handle: io.FileIO, size: int) -> bytes | bytearray:
        """``handle.read(size)``: one read, into a kept buffer (or a new bytes object for a short read)."""
        buffer = self._take(size)
        got = handle.readinto(buffer) or 0
        if got == size:
            return buffer
        if got <= size // 2:  # a small file or a file's end: a copy costs less than resizing the buffer twice
            return bytes(memoryview(buffer)[:got])
        del buffer[got:]  # within its memory: grown back when taken again
        return buffer

    def release(self) -> None:
        """Keep no buffer (between runs: they would stay resident); those in use go when their chunks do."""
        with self._lock:
            self._kept = []

    def _take(self, size: int) -> bytearray:
        with self._lock:
            kept = self._kept
            for index in range(len(kept)):
                if sys.getrefcount(kept[index]) == 2:  # the list's reference and this call's: nobody else's
                    buffer = kept[index]
                    break
            else:
                buffer = bytearray(size)
                if len(kept) < self._keep:
                    kept.append(buffer)
                return buffer
        if len(buffer) > size:
            del buffer[size:]
        elif len(buffer) < size:
            buffer += bytes(size - len(buffer))
        return buffer


#: The chunk buffers of every reader of this process.
BUFFERS = ChunkBuffers()


class ChunkReader:
    """Yield ``Chunk``s of whole lines from ``start``; afterwards ``offset`` and ``line`` say where it stopped.

    A chunk is ``chunk_bytes`` long, or up to twice that where the lines are long (see
    ``_chunk_size``). Memory stays under that plus ``max_line_bytes`` and one block: a line longer than
    ``max_line_bytes`` is discarded as it is read and reported as an ``overlong`` line number.
    With ``final=False`` (a file that may still grow) a last line without its newline is left
    for later, and ``offset`` points at its first byte. With ``end``, the file is read as if it
    ended there (a rule's state rebuilt from the bytes already counted, ``core.rebuild``).

    The file is opened through its ``source`` (``core.sources``): a plain file by default. For a
    source that is not ``seekable`` (a gzip stream), each chunk also carries the hash of the
    bytes before its end (``Chunk.before``), which the ledger would otherwise read again.
    """

    def __init__(
        self,
        path: str,
        chunk_bytes: int,
        max_line_bytes: int,
        *,
        start: int = 0,
        first_line: int = 1,
        final: bool = True,
        skip_partial: bool = False,
        end: int | None = None,
        source: Source = PLAIN,
    ) -> None:
        self.path = path
        self.chunk_bytes = chunk_bytes
        self.max_line_bytes = max_line_bytes
        self.offset = start
        self.line = first_line
        self.final = final
        self.skip_partial = skip_partial
        self.end = end
        self.source = source
        #: For a stream: the (up to ``FINGERPRINT_BYTES``) bytes before ``offset``; None where not known.
        self._tail: bytes | None = None
        #: The last lines before ``offset``: the next chunk's ``context`` (``core.parse.last_lines``).
        self._recent = b""
        self._sized = (0, 0)  # lines and bytes handed over in chunks (not over-long ones): their mean length
        #: (line number, offset) of a line start about every ``START_EVERY`` bytes of the last chunk.
        self.starts: list[tuple[int, int]] = []

    def __iter__(self) -> Iterator[Chunk]:
        with self.source.open(self.path, self.offset) as opened:
            handle = opened if self.end is None else _Bounded(opened, self.end)
            if not self.source.seekable:
                self._tail = getattr(opened, "behind", b"") if self.offset else b""
            if self.offset:
                self._recent = self._lines_before(opened)
            self._opened = opened
            if self.skip_partial and not (yield from self._skip_continuation(handle)):
                return
            yield from self._chunks(handle)

    def _lines_before(self, opened: Handle) -> bytes:
        """The last lines before ``offset`` (a stream's ``behind``; a file's, read again), or b"" if
        they cannot be read: what the first chunk's first clocks are judged against."""
        if not self.source.seekable:
            behind = getattr(opened, "behind", b"")
            return last_lines(behind, len(behind)) if behind.endswith(b"\n") else b""
        start = max(0, self.offset - CONTEXT_BYTES)
        try:
            opened.seek(start)
            back = opened.read(self.offset - start)
            opened.seek(self.offset)
        except (OSError, ValueError):
            return b""
        if len(back) != self.offset - start or not back.endswith(b"\n"):
            return b""  # not the bytes before a line start: the file changed under us
        if start:  # the first line read back may have begun before it
            back = back[back.find(b"\n") + 1:]
        return last_lines(back, len(back))

    def _skip_continuation(self, handle: Handle) -> Generator[Chunk, None, bool]:
        """Pass over bytes appended to a line already counted without its newline.

        Yields one chunk of no lines that covers them, so the ledger moves past them; returns
        False while that line's newline has not arrived yet.
        """
        end, found = self._read_to_newline(handle, 0)
        if not found:
            return False
        log.warning("%s: line %d grew after it was counted; the added text is not counted", self.path, self.line - 1)
        self._tail = None
        yield Chunk(self.path, b"", self.line, self.offset, end, before=None if self.source.seekable else "")
        self.offset = end
        handle.seek(end)
        return True

    def _chunks(self, handle: Handle) -> Iterator[Chunk]:
        # Each chunk is one read, handed over whole: the partial line at its end is read again
        # as the start of the next chunk, so no chunk is ever copied.
        while block := self._read(handle, self._chunk_size()):
            cut = block.rfind(b"\n") + 1
            if cut:
                yield self._whole_lines(block, cut, self._lines_after(block, cut))
                if cut < len(block):
                    handle.seek(self.offset)
            elif not (yield from self._one_line(handle, block)):
                return

    @staticmethod
    def _read(handle: Handle, size: int) -> bytes | bytearray:
        """A chunk's bytes: a plain file's into a kept buffer (``BUFFERS``), any other handle's as it reads them."""
        if type(handle) is io.FileIO:
            return BUFFERS.read(handle, size)
        return handle.read(size)

    def _chunk_size(self) -> int:
        """``chunk_bytes``, up to ``MAX_GROWTH`` times as much where the lines read so far are long.

        A chunk's memory and its fixed costs (a few Polars calls per rule, a merge) are mostly
        per line, not per byte: a chunk of long lines holds fewer lines for its bytes. Measured
        on 10M lines of ~300 bytes with all default rules: 718 chunks of 4 MiB, 12.1 s and 259 MB
        peak RSS; chunks of 8 MiB, 10.4 s and 305 MB, under the 310 MB of 4 MiB chunks of 96-byte
        lines (bench/compare.py --matrix, cells f and a).
        """
        lines, read = self._sized
        if not lines:
            return self.chunk_bytes
        return int(self.chunk_bytes * max(1.0, min(MAX_GROWTH, read / lines / NOMINAL_LINE_BYTES)))

    def _one_line(self, handle: Handle, pending: bytes | bytearray) -> Generator[Chunk, None, bool]:
        """Read on to the end of the line that fills all of ``pending``; False at the end of the file.

        A line still unfinished past ``max_line_bytes`` is skipped as it is read.
        """
        pending = bytes(pending)  # grown below: not a kept buffer (a line longer than a chunk is rare)
        while len(pending) <= self.max_line_bytes + 1:  # one byte of slack: a last \r is not content
            more = handle.read(self.chunk_bytes)
            if not more:
                if self.final:
                    yield self._whole_lines(pending, len(pending))
                return False
            newline = more.find(b"\n")
            if newline >= 0:
                line = pending + more[: newline + 1]
                yield self._whole_lines(line, len(line))
                handle.seek(self.offset)
                return True
            pending += more
        return (yield from self._skip_line(handle, len(pending)))

    def _skip_line(self, handle: Handle, skipped: int) -> Generator[Chunk, None, bool]:
        """Read on to the end of a line longer than a chunk (so than ``max_line_bytes``) and report it.

        Returns False at the end of the file; the line is then reported only if the file is final.
        """
        end, found = self._read_to_newline(handle, skipped)
        if found or self.final:
            yield self._overlong(end)
        if found:
            handle.seek(self.offset)
        return found

    def _read_to_newline(self, handle: Handle, skipped: int) -> tuple[int, bool]:
        """Read on to the next newline, ``skipped`` bytes past ``offset`` already read.

        Returns the offset just past it and True, or the end of the file and False.
        """
        while block := handle.read(self.chunk_bytes):
            newline = block.find(b"\n")
            if newline >= 0:
                return self.offset + skipped + newline + 1, True
            skipped += len(block)
        return self.offset + skipped, False

    def _lines_after(self, block: bytes | bytearray, cut: int) -> bytes:
        """The first lines after ``block[:cut]``: the rest of the block and, from a file that has
        them, a few more bytes read ahead (and the file put back where it was)."""
        ahead = bytes(block[cut:cut + CONTEXT_BYTES])
        if ahead.count(b"\n") < CONTEXT_LINES and len(ahead) < CONTEXT_BYTES and self.source.seekable:
            at = self.offset + len(block)
            try:
                self._opened.seek(at)
                ahead += self._opened.read(CONTEXT_BYTES - len(ahead))
                self._opened.seek(at)
            except (OSError, ValueError):
                return b""
        return first_lines(ahead)

    def _whole_lines(self, data: bytes, size: int, after: bytes = b"") -> Chunk:
        """The lines in the first ``size`` bytes of ``data`` (``after``: the lines after them, if known)."""
        chunk = Chunk(self.path, data, self.line, self.offset, self.offset + size, before=self._before(data, size),
                      context=self._recent, after=after)
        self._recent = last_lines(data, size, self._recent)
        lines = self._count_lines(data, size) + chunk.open_tail
        self.offset += size
        self.line += lines
        self._sized = (self._sized[0] + lines, self._sized[1] + size)
        return chunk

    def _count_lines(self, data: bytes, size: int) -> int:
        """The newlines in ``data[:size]``, counted a stretch at a time to note ``starts`` on the way."""
        self.starts = []
        if size <= START_EVERY:
            return count_newlines(data, size)
        view, count, at = memoryview(data), 0, 0
        for boundary in range(START_EVERY, size, START_EVERY):
            newline = data.find(b"\n", max(boundary, at), size)
            if newline < 0 or newline + 1 >= size:
                break
            count += count_newlines(view[at:newline + 1], newline + 1 - at)
            at = newline + 1
            self.starts.append((self.line + count, self.offset + at))
        return count + count_newlines(view[at:size], size - at)

    def _before(self, data: bytes, size: int) -> str | None:
        """For a stream, the hash of the bytes before ``offset + size`` ("" if they are not known)."""
        if self.source.seekable:
            return None
        if size >= FINGERPRINT_BYTES:
            self._tail = data[size - FINGERPRINT_BYTES:size]
        elif self._tail is not None:
            self._tail = (self._tail + data[:size])[-FINGERPRINT_BYTES:]
        return "" if self._tail is None else digest(self._tail)

    def _overlong(self, end: int) -> Chunk:
        """Report the line being skipped, which ends just before ``end``."""
        self._tail = None  # its bytes were not kept
        before = None if self.source.seekable else ""
        chunk = Chunk(self.path, b"", self.line, self.offset, end, overlong=(self.line,), before=before)
        self.offset = end
        self.line += 1
        return chunk


class _Bounded:
    """A file read as if it ended at ``end``: the reads the reader makes, cut there."""

    def __init__(self, handle: Handle, end: int) -> None:
        self._handle = handle
        self._end = end

    def read(self, size: int) -> bytes:
        return self._handle.read(max(0, min(size, self._end - self._handle.tell())))

    def seek(self, offset: int) -> int:
        return self._handle.seek(offset)
