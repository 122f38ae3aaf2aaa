"""The committer: merges chunk work's outcomes into the checkpoint, strictly in the order read.

It is the same whichever executor ran the work (``core.executor``). Finished outcomes are merged
one at a time, by whichever thread is free: a worker that has just finished a chunk, or the
reading thread while it waits for a slot. The ledger advances with each merge, so the merged
state and the ledger always describe the same bytes: a checkpoint taken between runs is exact.
It also seals the state as input accumulates, ends each file (its stats and ``after_file``),
and tells the plugins of rules that failed. Outcomes of ranges read on their own
(``core.work.range_work``) number their lines from the range's start: knowing the lines merged
before them, it moves them to the file's numbers first (``Rule.shift_lines``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, wait
from dataclasses import dataclass

from core import budget, guard, reader
from core.checkpoint import Checkpoint
from core.guard import PluginHooks
from core.ledger import Work
from core.parse import Chunk, ChunkPlace
from core.profile import RunProfile
from core.settings import Settings
from core.state import Failure, RunState
from core.stats import FileStats, merge_file_stats
from core.work import ChunkOutcome, RangeTask

log = logging.getLogger(__name__)

#: Input merged between two seals of the state (see ``Rule.seal``): two default chunks. Counted in
#: bytes, not chunks, so that the cadence is the same however the input is cut into chunks or
#: ranges. A seal's copies of the windows it judges and what came since the last seal are both part
#: of each peak of resident memory. Measured on heavy-tailed traffic, all rules: every 32 MiB, 403
#: MB peak at 10M lines; every 16 MiB, 300 MB at 10M and 323 MB at 30M; every 4 MiB, 284 MB at
#: both. Since seals cut windows by slices, a seal's cost is mostly fixed: every 8 MiB took 0.96x
#: the wall time of every 4 MiB at 10M lines (5 rounds in alternation) for 2-8 MB more, which the
#: heap trimming (``budget.TRIM_SHARE``) more than gives back.
SEAL_EVERY_BYTES = 8 * 1024 * 1024


@dataclass
class FileRun:
    """One file being read in this pass: what to read, and its line counts so far."""

    work: Work
    stats: FileStats
    started: float
    failed: bool = False
    #: The number of the file's next line not merged yet.
    next_line: int = 0

    def __post_init__(self) -> None:
        self.next_line = self.next_line or self.work.first_line


#: A chunk of work: a chunk of one file, or the chunks of several small files, or a range that
#: a worker reads itself; each with its file's run.
Parts = list[tuple[FileRun, Chunk | ChunkPlace | RangeTask]]


@dataclass
class Entry:
    """One place in the merge queue: a chunk of work (``parts`` and its ``future``), or the end of
    the file of ``done``, merged after all its chunks."""

    parts: Parts
    future: Future[ChunkOutcome] | None = None
    done: FileRun | None = None


class Committer:
    """The ordered merge queue of one pipeline, with back-pressure: ``capacity`` chunks of work in flight."""

    def __init__(self, settings: Settings, hooks: PluginHooks, capacity: int, trimmer: budget.HeapTrimmer,
                 profile: RunProfile | None = None) -> None:
        self.settings = settings
        self.hooks = hooks
        self.trimmer = trimmer
        self.profile = profile
        self.lines_read = 0
        self.bytes_read = 0
        self.files_done = 0
        #: Whether each file read is logged (not when rules are rebuilt from files already counted).
        self.log_files = True
        #: Rules failed so far: chunk work submitted from now on skips them.
        self.failed: frozenset[str] = frozenset()
        self._capacity = capacity
        self._unsealed = 0  # bytes merged since the last seal
        self._slots = threading.BoundedSemaphore(capacity)
        self._merging = threading.Lock()  # held by the one thread merging
        self._queue_lock = threading.Lock()
        self._queue: deque[Entry] = deque()
        self._checkpoint: Checkpoint | None = None
        self._error: BaseException | None = None

    @property
    def in_flight(self) -> int:
        """Chunks read and not merged yet: queued, with a worker, or done and waiting for their turn."""
        return self._capacity - self._slots._value  # noqa: SLF001

    def begin(self, checkpoint: Checkpoint, failed: frozenset[str]) -> None:
        """Start a pass that merges into ``checkpoint``, with the rules ``failed`` before it."""
        self._checkpoint, self._queue, self._error = checkpoint, deque(), None
        self.failed = failed
        self.announce(checkpoint.state)

    def finish(self) -> None:
        """Merge everything submitted, seal what was merged since the last seal, and raise what a merge raised."""
        while self._queue:
            self._wait_for_head()
        with self._merging:  # the last entry may still be merging in a worker
            if self._unsealed and self._error is None:
                # Sealed here, with the rest of the merging, not when results are first read: the
                # checkpoint holds the smaller state, and the outputs only judge the open windows.
                self._checkpoint.state.seal(side_by_side=True)  # nothing else is left to run
                self._unsealed = 0
                self.announce(self._checkpoint.state)
        reader.BUFFERS.release()  # every chunk is merged: no buffer is needed until the next pass
        self.trimmer.check()  # before the outputs and the checkpoint are written
        self._raise_error()

    def announce(self, state: RunState) -> None:
        """Log the rules that failed since the last look and tell ``on_error``; work skips them from now on."""
        failed = state.failed_rules() if state.failures else set()
        if len(failed) > len(self.failed):
            guard.announce([f for f in state.rule_failures() if f.rule not in self.failed], self.hooks)
            self.failed = frozenset(failed)

    def acquire_slot(self) -> None:
        """Wait for room for one more chunk of work, merging what is done meanwhile."""
        # A slot is freed when its chunk is merged, not when a worker is done with it: chunks done
        # behind a slow one wait for their turn in memory, so they must count against the bound.
        while not self._slots.acquire(blocking=False):
            self._wait_for_head()

    def wait_for_room(self) -> None:
        """Wait until a slot is free, without taking it: the reader reads a chunk only then, so that
        no chunk read waits for room besides the ones in slots (a chunk less at the peak)."""
        self.acquire_slot()
        self._slots.release()

    def enqueue(self, entry: Entry) -> None:
        """Queue a chunk of work (holding a slot) or a file's end, after everything queued before it."""
        with self._queue_lock:
            self._queue.append(entry)
        if entry.future is not None:  # its worker merges what is ready once it is done (or we do, if it is already)
            entry.future.add_done_callback(self._merge_when_done)

    def drain(self) -> None:
        """Merge what is done at the head of the queue, unless another thread is merging."""
        self._drain(block=False)

    def file_failed(self, name: str, message: str) -> None:
        """Record that a file could not be read (its lines read before that are counted)."""
        with self._merging:  # a worker may be merging into the same state
            self._checkpoint.state.failures.add(Failure("file", name, "", message))

    # -- merging, in read order, by whichever thread is free ---------------------------------

    def _wait_for_head(self) -> None:
        """Wait until the oldest entry is done, merge what is ready, and raise what a merge raised."""
        with self._queue_lock:
            future = self._queue[0].future if self._queue else None
        if future is not None:
            wait([future])
        self._drain(block=True)
        self._raise_error()

    def _merge_when_done(self, _: Future[ChunkOutcome]) -> None:
        # Called in the worker that finished the chunk. An exception here would be logged and
        # lost by concurrent.futures: it is kept, and the caller's thread raises it.
        try:
            if self.profile is not None:
                with self.profile.thread():
                    self._drain(block=False)
            else:
                self._drain(block=False)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the caller's thread)
            self._error = self._error or exc

    def _drain(self, block: bool) -> None:
        """Merge the entries at the head of the queue that are done; without ``block``, only if no one else is."""
        while self._merging.acquire(blocking=block):
            try:
                self._merge_ready()
            finally:
                self._merging.release()
            # An entry that finished while the lock was held found it taken: look once more
            # (unless a merge failed: then nothing more is merged).
            if self._error is not None or not self._head_done():
                return
            block = False

    def _head_done(self) -> bool:
        with self._queue_lock:
            return bool(self._queue) and (self._queue[0].future is None or self._queue[0].future.done())

    def _merge_ready(self) -> None:
        """Merge done entries from the head of the queue, in read order (the merging lock is held)."""
        while self._error is None:
            with self._queue_lock:
                if not self._queue:
                    return
                entry = self._queue[0]
                if entry.future is not None and not entry.future.done():
                    return
                self._queue.popleft()
            if entry.done is not None:
                self._file_done(entry.done, self._checkpoint)
                continue
            try:
                outcome = entry.future.result()
            finally:
                self._slots.release()
            self._merge(entry.parts, outcome, self._checkpoint)

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _merge(self, parts: Parts, outcome: ChunkOutcome, checkpoint: Checkpoint) -> None:
        if outcome.ends is not None:
            self._merge_range(parts[0][0], outcome, checkpoint)
            return
        name = parts[0][0].work.name  # a failed merge names the first file of several
        checkpoint.state.merge(outcome.partial, name)
        self._unsealed += sum(chunk.end - chunk.start for _, chunk in parts)
        self._seal_due(checkpoint, name)
        for (run, chunk), stats in zip(parts, outcome.stats, strict=True):
            merge_file_stats(checkpoint.state.files, {run.work.name: stats})
            run.stats.merge(stats)
            run.next_line = chunk.first_line + stats.lines
            checkpoint.ledger.advance(run.work, chunk.end, run.next_line, chunk.open_tail, chunk.before)
        self.announce(checkpoint.state)

    def _merge_range(self, run: FileRun, outcome: ChunkOutcome, checkpoint: Checkpoint) -> None:
        """Merge a range a worker read itself: its lines moved to the file's numbers, then as a chunk's."""
        name, stats, end = run.work.name, outcome.stats[0], outcome.ends[0]
        if run.failed:  # a range before it could not be read: the ledger stays there, so must the counts
            return
        if outcome.relative and run.next_line > 1:
            outcome.partial.shift_lines(name, run.next_line - 1)
            stats.shift_lines(run.next_line - 1)
        checkpoint.state.merge(outcome.partial, name)
        self._unsealed += stats.bytes
        self._seal_due(checkpoint, name)
        merge_file_stats(checkpoint.state.files, {name: stats})
        run.stats.merge(stats)
        run.next_line += stats.lines
        if end is not None:
            checkpoint.ledger.advance(run.work, end.end, run.next_line, end.open_tail, end.before)
        if outcome.error is not None:
            run.failed = True
            checkpoint.state.failures.add(Failure("file", name, "", outcome.error))
            log.error("%s", outcome.error)
            self.hooks.on_error(OSError(outcome.errno, outcome.error), name, None)
        self.announce(checkpoint.state)

    def _seal_due(self, checkpoint: Checkpoint, name: str) -> None:
        if self._unsealed >= SEAL_EVERY_BYTES:
            checkpoint.state.seal(name)  # bounds rule state within a long run, not only between runs
            self._unsealed = 0
        self.trimmer.check()

    def _file_done(self, run: FileRun, checkpoint: Checkpoint) -> None:
        stats = run.stats
        if not run.failed:  # an empty file is listed too; one that could not be read is not
            checkpoint.state.files.setdefault(stats.path, FileStats(stats.path, self.settings.malformed_samples))
        self.lines_read += stats.lines
        self.bytes_read += stats.bytes
        self.files_done += 1
        if self.log_files:
            log.info(
                "%s: %d lines, %d records, %d malformed, %d blank, %.0f ms",
                stats.path, stats.lines, stats.records, stats.malformed, stats.blank,
                (time.perf_counter() - run.started) * 1000,
            )
        self.hooks.after_file(stats.path, stats)
