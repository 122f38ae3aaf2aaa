"""The pipeline: read files as chunks, parse and apply rules on a worker pool, merge in file order.

One thread (the caller's) reads chunks and hands them to the workers through a bounded number of
slots; it waits when they are full (back-pressure). Each worker parses its chunk and folds it into
a fresh partial state. Finished partials are merged strictly in the order the chunks were read,
one at a time, by whichever thread is free: a worker that has just finished a chunk, or the
caller while it waits for a slot. The ledger advances with each merge, so the merged state and
the ledger always describe the same bytes: a checkpoint taken between runs is exact.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Callable, Iterable

import pluggy

from core import budget, compiled, guard, lines
from core.checkpoint import Checkpoint
from core.guard import PluginHooks
from core.ledger import Work
from core.parse import RECORD_COLUMNS, SAMPLE_CHARS, Batch, Chunk, combine, parse_chunk
from core.profile import RunProfile
from core.reader import ChunkReader
from core.redact import Redactor
from core.rules import Rule
from core.settings import Settings
from core.state import Failure, RunState
from core.stats import FileStats, merge_file_stats

log = logging.getLogger(__name__)

#: Input merged between two seals of the state (see ``Rule.seal``). Counted in bytes, not chunks:
#: what a state holds beyond its retention is what came since the last seal, and with a seal
#: every 8 chunks, 8 MiB chunks held twice the rows of 4 MiB ones (10M lines, all rules: 403 ->
#: 360 MB peak RSS sealed every 32 MiB, 352 MB every 16 MiB). A smaller state also folds faster:
#: 30M lines (3 times as many records per hour), 12.1 s and 464 MB every 32 MiB, 10.7 s and
#: 432 MB every 16 MiB; every 8 MiB was no faster there and slower at 10M (3.50 s against 3.30 s).
SEAL_EVERY_BYTES = 16 * 1024 * 1024
#: A file with at most ``chunk_bytes`` / this many bytes left to read is read with others into one
#: chunk of work, up to ``chunk_bytes`` in all and ``MAX_FILES_PER_CHUNK`` files: rules cost a few
#: milliseconds a call whatever the batch's size, and 5,000 files of 10 lines each took 52 s
#: one by one.
SMALL_FILE_SHARE = 4
MAX_FILES_PER_CHUNK = 1000


@dataclass
class ChunkOutcome:
    """What a worker hands back for one chunk of work: its partial state (with its rule failures)
    and the line counts of each of its parts."""

    partial: RunState
    stats: list[FileStats]


@dataclass
class _FileRun:
    work: Work
    stats: FileStats
    started: float
    failed: bool = False


#: A chunk of work: a chunk of one file, or the chunks of several small files, each with its file's run.
_Parts = list[tuple[_FileRun, Chunk]]


@dataclass
class _Entry:
    """One place in the merge queue: a chunk of work (``parts`` and its ``future``), or the end of
    the file of ``done``, merged after all its chunks."""

    parts: _Parts
    future: Future[ChunkOutcome] | None = None
    done: _FileRun | None = None


class Pipeline:
    """A worker pool that folds files into a ``Checkpoint``; use it as a context manager."""

    def __init__(self, settings: Settings, rules: list[Rule], pm: pluggy.PluginManager,
                 stop: threading.Event | None = None, profile: RunProfile | None = None,
                 hooks: PluginHooks | None = None) -> None:
        self.settings = settings
        self.profile = profile
        self.rules = rules
        self.hooks = hooks or PluginHooks(pm)
        self.stop = stop or threading.Event()
        self.lines_read = 0
        self.bytes_read = 0
        self.files_done = 0
        self.on_progress: Callable[[int], None] | None = None
        self._failed: frozenset[str] = frozenset()
        self._told_earlier_failures = False
        self._unsealed = 0  # bytes merged since the last seal
        self._slots = threading.BoundedSemaphore(settings.workers + settings.queue_size)
        self._merging = threading.Lock()  # held by the one thread merging
        self._queue_lock = threading.Lock()
        self._queue: deque[_Entry] = deque()
        self._small: _Parts = []  # small files' chunks read and not yet handed to a worker
        self._small_done: list[_FileRun] = []  # small files read whole, ended once their chunks are queued
        self._checkpoint: Checkpoint | None = None
        self._error: BaseException | None = None
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="omp-worker")
        budget.return_freed_buffers(settings.chunk_bytes)  # else glibc's heap grows with the lines read
        self.trimmer = budget.HeapTrimmer.for_cap(settings.memory_mb)
        # Plugin code too: a rule whose set-up raises here is failed in the state (see ``process``).
        self._startup_failures: set[Failure] = {
            Failure("rule", "", rule.name, rule.setup_error, guard.plugin_of(rule), "setup")
            for rule in rules if rule.setup_error is not None
        }
        ready = [rule for rule in rules if rule.setup_error is None]
        weights = [guard.call_rule(self._startup_failures, rule, "setup", "", rule.state_weight) for rule in ready]
        shares = budget.rule_state_bytes(settings.memory_mb, [1.0 if w is guard.FAILED else w for w in weights])
        self.state_bytes = {rule.name: share for rule, share in zip(ready, shares, strict=True)}
        self.redactor = Redactor.from_settings(settings)
        for rule in ready:  # partials inherit the bound and the redactor through Rule.empty
            self._prepare(rule, self._startup_failures)
        self.columns = frozenset(column for rule in rules for column in rule.columns or RECORD_COLUMNS)
        compiled.warn_if_pure_python()  # once per process, at the start of its first run

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        # Stopping at once (a second signal, as KeyboardInterrupt) must not wait for a chunk that a
        # plugin never finishes: the process exits, and the last commit stands.
        at_once = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        self._pool.shutdown(wait=not at_once, cancel_futures=at_once)

    @property
    def in_flight(self) -> int:
        """Chunks read and not merged yet: queued, with a worker, or done and waiting for their turn."""
        return self.settings.workers + self.settings.queue_size - self._slots._value  # noqa: SLF001

    def process(self, works: Iterable[Work], checkpoint: Checkpoint, *, final: bool) -> None:
        """Read each work's bytes and fold them into ``checkpoint``; stops early when ``stop`` is set.

        ``final`` counts a last line without a newline (a batch run); without it, such a line
        waits for its newline (a file that may still be written). Every chunk read is merged
        before this returns.
        """
        state = checkpoint.state
        known = frozenset(state.failed_rules())
        if not self._told_earlier_failures:  # once per run, or per watcher, not per commit
            self._told_earlier_failures = True
            for failure in (f for f in state.rule_failures() if f.rule in known):
                log.warning("rule '%s' failed in an earlier run (%s in %s); it stays failed until --reset or a "
                            "change to its parameters", failure.rule, failure.error, failure.phase or "update")
        state.failures |= self._startup_failures
        for name, rule in state.rules.items():  # a checkpoint may come from a run with another cap
            if name in self.state_bytes:
                self._prepare(rule, state.failures)
        self._failed = known
        self._announce(state)
        self._checkpoint, self._queue, self._error = checkpoint, deque(), None
        self._small, self._small_done = [], []
        for work in works:
            if self.stop.is_set():
                break
            run = _FileRun(work, FileStats(work.name, self.settings.malformed_samples), time.perf_counter())
            self.hooks.before_file(work.name)
            if work.left() <= self.settings.chunk_bytes // SMALL_FILE_SHARE:
                self._read(run, final, small=True)
                self._small_done.append(run)
            else:
                self._submit_small()  # in read order: the small files before this one first
                self._read(run, final, small=False)
                self._enqueue(_Entry([], done=run))
            self._drain(block=False)
        self._submit_small()
        while self._queue:
            self._wait_for_head()
        with self._merging:  # the last entry may still be merging in a worker
            if self._unsealed and self._error is None:
                # Sealed here, with the rest of the merging, not when results are first read: the
                # checkpoint holds the smaller state, and the outputs only judge the open windows.
                checkpoint.state.seal()
                self._unsealed = 0
                self._announce(checkpoint.state)
        self.trimmer.check()  # before the outputs and the checkpoint are written
        self._raise_error()

    def _prepare(self, rule: Rule, failures: set[Failure]) -> None:
        """Give a rule its memory bound, the redactor and the data folder; plugin code, so guarded."""
        guard.call_rule(failures, rule, "setup", "", rule.limit_state, self.state_bytes[rule.name])
        guard.call_rule(failures, rule, "setup", "", rule.use_redactor, self.redactor)
        rule.data_dir = str(self.settings.data_dir)  # where sample lines are read back from

    def _announce(self, state: RunState) -> None:
        """Log the rules that failed since the last look and tell ``on_error``; workers skip them from now on."""
        failed = state.failed_rules() if state.failures else set()
        if len(failed) > len(self._failed):
            guard.announce([f for f in state.rule_failures() if f.rule not in self._failed], self.hooks)
            self._failed = frozenset(failed)

    def _read(self, run: _FileRun, final: bool, small: bool) -> None:
        """Hand the file's chunks to the workers, or, for a ``small`` file, to the next chunk of small files."""
        work = run.work
        reader = ChunkReader(
            str(work.path), self.settings.chunk_bytes, self.settings.max_line_bytes,
            start=work.start, first_line=work.first_line, final=final, skip_partial=work.skip_to_newline,
        )
        try:
            for chunk in reader:
                lines.remember(work.path, chunk.first_line, chunk.start)  # to read sample lines back later
                chunk = Chunk(work.name, chunk.data, chunk.first_line, chunk.start, chunk.end, chunk.overlong)
                if small:
                    self._small.append((run, chunk))
                    if (len(self._small) >= MAX_FILES_PER_CHUNK
                            or sum(c.end - c.start for _, c in self._small) >= self.settings.chunk_bytes):
                        self._submit_small()
                else:
                    self._submit([(run, chunk)])
                if self.on_progress is not None:
                    self.on_progress(chunk.end - chunk.start)
                if self.stop.is_set():
                    break
        except OSError as exc:
            run.failed = True
            self._file_failed(run, reader, self._checkpoint, exc)

    def _submit(self, parts: _Parts) -> None:
        self._acquire_slot()  # which may merge earlier chunks, and so fill their files' samples:
        # once a file's earliest malformed lines are in, its later chunks have none to add.
        chunks = [(chunk, len(run.stats.samples) < self.settings.malformed_samples) for run, chunk in parts]
        self._enqueue(_Entry(parts, self._pool.submit(self._process, chunks)))

    def _submit_small(self) -> None:
        """Hand the small files' chunks read so far to a worker as one, then end the files read whole."""
        if self._small:
            self._submit(self._small)
        for run in self._small_done:
            self._enqueue(_Entry([], done=run))
        self._small, self._small_done = [], []

    def _file_failed(self, run: _FileRun, reader: ChunkReader, checkpoint: Checkpoint, exc: OSError) -> None:
        message = f"cannot read {run.work.path}: {exc.strerror or exc}"
        if reader.offset > run.work.start:
            message += f" (stopped at byte {reader.offset}; the lines before it are counted)"
        with self._merging:  # a worker may be merging into the same state
            checkpoint.state.failures.add(Failure("file", run.work.name, "", message))
        log.error("%s", message)
        self.hooks.on_error(exc, run.work.name, None)

    def _process(self, chunks: list[tuple[Chunk, bool]]) -> ChunkOutcome:
        if self.profile is not None:
            with self.profile.thread():
                return self._process_chunks(chunks)
        return self._process_chunks(chunks)

    def _process_chunks(self, chunks: list[tuple[Chunk, bool]]) -> ChunkOutcome:
        """Parse the chunks (one file's, or several small files') and fold their records into a fresh partial state."""
        started = time.perf_counter()
        parsed = [self._parse(chunk, samples) for chunk, samples in chunks]
        where = chunks[0][0].path + (f" and {len(chunks) - 1} more" if len(chunks) > 1 else "")
        outcome = ChunkOutcome(RunState.empty(self.rules, self._failed, where), [stats for _, stats in parsed])
        batches = [batch for batch, stats in parsed if stats.lines]
        if batches:
            batch, partial = combine(batches), outcome.partial
            for rule in partial.rules.values():
                if rule.name in self._failed:
                    continue
                for one in ((batch,) if rule.many_files else batch.per_file()):
                    guard.call_rule(partial.failures, rule, "update", one.path or where, rule.update, one)
        seconds = (time.perf_counter() - started) / len(chunks)
        for stats in outcome.stats:
            stats.seconds = seconds
        return outcome

    def _parse(self, chunk: Chunk, samples: bool) -> tuple[Batch, FileStats]:
        batch, stats = parse_chunk(chunk, self.settings.max_line_bytes, self.settings.malformed_samples,
                                   self.columns, samples)
        if stats.samples:  # masked before they are kept anywhere, the checkpoint included
            stats.samples = [replace(s, text=self.redactor.redact(s.text, cut=len(s.text) >= SAMPLE_CHARS))
                             for s in stats.samples]
        return batch, stats

    # -- merging, in read order, by whichever thread is free ---------------------------------

    def _enqueue(self, entry: _Entry) -> None:
        with self._queue_lock:
            self._queue.append(entry)
        if entry.future is not None:  # its worker merges what is ready once it is done (or we do, if it is already)
            entry.future.add_done_callback(self._merge_when_done)

    def _acquire_slot(self) -> None:
        # A slot is freed when its chunk is merged, not when a worker is done with it: chunks done
        # behind a slow one wait for their turn in memory, so they must count against the bound.
        while not self._slots.acquire(blocking=False):
            self._wait_for_head()

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

    def _merge(self, parts: _Parts, outcome: ChunkOutcome, checkpoint: Checkpoint) -> None:
        name = parts[0][0].work.name  # a failed merge names the first file of several
        checkpoint.state.merge(outcome.partial, name)
        self._unsealed += sum(chunk.end - chunk.start for _, chunk in parts)
        if self._unsealed >= SEAL_EVERY_BYTES:
            checkpoint.state.seal(name)  # bounds rule state within a long run, not only between runs
            self._unsealed = 0
        self.trimmer.check()
        for (run, chunk), stats in zip(parts, outcome.stats, strict=True):
            merge_file_stats(checkpoint.state.files, {run.work.name: stats})
            run.stats.merge(stats)
            checkpoint.ledger.advance(run.work, chunk.end, chunk.first_line + stats.lines, chunk.open_tail)
        self._announce(checkpoint.state)

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
        self.hooks.after_file(stats.path, stats)

