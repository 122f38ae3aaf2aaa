"""The pipeline: read files as chunks, hand them to an executor as chunk work, commit the outcomes in read order.

One thread (the caller's) reads chunks and submits them as chunk work (``core.work``) to an
executor (``core.executor``: worker threads by default) through a bounded number of slots; it
waits when they are full (back-pressure). Small files are read together, several to a chunk of
work. The committer (``core.committer``) merges the outcomes strictly in the order read, advancing
the ledger with them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable

import pluggy

from core import budget, compiled, guard, lines
from core.checkpoint import Checkpoint
from core.committer import Committer, Entry, FileRun, Parts
from core.executor import Executor, build_executor
from core.guard import PluginHooks
from core.ledger import Work
from core.parse import RECORD_COLUMNS, Chunk
from core.profile import RunProfile
from core.reader import ChunkReader
from core.redact import Redactor
from core.rules import Rule
from core.settings import Settings
from core.state import Failure
from core.stats import FileStats
from core.work import ChunkOutcome, RangeTask, WorkSpec, chunk_work, range_work

log = logging.getLogger(__name__)

#: A file with at most ``chunk_bytes`` / this many bytes left to read is read with others into one
#: chunk of work, up to ``chunk_bytes`` in all and ``MAX_FILES_PER_CHUNK`` files: rules cost a few
#: milliseconds a call whatever the batch's size, and 5,000 files of 10 lines each took 52 s
#: one by one.
SMALL_FILE_SHARE = 4
MAX_FILES_PER_CHUNK = 1000


class Pipeline:
    """A worker pool that folds files into a ``Checkpoint``; use it as a context manager."""

    def __init__(self, settings: Settings, rules: list[Rule], pm: pluggy.PluginManager,
                 stop: threading.Event | None = None, profile: RunProfile | None = None,
                 hooks: PluginHooks | None = None, executor: Executor | None = None) -> None:
        self.settings = settings
        self.profile = profile
        self.rules = rules
        self.hooks = hooks or PluginHooks(pm)
        self.stop = stop or threading.Event()
        self.on_progress: Callable[[int], None] | None = None
        self._told_earlier_failures = False
        self._small: Parts = []  # small files' chunks read and not yet submitted
        self._small_bytes = 0  # their bytes
        self._small_done: list[FileRun] = []  # small files read whole, ended once their chunks are queued
        self._now = 0
        self.executor = executor or build_executor(settings)
        self.trimmer = budget.HeapTrimmer.for_cap(settings.memory_mb)
        self.committer = Committer(settings, self.hooks, self.executor.capacity, self.trimmer, profile)
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
        self.executor.shutdown(at_once=exc_type is not None and issubclass(exc_type, KeyboardInterrupt))

    @property
    def in_flight(self) -> int:
        """Chunks read and not merged yet: queued, with a worker, or done and waiting for their turn."""
        return self.committer.in_flight

    @property
    def lines_read(self) -> int:
        return self.committer.lines_read

    @property
    def bytes_read(self) -> int:
        return self.committer.bytes_read

    @property
    def files_done(self) -> int:
        return self.committer.files_done

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
        self.committer.begin(checkpoint, known)
        self._small, self._small_done, self._small_bytes = [], [], 0
        self._now = time.time_ns() // 1000  # one clock for every chunk of this pass (``max_future``)
        for work in works:
            if self.stop.is_set():
                break
            run = FileRun(work, FileStats(work.name, self.settings.malformed_samples), time.perf_counter())
            self.hooks.before_file(work.name)
            if self.executor.reads_ranges:
                self._submit_ranges(run, final)
                self.committer.enqueue(Entry([], done=run))
            elif work.left() <= self.settings.chunk_bytes // SMALL_FILE_SHARE:
                self._read(run, final, small=True)
                self._small_done.append(run)
            else:
                self._submit_small()  # in read order: the small files before this one first
                self._read(run, final, small=False)
                self.committer.enqueue(Entry([], done=run))
            self.committer.drain()
        self._submit_small()
        self.committer.finish()

    def _prepare(self, rule: Rule, failures: set[Failure]) -> None:
        """Give a rule its memory bound, the redactor and the data folder; plugin code, so guarded."""
        guard.call_rule(failures, rule, "setup", "", rule.limit_state, self.state_bytes[rule.name])
        guard.call_rule(failures, rule, "setup", "", rule.use_redactor, self.redactor)
        rule.data_dir = str(self.settings.data_dir)  # where sample lines are read back from

    def _read(self, run: FileRun, final: bool, small: bool) -> None:
        """Hand the file's chunks to the workers, or, for a ``small`` file, to the next chunk of small files."""
        work = run.work
        reader = ChunkReader(
            str(work.path), self.settings.chunk_bytes, self.settings.max_line_bytes,
            start=work.start, first_line=work.first_line, final=final, skip_partial=work.skip_to_newline,
            end=work.end,
            source=work.source,
        )
        try:
            chunks = iter(reader)
            while True:
                self.committer.wait_for_room()  # before reading: a chunk read is never held waiting for a slot
                chunk = next(chunks, None)
                if chunk is None:
                    break
                lines.remember(work.path, chunk.first_line, chunk.start, reader.starts)  # to read sample lines back
                chunk = Chunk(work.name, chunk.data, chunk.first_line, chunk.start, chunk.end, chunk.overlong,
                              chunk.before, chunk.context, chunk.after)
                if small:
                    self._small.append((run, chunk))
                    self._small_bytes += chunk.end - chunk.start
                    if len(self._small) >= MAX_FILES_PER_CHUNK or self._small_bytes >= self.settings.chunk_bytes:
                        self._submit_small()
                else:
                    self._submit([(run, chunk)])
                if self.on_progress is not None:
                    self.on_progress(chunk.end - chunk.start)
                if self.stop.is_set():
                    break
        except OSError as exc:
            run.failed = True
            self._file_failed(run, reader, exc)

    def _submit(self, parts: Parts) -> None:
        self.committer.acquire_slot()  # which may merge earlier chunks, and so fill their files' samples:
        # once a file's earliest malformed lines are in, its later chunks have none to add.
        chunks = [(chunk, len(run.stats.samples) < self.settings.malformed_samples) for run, chunk in parts]
        work = chunk_work if self.profile is None else self._profiled
        places: Parts = [(run, chunk.place()) for run, chunk in parts]  # the bytes go with the work alone
        self.committer.enqueue(Entry(places, self.executor.submit(work, self._spec(), chunks)))

    def _spec(self) -> WorkSpec:
        return WorkSpec(tuple(self.rules), self.committer.failed, self.columns, self.settings.max_line_bytes,
                        self.settings.malformed_samples, self.redactor, self._now, self.settings.stray_us)

    def _submit_ranges(self, run: FileRun, final: bool) -> None:
        """Hand the file's byte ranges to workers that read them themselves (``Executor.reads_ranges``)."""
        work = run.work
        try:
            size = work.source.size(work.path)
        except OSError as exc:
            run.failed = True
            self._file_failed(run, None, exc)
            return
        ranges = work.source.split(work.path, work.start, size, self.settings.chunk_bytes)
        for index, part in enumerate(ranges):
            if self.stop.is_set():
                break
            last = index == len(ranges) - 1  # read to the end, as it is when read: the file may have grown
            self.committer.acquire_slot()
            task = RangeTask(work.name, str(work.path), work.source, part.start, None if last else part.end,
                             work.first_line if index == 0 else None, self.settings.chunk_bytes, final,
                             work.skip_to_newline and index == 0,
                             len(run.stats.samples) < self.settings.malformed_samples)
            self.committer.enqueue(Entry([(run, task)], self.executor.submit(range_work, self._spec(), task)))
            if self.on_progress is not None:
                self.on_progress((part.end or size) - part.start)

    def _submit_small(self) -> None:
        """Hand the small files' chunks read so far to a worker as one, then end the files read whole."""
        if self._small:
            self._submit(self._small)
        for run in self._small_done:
            self.committer.enqueue(Entry([], done=run))
        self._small, self._small_done, self._small_bytes = [], [], 0

    def _file_failed(self, run: FileRun, reader: ChunkReader | None, exc: OSError) -> None:
        message = f"cannot read {run.work.path}: {exc.strerror or exc}"
        if reader is not None and reader.offset > run.work.start:
            message += f" (stopped at byte {reader.offset}; the lines before it are counted)"
        self.committer.file_failed(run.work.name, message)
        log.error("%s", message)
        self.hooks.on_error(exc, run.work.name, None)

    def _profiled(self, spec: WorkSpec, chunks: list[tuple[Chunk, bool]]) -> ChunkOutcome:
        with self.profile.thread():
            return chunk_work(spec, chunks)
