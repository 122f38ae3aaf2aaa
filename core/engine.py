"""The pipeline: read files as chunks, parse and apply rules on a worker pool, merge in file order.

One thread (the caller's) reads chunks and hands them to the workers through a bounded number of
slots; it waits when they are full (back-pressure). Each worker parses its chunk and folds it into
a fresh partial state. The caller merges finished partials strictly in the order the chunks were
read, and advances the ledger with them, so the merged state and the ledger always describe the
same bytes: a checkpoint taken at any moment is exact.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable

import pluggy

from core import budget
from core.checkpoint import Checkpoint
from core.errors import RuleExecutionFailed
from core.ledger import Work
from core.parse import RECORD_COLUMNS, Batch, Chunk, parse_chunk
from core.profile import RunProfile
from core.reader import ChunkReader
from core.rules import Rule
from core.settings import Settings
from core.state import Failure, RunState
from core.stats import FileStats, merge_file_stats

log = logging.getLogger(__name__)

#: Merged chunks between two seals of the state (see ``Rule.seal``): 8 x 4 MiB = 32 MiB of input.
SEAL_EVERY = 8


@dataclass
class ChunkOutcome:
    """What a worker hands back for one chunk: its partial state, line counts and rule failures."""

    partial: RunState
    stats: FileStats
    failures: list[RuleExecutionFailed] = field(default_factory=list)


@dataclass
class _FileRun:
    work: Work
    stats: FileStats
    started: float
    failed: bool = False


class Pipeline:
    """A worker pool that folds files into a ``Checkpoint``; use it as a context manager."""

    def __init__(self, settings: Settings, rules: list[Rule], pm: pluggy.PluginManager,
                 stop: threading.Event | None = None, profile: RunProfile | None = None) -> None:
        self.settings = settings
        self.profile = profile
        self.rules = rules
        self.hook = pm.hook
        self.stop = stop or threading.Event()
        self.lines_read = 0
        self.bytes_read = 0
        self.files_done = 0
        self.on_progress: Callable[[int], None] | None = None
        self._failed: frozenset[str] = frozenset()
        self._merged = 0
        self._slots = threading.BoundedSemaphore(settings.workers + settings.queue_size)
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="omp-worker")
        budget.return_freed_buffers(settings.chunk_bytes)  # else glibc's heap grows with the lines read
        self.state_bytes = budget.rule_state_bytes(
            settings.memory_mb, settings.workers, settings.chunk_bytes, settings.queue_size, len(rules))
        for rule in rules:  # partials inherit the bound through Rule.empty
            rule.limit_state(self.state_bytes)
        self.columns = frozenset(column for rule in rules for column in rule.columns or RECORD_COLUMNS)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)

    @property
    def in_flight(self) -> int:
        """Chunks read and not merged yet: queued, with a worker, or done and waiting for their turn."""
        return self.settings.workers + self.settings.queue_size - self._slots._value  # noqa: SLF001

    def process(self, works: Iterable[Work], checkpoint: Checkpoint, *, final: bool) -> None:
        """Read each work's bytes and fold them into ``checkpoint``; stops early when ``stop`` is set.

        ``final`` counts a last line without a newline (a batch run); without it, such a line
        waits for its newline (a file that may still be written).
        """
        self._failed = frozenset(checkpoint.state.failed_rules())
        for rule in checkpoint.state.rules.values():  # a checkpoint may come from a run with another cap
            rule.limit_state(self.state_bytes)
        queue: deque[tuple[_FileRun, Chunk | None, Future[ChunkOutcome] | None]] = deque()
        for work in works:
            if self.stop.is_set():
                break
            run = _FileRun(work, FileStats(work.name, self.settings.malformed_samples), time.perf_counter())
            self.hook.before_file(path=work.name)
            self._read(run, final, checkpoint, queue)
            queue.append((run, None, None))
            self._merge_ready(queue, checkpoint, wait=False)
        self._merge_ready(queue, checkpoint, wait=True)

    def _read(self, run: _FileRun, final: bool, checkpoint: Checkpoint, queue: deque) -> None:
        work = run.work
        reader = ChunkReader(
            str(work.path), self.settings.chunk_bytes, self.settings.max_line_bytes,
            start=work.start, first_line=work.first_line, final=final, skip_partial=work.skip_to_newline,
        )
        try:
            for chunk in reader:
                chunk = Chunk(work.name, chunk.data, chunk.first_line, chunk.start, chunk.end, chunk.overlong)
                self._acquire_slot(queue, checkpoint)
                queue.append((run, chunk, self._pool.submit(self._process, chunk)))
                if self.on_progress is not None:
                    self.on_progress(chunk.end - chunk.start)
                self._merge_ready(queue, checkpoint, wait=False)
                if self.stop.is_set():
                    break
        except OSError as exc:
            run.failed = True
            self._file_failed(run, reader, checkpoint, exc)

    def _file_failed(self, run: _FileRun, reader: ChunkReader, checkpoint: Checkpoint, exc: OSError) -> None:
        message = f"cannot read {run.work.path}: {exc.strerror or exc}"
        if reader.offset > run.work.start:
            message += f" (stopped at byte {reader.offset}; the lines before it are counted)"
        checkpoint.state.failures.add(Failure("file", run.work.name, "", message))
        log.error("%s", message)
        self.hook.on_error(error=exc, path=run.work.name, rule=None)

    def _process(self, chunk: Chunk) -> ChunkOutcome:
        if self.profile is not None:
            with self.profile.thread():
                return self._process_chunk(chunk)
        return self._process_chunk(chunk)

    def _process_chunk(self, chunk: Chunk) -> ChunkOutcome:
        started = time.perf_counter()
        batch, stats = parse_chunk(chunk, self.settings.max_line_bytes, self.settings.malformed_samples,
                                   self.columns)
        outcome = ChunkOutcome(RunState.empty(self.rules), stats)
        if stats.lines:
            for rule in outcome.partial.rules.values():
                if rule.name not in self._failed:
                    self._update(rule, batch, outcome)
        stats.seconds = time.perf_counter() - started
        return outcome

    @staticmethod
    def _update(rule: Rule, batch: Batch, outcome: ChunkOutcome) -> None:
        try:
            rule.update(batch)
        except Exception as exc:  # a plugin's bug must not stop the other rules
            outcome.partial.failures.add(Failure("rule", batch.path, rule.name, f"{type(exc).__name__}: {exc}"))
            outcome.failures.append(RuleExecutionFailed(rule.name, batch.path, exc))

    def _acquire_slot(self, queue: deque, checkpoint: Checkpoint) -> None:
        # A slot is freed when its chunk is merged, not when a worker is done with it: chunks done
        # behind a slow one wait for their turn in memory, so they must count against the bound.
        while not self._slots.acquire(blocking=False):
            self._merge_oldest(queue, checkpoint)

    def _merge_ready(self, queue: deque, checkpoint: Checkpoint, wait: bool) -> None:
        """Merge finished chunks in read order; with ``wait``, wait for all of them."""
        while queue:
            future = queue[0][2]
            if future is not None and not (wait or future.done()):
                return
            self._merge_oldest(queue, checkpoint)

    def _merge_oldest(self, queue: deque, checkpoint: Checkpoint) -> None:
        """Merge the oldest entry, waiting for its chunk if need be, and free its slot."""
        run, chunk, future = queue.popleft()
        if future is None:
            self._file_done(run, checkpoint)
            return
        try:
            outcome = future.result()
        finally:
            self._slots.release()
        self._merge(run, chunk, outcome, checkpoint)

    def _merge(self, run: _FileRun, chunk: Chunk, outcome: ChunkOutcome, checkpoint: Checkpoint) -> None:
        checkpoint.state.merge(outcome.partial)
        self._merged += 1
        if self._merged % SEAL_EVERY == 0:
            checkpoint.state.seal()  # bounds rule state within a long run, not only between runs
        merge_file_stats(checkpoint.state.files, {run.work.name: outcome.stats})
        run.stats.merge(outcome.stats)
        for error in outcome.failures:
            if error.rule not in self._failed:
                log.error("%s", error)
                self.hook.on_error(error=error, path=run.work.name, rule=error.rule)
                self._failed |= {error.rule}
        open_tail = chunk.open_tail
        checkpoint.ledger.advance(run.work, chunk.end, chunk.first_line + outcome.stats.lines, open_tail)

    def _file_done(self, run: _FileRun, checkpoint: Checkpoint) -> None:
        stats = run.stats
        if not run.failed:  # an empty file is listed too; one that could not be read is not
            checkpoint.state.files.setdefault(stats.path, FileStats(stats.path, self.settings.malformed_samples))
        self.lines_read += stats.lines
        self.bytes_read += stats.bytes
        self.files_done += 1
        log.info(
            "%s: %d lines, %d records, %d malformed, %d blank, %.0f ms",
            stats.path, stats.lines, stats.records, stats.malformed, stats.blank,
            (time.perf_counter() - run.started) * 1000,
        )
        self.hook.after_file(path=stats.path, stats=stats)
