"""``runpipeline --watch``: follow the data folder and fold in each file as it becomes ready.

The observer thread (watchdog) only notes which paths changed, coalescing repeated events for a
path into one entry, so memory grows with the number of distinct files, never with the number
of events. The loop takes the files that are ready (closed after writing, renamed into place, or
unchanged for ``settle_ms``), reads their new complete lines into the worker pool (which waits
when its bounded queue is full), commits state and ledger in one atomic checkpoint, and rewrites
the outputs. Between two commits it takes on a changed configuration (``core.reload``), and it
feeds the Prometheus metrics when they are served (``core.metrics``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pluggy
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from core import checkpoint as checkpoints
from core import objectstore, sources
from core.alertconfig import AlertConfig
from core.alerts import Alerts
from core.checkpoint import Checkpoint
from core.discover import DataFile, discover, wanted
from core.engine import Pipeline
from core.guard import PluginHooks
from core.lock import StateLock
from core.metrics import Metrics
from core.metrics import register as register_metrics
from core.rebuild import rebuild_marked
from core.reload import Config, ConfigWatch
from core.rules import Rule
from core.run import forget_gone, forget_run_failures, metrics, peak_rss_mb, plan, write_outputs
from core.settings import Settings
from core.writers import Writers

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    """A file that changed and is waiting to be read."""

    changed_at: float
    ready: bool = False  # closed after writing, or renamed into place: no need to wait
    size: int = -1
    mtime_ns: int = -1
    stable_since: float = 0.0


class ChangeSet(FileSystemEventHandler):
    """Which files changed since they were last read; one entry per path, however many events."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self.changed = threading.Event()
        #: Told each name as it starts waiting (the metrics' latency from a file's change to its commit).
        self.on_notice: Callable[[str], None] | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def dispatch(self, event: FileSystemEvent) -> None:
        # A folder is never read as a file (discover skips it too); files inside have their own events.
        if not event.is_directory:
            super().dispatch(event)

    def on_created(self, event: FileSystemEvent) -> None:
        self.note(event.src_path)

    def on_modified(self, event: FileSystemEvent) -> None:
        self.note(event.src_path)

    def on_closed(self, event: FileSystemEvent) -> None:
        self.note(event.src_path, ready=True)

    def on_moved(self, event: FileSystemEvent) -> None:
        self.note(event.dest_path, ready=True)

    def note(self, path: str | bytes, ready: bool = False) -> None:
        """Record that ``path`` changed; ``ready`` when it is known to be complete."""
        name = self._name(os.fsdecode(path))
        if name is not None:
            self.note_name(name, ready)

    def note_name(self, name: str, ready: bool = False) -> None:
        """Record that the input ``name`` (relative to the data folder, and wanted) changed."""
        with self._lock:
            entry = self._pending.setdefault(name, _Pending(time.monotonic()))
            entry.changed_at = time.monotonic()
            entry.ready = entry.ready or ready
        if self.on_notice is not None:
            self.on_notice(name)
        self.changed.set()

    def _name(self, path: str) -> str | None:
        try:
            name = Path(path).relative_to(self.settings.data_dir).as_posix()
        except ValueError:
            return None
        if "/" in name and not self.settings.recursive:
            return None
        if not wanted(name, self.settings.include, self.settings.exclude):
            return None
        return name

    def take_ready(self) -> list[str]:
        """Remove and return the names that can be read now, in name order."""
        now = time.monotonic()
        settle = self.settings.settle_ms / 1000
        ready = []
        with self._lock:
            self.changed.clear()
            for name, entry in list(self._pending.items()):
                if entry.ready or self._settled(name, entry, now, settle):
                    ready.append(name)
                    del self._pending[name]
        return sorted(ready)

    def _settled(self, name: str, entry: _Pending, now: float, settle: float) -> bool:
        try:
            info = os.stat(self.settings.data_dir / name)
        except OSError:
            return now - entry.changed_at >= settle  # gone or unreadable: let the planner say so
        if (info.st_size, info.st_mtime_ns) != (entry.size, entry.mtime_ns):
            entry.size, entry.mtime_ns, entry.stable_since = info.st_size, info.st_mtime_ns, now
            return False
        return now - max(entry.stable_since, entry.changed_at) >= settle


def start_observer(settings: Settings, changes: ChangeSet, poll: bool) -> Observer | PollingObserver:
    """Native events where they work; the polling observer with ``--poll`` or as a fallback."""
    if not poll:
        observer = Observer()
        try:
            observer.schedule(changes, str(settings.data_dir), recursive=settings.recursive)
            observer.start()
            return observer
        except OSError as exc:
            log.warning("native file events unavailable (%s); polling every %d ms instead",
                        exc, settings.poll_interval_ms)
    observer = PollingObserver(timeout=settings.poll_interval_ms / 1000)
    observer.schedule(changes, str(settings.data_dir), recursive=settings.recursive)
    observer.start()
    return observer


#: How often a watcher checks that its data folder is still the folder it watches (a stat).
FOLLOW_SECONDS = 1.0


class WatchLoop:
    """The service: initial catch-up, then one commit per set of ready files until ``stop``."""

    def __init__(self, settings: Settings, pm: pluggy.PluginManager, rules: list[Rule],
                 stop: threading.Event, *, poll: bool = False, reset: bool = False,
                 alerts: AlertConfig | None = None, metrics: Metrics | None = None,
                 config: ConfigWatch | None = None, lock: StateLock | None = None) -> None:
        self.settings = settings
        self.pm = pm
        self.rules = rules
        self.stop = stop
        self.poll = poll
        self.checkpoint: Checkpoint = checkpoints.load(settings, rules, reset=reset)
        self.hooks = PluginHooks(pm)  # a plugin whose hook raised stays without hooks until the watcher restarts
        self.writers = Writers(pm)
        self.changes = ChangeSet(settings)
        self.alerts = Alerts.for_run(alerts, self.checkpoint, watching=True, data_name=settings.data_dir.name)
        self.sources = objectstore.sources_for(settings.data_dir, sources.registered(pm))
        self.started_at = datetime.now(timezone.utc)
        self.started = time.perf_counter()
        self.commits = 0
        self._next_status = 0.0
        self.pipeline: Pipeline | None = None
        #: Where a changed configuration comes from; None: the configuration is never read again.
        self.config = config
        self._config: Config | None = None  # a new configuration, applied between two pipelines
        self._observer: BaseObserver | None = None
        self._watched: tuple[int, int] | None = None  # the data folder's device and inode, as the observer watches it
        self.metrics = metrics
        #: The output folder's lock, kept before each commit (``StateLock.keep``); None: not checked.
        self.lock = lock
        if metrics is not None:
            register_metrics(pm, metrics)
            self.changes.on_notice = metrics.noticed
            metrics.watch(lambda: len(self.changes), lambda: self.pipeline.in_flight if self.pipeline else 0)
            metrics.follow_alerts(lambda: self.alerts)
            if config is not None:
                config.on_outcome = metrics.reload_outcome

    def run(self) -> None:
        """Watch until ``stop`` is set; then finish the chunks in flight, commit and return.

        A new configuration (``core.reload``) ends the pipeline of the old one at a commit boundary;
        the next pipeline, of the new rules, starts with a commit that rebuilds the rules changed.
        """
        if self.polls_listing:
            log.info("watching %s (listing it every %d ms)", self.settings.data_dir, self.settings.poll_interval_ms)
        else:
            self._observer = start_observer(self.settings, self.changes, self.poll)
            self._watched = _identity(self.settings.data_dir)
            log.info("watching %s (%s)", self.settings.data_dir, type(self._observer).__name__)
        if self.alerts is not None:
            self.alerts.start()
        try:
            starting = True
            while starting or self._config is not None:
                if self._config is not None:
                    self._apply(self._config)
                with Pipeline(self.settings, self.rules, self.pm, stop=self.stop, hooks=self.hooks) as pipeline:
                    self.pipeline = pipeline
                    # Called per chunk read, so a long commit (a big file) still reports its progress.
                    pipeline.on_progress = lambda _bytes: self._status_due(pipeline)
                    self._loop(pipeline, starting)
                starting = False
            self._close_alerts()
        finally:
            if self.alerts is not None:
                self.alerts.close()
            if self._observer is not None:
                self._observer.stop()
                self._observer.join(timeout=5)

    def _close_alerts(self) -> None:
        """On a graceful stop: keep what the alerts delivered since the last commit, so a restart does not resend it."""
        if self.alerts is None:
            return
        self.alerts.close()
        self.alerts.refresh(self.settings.output_dir)
        if self.alerts.keep(self.checkpoint):
            checkpoints.save(self.settings, self.checkpoint)

    def _loop(self, pipeline: Pipeline, starting: bool) -> None:
        if starting:
            files = self._all_files()
            self.hooks.before_run([f.name for f in files], self.settings.as_dict())  # once, as the watcher starts
            self._commit(pipeline, files, catch_up=True)  # and write outputs even when idle
        else:
            self._commit(pipeline, [])  # the new configuration's first commit: its rules rebuilt, its outputs
        next_rescan = next_follow = time.monotonic()
        while not self.stop.is_set():
            if self.config is not None and (config := self.config.poll()) is not None:
                self._config = config  # applied between this pipeline and the next
                return
            self.changes.changed.wait(timeout=min(0.1, max(0.01, self.settings.settle_ms / 1000)))
            names = self.changes.take_ready()
            if names:
                self._commit(pipeline, [DataFile(self.settings.data_dir / n, n, sources.choose(n, self.sources))
                                        for n in names])
            now = time.monotonic()
            if self._observer is not None and now >= next_follow:
                next_follow = now + FOLLOW_SECONDS
                if self._data_folder_replaced():
                    next_rescan = now  # what the new folder holds, at once
            if now >= next_rescan:
                self._rescan()
                next_rescan = now + self._rescan_every()
            self._status_due(pipeline)
            if self.alerts is not None:
                self.alerts.refresh(self.settings.output_dir)  # a delivery or failure since the last commit
            self.writers.flush(self.settings.output_dir, watching=True)  # a render put off by its interval
        self.writers.flush(self.settings.output_dir, watching=True, force=True)

    def _apply(self, config: Config) -> None:
        """Take on a new configuration: its settings, and its rules (only the changed ones are rebuilt)."""
        old, self._config = self.settings, None
        self.settings, self.rules = config.settings, config.rules
        self.sources = objectstore.sources_for(config.settings.data_dir, sources.registered(self.pm))  # new options
        self.changes.settings = config.settings
        checkpoints.adapt(self.checkpoint, config.rules)  # marks the new and changed rules for rebuilding
        rebuilt = [rule.name for rule in config.rules if rule.name in self.checkpoint.rebuild]
        log.info("configuration applied; rules rebuilt: %s; rules kept as they were: %s",
                 ", ".join(rebuilt) or "none",
                 ", ".join(rule.name for rule in config.rules if rule.name not in rebuilt) or "none")
        self._reconfigure_alerts(config)
        if old.poll_interval_ms != config.settings.poll_interval_ms and isinstance(self._observer, PollingObserver):
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = start_observer(self.settings, self.changes, self.poll)

    def _reconfigure_alerts(self, config: Config) -> None:
        """The new ``alerts:`` block from the next delivery round on; what was sent stays sent."""
        if self.alerts is not None:
            self.alerts.reconfigure(config.alerts)
            return
        self.alerts = Alerts.for_run(config.alerts, self.checkpoint, watching=True,
                                     data_name=self.settings.data_dir.name)
        if self.alerts is not None:  # the first destinations
            self.alerts.start()

    def _all_files(self) -> list[DataFile]:
        """The files in the data folder; the ledger forgets the names no longer there (see ``forget_gone``)."""
        files, skipped = discover(self.settings.data_dir, self.settings.include, self.settings.exclude,
                                  self.settings.recursive, self.sources)
        forget_gone(self.checkpoint, files, skipped)
        return files

    @property
    def polls_listing(self) -> bool:
        """Whether the data folder is in object storage: no events there, its listing is polled instead."""
        return isinstance(self.settings.data_dir, objectstore.ObjectPath)

    def _data_folder_replaced(self) -> bool:
        """Whether the data folder is another folder than the one watched (moved away and made again, or a
        symlink to it pointed elsewhere); if so, the new one is watched from now on."""
        now = _identity(self.settings.data_dir)
        if now is None or now == self._watched:  # gone: the rescan says so
            return False
        log.warning("the data folder %s was replaced by another folder; watching the new one", self.settings.data_dir)
        assert self._observer is not None
        self._observer.stop()
        self._observer.join(timeout=5)
        self._observer = start_observer(self.settings, self.changes, self.poll)
        self._watched = now
        return True

    def _rescan_every(self) -> float:
        return self.settings.poll_interval_ms / 1000 if self.polls_listing else self.settings.rescan_seconds

    def _rescan(self) -> None:
        """Notice what events may have missed (an overflowed event queue, files from before the start);
        in object storage, where there are no events, notice every new or grown object.

        An object is whole once it is listed (uploads are atomic): it is read at once, not left to settle.
        """
        ledger, failed = self.checkpoint.ledger, {f.path for f in self.checkpoint.state.failures if f.kind == "file"}
        for data_file in self._all_files():
            entry = ledger.entries.get(data_file.name)
            try:
                if entry is None and isinstance(data_file.path, Path):  # a link to a file counted under another name
                    entry = ledger.counted_as(data_file.path.stat())
                size = data_file.source.size(data_file.path)
            except OSError:
                if data_file.name not in failed:  # it cannot be read (a link whose file is gone): said once
                    self.changes.note_name(data_file.name, ready=True)
                continue
            if entry is None or size != entry.offset:
                self.changes.note_name(data_file.name, ready=self.polls_listing)

    def _commit(self, pipeline: Pipeline, files: list[DataFile], *, catch_up: bool = False) -> None:
        # A file error describes the latest attempt, as in a batch run: forgotten when the file is tried
        # again. The catch-up tries every file, so it also forgets files gone since (and earlier runs' hooks).
        began = time.perf_counter()
        if self.lock is not None:
            self.lock.keep()  # the output folder may have been deleted, and another run started on it
        forget_run_failures(self.checkpoint, None if catch_up else {f.name for f in files})
        present = [f for f in files if not isinstance(f.path, Path) or os.path.lexists(f.path) or _log_gone(f)]
        works = plan(present, self.checkpoint, self.hooks)
        rebuild_marked(self.settings, self.rules, self.checkpoint, self.stop, self.sources)  # new or changed rules
        # A file taken from the change set is closed after writing, renamed into place or settled:
        # its last line counts even without a newline, as in a batch run. The catch-up reads what
        # was there at the start, which may be mid-write: complete lines only, and the rescan
        # that follows it notes the files with a tail left, which settle like any other.
        pipeline.process(works, self.checkpoint, final=not catch_up)
        elapsed = time.perf_counter() - self.started
        run = metrics(self.settings, self.started_at, elapsed, pipeline.lines_read, pipeline.bytes_read)
        report = write_outputs(self.settings, self.hooks, self.rules, self.checkpoint, run, self.writers,
                               watching=True, alerts=self.alerts, sources=self.sources)
        self.commits += 1
        if self.metrics is not None:
            self.metrics.committed([f.name for f in files], time.perf_counter() - began,
                                   report.summary, report.anomalies["anomalies"])

    def _status_due(self, pipeline: Pipeline) -> None:
        now = time.monotonic()
        if now >= self._next_status:
            self._next_status = now + self.settings.status_seconds
            self._status(pipeline)

    def _status(self, pipeline: Pipeline) -> None:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        log.info(
            "status: %d files waiting, %d chunks in flight, %d files processed, %.0f lines/s, peak RSS %.0f MB",
            len(self.changes), pipeline.in_flight, pipeline.files_done, pipeline.lines_read / elapsed,
            peak_rss_mb(),
        )


def _identity(folder: Path | objectstore.ObjectPath) -> tuple[int, int] | None:
    """A local folder's device and inode (through a symlink to it); None in object storage or when it is gone."""
    if not isinstance(folder, Path):
        return None
    try:
        info = os.stat(folder)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _log_gone(data_file: DataFile) -> bool:
    log.info("%s was deleted before it was read; skipping it", data_file.name)
    return False
