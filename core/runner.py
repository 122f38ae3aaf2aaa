"""One batch run: from the committed checkpoint, through the new bytes in the data folder, to written outputs."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Callable

import pluggy

from core import checkpoint as checkpoints
from core import guard, objectstore, sources
from core.alertconfig import AlertConfig
from core.alerts import Alerts
from core.discover import discover
from core.engine import Pipeline
from core.executor import Executor
from core.guard import PluginHooks
from core.profile import RunProfile
from core.rebuild import rebuild_marked
from core.rules import Rule
from core.run import RunReport, forget_gone, forget_run_failures, metrics, plan, write_outputs
from core.settings import Settings
from core.writers import Writers

__all__ = ["RunReport", "run_batch"]

log = logging.getLogger(__name__)


def run_batch(
    settings: Settings,
    pm: pluggy.PluginManager,
    rules: list[Rule],
    *,
    reset: bool = False,
    on_progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    profile: RunProfile | None = None,
    stop: threading.Event | None = None,
    executor: Executor | None = None,
    alerts: AlertConfig | None = None,
) -> RunReport:
    """Count what is new in the data folder since the last commit, commit, and write the outputs.

    With ``profile``, every thread's work is profiled into it (``runpipeline --profile``). Once
    ``stop`` is set, no new chunk is read: what was read is merged, committed and written, and the
    rest is left for the next run. ``executor`` runs the chunk work (``core.executor``): worker
    threads of ``settings.workers`` by default. With ``alerts``, the incidents are sent before the
    commit.
    """
    if profile is None:
        return _run_batch(settings, pm, rules, reset, on_progress, on_start, None, stop, executor, alerts)
    token = guard.PROFILE.set(profile)  # the threads that seal and read the rules, too
    try:
        with profile.thread():
            return _run_batch(settings, pm, rules, reset, on_progress, on_start, profile, stop, executor, alerts)
    finally:
        guard.PROFILE.reset(token)


def _run_batch(
    settings: Settings,
    pm: pluggy.PluginManager,
    rules: list[Rule],
    reset: bool,
    on_progress: Callable[[int], None] | None,
    on_start: Callable[[int], None] | None,
    profile: RunProfile | None,
    stop: threading.Event | None,
    executor: Executor | None = None,
    alert_config: AlertConfig | None = None,
) -> RunReport:
    started_at = datetime.now(timezone.utc)
    started = time.perf_counter()
    checkpoint = checkpoints.load(settings, rules, reset=reset)
    readers = objectstore.sources_for(settings.data_dir, sources.registered(pm))
    files, skipped = discover(settings.data_dir, settings.include, settings.exclude, settings.recursive, readers)
    for entry in skipped:
        log.info("not reading %s: %s", entry.name, entry.reason)
    forget_gone(checkpoint, files, skipped)
    forget_run_failures(checkpoint)
    hooks = PluginHooks(pm)
    works = plan(files, checkpoint, hooks)
    if on_start is not None:
        on_start(sum(w.left() for w in works))
    hooks.before_run([w.name for w in works], settings.as_dict())
    rebuild_marked(settings, rules, checkpoint, stop, readers)  # new or changed rules, from what was counted before
    with Pipeline(settings, rules, pm, stop=stop, profile=profile, hooks=hooks, executor=executor) as pipeline:
        pipeline.on_progress = on_progress
        pipeline.process(works, checkpoint, final=True)
    run = metrics(settings, started_at, time.perf_counter() - started, pipeline.lines_read, pipeline.bytes_read)
    alerts = Alerts.for_run(alert_config, checkpoint, watching=False, data_name=settings.data_dir.name)
    return write_outputs(settings, hooks, rules, checkpoint, run, Writers(pm), sources=readers, alerts=alerts)
