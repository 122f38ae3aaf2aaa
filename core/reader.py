"""Read a file as chunks of whole lines, in bounded memory whatever the file's shape."""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from typing import BinaryIO

import numpy as np

from core.parse import Chunk

_NEWLINE = 0x0A

log = logging.getLogger(__name__)


class ChunkReader:
    """Yield ``Chunk``s of whole lines from ``start``; afterwards ``offset`` and ``line`` say where it stopped.

    Memory stays under ``chunk_bytes + max_line_bytes`` plus one block: a line longer than
    ``max_line_bytes`` is discarded as it is read and reported as an ``overlong`` line number.
    With ``final=False`` (a file that may still grow) a last line without its newline is left
    for later, and ``offset`` points at its first byte.
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
    ) -> None:
        self.path = path
        self.chunk_bytes = chunk_bytes
        self.max_line_bytes = max_line_bytes
        self.offset = start
        self.line = first_line
        self.final = final
        self.skip_partial = skip_partial

    def __iter__(self) -> Iterator[Chunk]:
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            if self.skip_partial and not (yield from self._skip_continuation(handle)):
                return
            yield from self._chunks(handle)

    def _skip_continuation(self, handle: BinaryIO) -> Generator[Chunk, None, bool]:
        """Pass over bytes appended to a line already counted without its newline.

        Yields one chunk of no lines that covers them, so the ledger moves past them; returns
        False while that line's newline has not arrived yet.
        """
        skipped = 0
        while block := handle.read(self.chunk_bytes):
            newline = block.find(b"\n")
            if newline >= 0:
                end = self.offset + skipped + newline + 1
                log.warning("%s: line %d grew after it was counted; the added text is not counted",
                            self.path, self.line - 1)
                yield Chunk(self.path, b"", self.line, self.offset, end)
                self.offset = end
                handle.seek(end)
                return True
            skipped += len(block)
        return False

    def _chunks(self, handle: BinaryIO) -> Iterator[Chunk]:
        pending = b""
        skipping = False  # inside a line longer than max_line_bytes
        skipped = 0  # bytes of that line read so far; self.offset stays at its start
        while block := handle.read(self.chunk_bytes):
            if skipping:
                newline = block.find(b"\n")
                if newline < 0:
                    skipped += len(block)
                    continue
                yield self._overlong(self.offset + skipped + newline + 1)
                block, skipping, skipped = block[newline + 1 :], False, 0
            cut = block.rfind(b"\n") + 1
            if cut:  # one copy of the block's bytes, not two (pending + block, then a slice of it)
                yield self._whole_lines(pending + block[:cut] if pending else block[:cut])
                pending = block[cut:]
            else:
                pending += block
            # One byte of slack: a trailing \r is not part of the line's content.
            if len(pending) > self.max_line_bytes + 1:
                skipped += len(pending)
                pending, skipping = b"", True
        if self.final and skipping:
            yield self._overlong(self.offset + skipped)
        elif self.final and pending:
            yield self._whole_lines(pending)

    def _whole_lines(self, data: bytes) -> Chunk:
        chunk = Chunk(self.path, data, self.line, self.offset, self.offset + len(data))
        self.offset += len(data)
        newlines = np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == _NEWLINE)  # twice bytes.count's speed
        self.line += int(newlines) + (not data.endswith(b"\n"))
        return chunk

    def _overlong(self, end: int) -> Chunk:
        """Report the line being skipped, which ends just before ``end``."""
        chunk = Chunk(self.path, b"", self.line, self.offset, end, overlong=(self.line,))
        self.offset = end
        self.line += 1
        return chunk
