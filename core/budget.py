"""Share ``limits.memory_mb`` out: a fixed base, the input in flight (chunks and their parsing), rule states.

Measured with all default rules (Python 3.11, Polars 2.1, 2 cores; 2M and 10M lines, caps of
250, 300 and 500 MB): peak RSS ~ 170 MB + each chunk being worked on ~5 times its size (its
bytes, its columns, the tallies' arrays and Polars' scratch; ~10 times before the compiled scan
and tallies) + each chunk waiting in a slot ~1.3 times its size + the rule states. An idle
process with every plugin loaded holds ~70 MB; the rest of the base is the allocators' reserve
and Polars' scratch, whatever the chunk size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MIB = 1024 * 1024
#: The interpreter, Polars, the plugins, the allocators' reserve and scratch (measured 168 to 171 MB).
BASE_MB = 170
#: A chunk being parsed costs this many times its size: its bytes, its columns, the tallies' arrays
#: and Polars' scratch. Measured (Tier 1-2 rules, 10M lines, 2 workers, two chunks queued) as what
#: peak RSS gains from 4 to 8 MiB chunks: 55-59 MB, 4.9 to 5.4 times each chunk being parsed once
#: the queued chunks (1.3 times) are counted.
PARSE_FACTOR = 5
#: The part of the memory left after ``BASE_MB`` that the input in flight may take: the defaults
#: (2 workers, 5 MiB chunks, queue_size 1) take 65 of 99 MiB under the default 500 MB cap.
INPUT_SHARE = 0.3
#: The part of it that rule states may take, all together: the rest is headroom for merging,
#: checkpoints and writing the outputs. It depends on ``limits.memory_mb`` alone, not on the
#: workers or the chunks, so that how far a state stays exact (and how it degrades beyond) is the
#: same however the input is split. With the default cap, 221 MiB, of which top-users' weight
#: gives it 79 MiB: 2.05M distinct users counted exactly (core/counts.py).
STATE_SHARE = 0.67
#: Chunks are never made smaller than this (nor than two of the longest allowed lines).
MIN_CHUNK_BYTES = 256 * 1024


#: glibc ``mallopt`` parameter; buffers from this size up are mapped and unmapped on their own.
_M_MMAP_THRESHOLD = -3
#: glibc ``mallopt`` parameter; free memory beyond this much at the top of a heap is given back.
_M_TRIM_THRESHOLD = -1
#: Buffers from this size up are mappings of their own (see ``return_freed_buffers``).
MMAP_THRESHOLD = 256 * 1024
#: Free memory at the top of a heap beyond this many chunks (1 to 32 MiB) is given back.
TRIM_THRESHOLD_CHUNKS = 4
MIN_TRIM_THRESHOLD = 1024 * 1024
MAX_TRIM_THRESHOLD = 32 * 1024 * 1024
#: Past this part of ``limits.memory_mb`` of resident memory, glibc's free heap is given back (see
#: ``HeapTrimmer``); below it, never, so that short runs pay nothing for it. glibc's free heap is
#: what grows with a run's length (docs/scaling.md): heavy-tailed traffic, all rules, 1M / 10M
#: lines peaked at 230 / 270 MB untrimmed, at 230 / 240-244 MB trimmed from 45 % (225 MB) every
#: 16 MB of growth, for 0.9 s more system time at 10M lines (pages faulted in again).
TRIM_SHARE = 0.45
#: After a trim, the next waits until resident memory has grown by this much again.
TRIM_STEP = 16 * MIB


class MemoryTooSmall(ValueError):
    """``limits.memory_mb`` cannot hold the base process and the smallest chunks."""


@dataclass(frozen=True)
class InputPlan:
    """Chunk size and queue depth that fit the cap, and what was changed to make them fit."""

    chunk_bytes: int
    queue_size: int
    changes: tuple[str, ...] = ()


def input_bytes(workers: int, chunk_bytes: int, queue_size: int) -> int:
    """Memory of the input in flight: chunks being parsed, plus every chunk held in a slot."""
    return chunk_bytes * (workers * PARSE_FACTOR + workers + queue_size)


def input_cap(memory_mb: int) -> int:
    """Bytes the input in flight may take under ``memory_mb``."""
    return int((memory_mb - BASE_MB) * MIB * INPUT_SHARE)


def fit_input(memory_mb: int, workers: int, chunk_bytes: int, queue_size: int, max_line_bytes: int) -> InputPlan:
    """Shrink ``queue_size``, then ``chunk_bytes``, until the input in flight fits its share of the cap.

    Raises ``MemoryTooSmall`` when even the smallest chunks do not fit.
    """
    cap = input_cap(memory_mb)
    if input_bytes(workers, chunk_bytes, queue_size) <= cap:
        return InputPlan(chunk_bytes, queue_size)
    changes = []
    queue = max(1, min(queue_size, workers))  # a slot per worker is enough to keep them busy
    if queue != queue_size:
        changes.append(f"queue_size {queue_size} -> {queue}")
    chunk = chunk_bytes
    if input_bytes(workers, chunk, queue) > cap:
        chunk = cap // (workers * (PARSE_FACTOR + 1) + queue) // 4096 * 4096
        floor = max(MIN_CHUNK_BYTES, 2 * max_line_bytes)
        if chunk < floor:
            need = BASE_MB + input_bytes(workers, floor, queue) / INPUT_SHARE / MIB
            raise MemoryTooSmall(
                f"expected at least {int(need) + 1} MB for {workers} workers with chunks of "
                f"{floor // 1024} KiB (limits.max_line_bytes {max_line_bytes}), got {memory_mb}"
            )
        changes.append(f"chunk_bytes {chunk_bytes} -> {chunk}")
    return InputPlan(chunk, queue, tuple(changes))


def rule_state_bytes(memory_mb: int, weights: list[float]) -> list[int]:
    """Bytes of state each rule may hold: ``STATE_SHARE`` of the memory, in proportion to the weights."""
    pool, total = (memory_mb - BASE_MB) * MIB * STATE_SHARE, sum(weights) or 1.0
    return [max(1 * MIB, int(pool * weight / total)) for weight in weights]


def return_freed_buffers(chunk_bytes: int) -> bool:
    """Fix glibc's mmap threshold at ``MMAP_THRESHOLD`` and its trim threshold at ``TRIM_THRESHOLD_CHUNKS`` chunks.

    By default glibc raises its mmap threshold each time a large buffer is freed, up to 32 MiB,
    and stops trimming its heap to match: measured (with the parser of the time) on 10M lines
    with no rule enabled, 526 MB peak RSS by default, 254 MB with the threshold fixed at 1 MiB.
    A fixed threshold keeps trimming. The compiled modules' buffers come from their own mappings
    (``core/pool.h``) and the chunks' bytes from kept buffers (``core.reader.ChunkBuffers``); what
    it still governs are NumPy's arrays and Python's larger objects. From 256 KiB up, as in
    ``core/pool.h``, they are mappings of their own, not pieces of a heap that smaller objects
    then pin. Measured on cell b with every rule (two runs each): 1M lines 199-204 MB against
    204 before, 30M lines 236-241 MB against 242; a trim threshold of 256 KiB or 2 MiB moved
    neither, and cost 0.04-0.07 s on 10M lines of cell a.
    Returns whether it could be set (not glibc: nothing to do).
    """
    try:
        mallopt = _libc().mallopt
    except (OSError, AttributeError):
        return False
    trim = min(MAX_TRIM_THRESHOLD, max(MIN_TRIM_THRESHOLD, TRIM_THRESHOLD_CHUNKS * chunk_bytes))
    # Fixing the mmap threshold leaves the trim threshold at 128 KiB: the heap gave back every
    # freed megabyte and faulted it in again for the next batch. A few chunks' worth of free heap
    # is kept (10M lines, all rules: about half the page faults, and 0.1 s, for 10-20 MB of RSS;
    # twice that saved no more time and cost as much RSS again).
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, trim))


class HeapTrimmer:
    """Gives the free memory inside glibc's heap back to the system when the process nears its cap.

    glibc returns memory only from the top of its heap; a buffer that outlives the ones around it
    (a column a rule keeps) holds every free page below it resident. Over a run, most of the heap
    ends up free and resident: 30M lines with 20M distinct users, all rules, had 190 MB free in a
    heap of 250 MB, and ``malloc_trim`` gave back 60 to 80 MB of peak RSS for about 7 ms a call.
    ``check`` costs a read of ``/proc/self/statm``; it trims once resident memory passes
    ``trim_above``, and again only after it has grown by ``TRIM_STEP`` since. Since the compiled
    modules' buffers left glibc's heaps (``core/pool.h``) it has little to do: 10M lines of cell a
    trim once (3 MB), 30M lines of heavy-tailed traffic 8 times (106 MB in all), where 10M lines of
    a trimmed 31 times (1,057 MB given back and faulted in again) before.
    """

    def __init__(self, trim_above: int) -> None:
        self.trim_above = trim_above
        self.trims = 0
        self._next = trim_above
        self._trim = _malloc_trim()

    @classmethod
    def for_cap(cls, memory_mb: int) -> HeapTrimmer:
        return cls(int(max(memory_mb * TRIM_SHARE, BASE_MB)) * MIB)  # never from below the base process

    def check(self) -> None:
        if self._trim is None:
            return
        resident = resident_bytes()
        if resident < self._next:
            return
        self._trim(0)
        self.trims += 1
        after = resident_bytes()
        self._next = max(self.trim_above, after + TRIM_STEP)
        log.debug("resident memory %d MB, %d MB after giving glibc's free heap back", resident >> 20, after >> 20)


def resident_bytes() -> int:
    """This process's resident memory now (0 where ``/proc`` has no ``statm``)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return 0


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None (another C library)."""
    try:
        return _libc().malloc_trim
    except (OSError, AttributeError):
        return None


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library: the process's own symbols where they have ``mallopt`` (glibc), else found by name.

    ``ctypes.util.find_library`` runs ``ldconfig -p`` in a subprocess (2 ms, twice a start).
    """
    own = ctypes.CDLL(None)
    if hasattr(own, "mallopt"):
        return own
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
