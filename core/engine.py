"""The pipeline: read files as chunks, parse and apply rules on a worker pool, merge the partial states."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

from core.discover import DataFile
from core.errors import RuleExecutionFailed
from core.parse import Chunk, parse_chunk
from core.reader import ChunkReader
from core.rules import Rule
from core.settings import Settings
from core.state import Failure, RunState
from core.stats import FileStats, merge_file_stats

log = logging.getLogger(__name__)


@dataclass
class ChunkOutcome:
    """What a worker hands back for one chunk: its line counts and the rules that failed on it."""

    stats: FileStats
    failures: list[tuple[str, Exception]] = field(default_factory=list)


@dataclass
class _FileProgress:
    file: DataFile
    futures: list[Future[ChunkOutcome]] = field(default_factory=list)
    read: bool = False
    stats: FileStats | None = None


class Pipeline:
    """Run the enabled rules over files; each worker owns one partial state, merged at the end."""

    def __init__(self, settings: Settings, rules: list[Rule], pm: pluggy.PluginManager) -> None:
        self.settings = settings
        self.rules = rules
        self.hook = pm.hook
        self.lines_read = 0
        self.bytes_read = 0
        self.on_progress: Callable[[int], None] | None = None

    def run(self, files: list[DataFile]) -> RunState:
        """Process every file once and return the merged state."""
        state = RunState.empty(self.rules)
        partials: queue.SimpleQueue[RunState] = queue.SimpleQueue()
        for _ in range(self.settings.workers):
            partials.put(RunState.empty(self.rules))
        # Back-pressure: the reader waits once this many chunks are queued or in work.
        slots = threading.BoundedSemaphore(self.settings.workers + self.settings.queue_size)
        progress: OrderedDict[str, _FileProgress] = OrderedDict()
        with ThreadPoolExecutor(self.settings.workers, thread_name_prefix="omp-worker") as pool:
            for data_file in files:
                progress[data_file.name] = _FileProgress(data_file)
                self._read_file(data_file, pool, slots, partials, progress[data_file.name], state)
                self._finish_files(progress, state, wait=False)
            self._finish_files(progress, state, wait=True)
        while not partials.empty():
            state.merge(partials.get())
        for name in state.failed_rules():
            state.rules.pop(name, None)
        return state

    def _read_file(
        self,
        data_file: DataFile,
        pool: ThreadPoolExecutor,
        slots: threading.BoundedSemaphore,
        partials: queue.SimpleQueue[RunState],
        progress: _FileProgress,
        state: RunState,
    ) -> None:
        self.hook.before_file(path=data_file.name)
        reader = ChunkReader(str(data_file.path), self.settings.chunk_bytes, self.settings.max_line_bytes)
        try:
            for chunk in reader:
                chunk = Chunk(data_file.name, chunk.data, chunk.first_line, chunk.start, chunk.end, chunk.overlong)
                slots.acquire()
                future = pool.submit(self._process, chunk, partials)
                future.add_done_callback(lambda _: slots.release())
                progress.futures.append(future)
                if self.on_progress is not None:
                    self.on_progress(chunk.end - chunk.start)
        except OSError as exc:
            message = f"cannot read {data_file.path}: {exc.strerror or exc}"
            if reader.offset:
                message += f" (stopped at byte {reader.offset}, line {reader.line}; lines before it are counted)"
            state.failures.add(Failure("file", data_file.name, "", message))
            log.error("%s", message)
            self.hook.on_error(error=exc, path=data_file.name, rule=None)
        progress.read = True

    def _process(self, chunk: Chunk, partials: queue.SimpleQueue[RunState]) -> ChunkOutcome:
        started = time.perf_counter()
        batch, stats = parse_chunk(chunk, self.settings.max_line_bytes, self.settings.malformed_samples)
        outcome = ChunkOutcome(stats)
        partial = partials.get()
        try:
            if stats.lines:
                for rule in partial.rules.values():
                    self._update(rule, batch, partial, outcome)
        finally:
            partials.put(partial)
        stats.seconds = time.perf_counter() - started
        return outcome

    def _update(self, rule: Rule, batch: Any, partial: RunState, outcome: ChunkOutcome) -> None:
        if any(f.rule == rule.name for f in partial.failures):
            return
        try:
            rule.update(batch)
        except Exception as exc:  # a plugin's bug must not stop the other rules
            error = RuleExecutionFailed(rule.name, batch.path, exc)
            partial.failures.add(Failure("rule", batch.path, rule.name, f"{type(exc).__name__}: {exc}"))
            outcome.failures.append((rule.name, error))

    def _finish_files(self, progress: OrderedDict[str, _FileProgress], state: RunState, wait: bool) -> None:
        """Report files whose chunks are all done, in order; with ``wait``, wait for all of them."""
        while progress:
            name, file_progress = next(iter(progress.items()))
            if not file_progress.read or not (wait or all(f.done() for f in file_progress.futures)):
                return
            stats = FileStats(name, sample_limit=self.settings.malformed_samples)
            for future in file_progress.futures:
                outcome = future.result()
                stats.merge(outcome.stats)
                for rule_name, error in outcome.failures:
                    log.error("%s", error)
                    self.hook.on_error(error=error, path=name, rule=rule_name)
            progress.popitem(last=False)
            self._file_done(stats, state)

    def _file_done(self, stats: FileStats, state: RunState) -> None:
        merge_file_stats(state.files, {stats.path: stats})
        self.lines_read += stats.lines
        self.bytes_read += stats.bytes
        log.info(
            "%s: %d lines, %d records, %d malformed, %d blank, %.0f ms",
            stats.path, stats.lines, stats.records, stats.malformed, stats.blank, stats.seconds * 1000,
        )
        self.hook.after_file(path=stats.path, stats=stats)
