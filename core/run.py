"""What batch runs (``core.runner``) and the watcher (``core.watch``) share: plan, measure, write the outputs.

Both are a loop over the same steps: list the data folder (``core.discover``), forget what is
gone (``forget_gone``), plan the uncounted bytes of each file (``plan``), fold them in through a
pipeline (``core.engine``), then commit and write (``write_outputs``). A batch run does it once;
a watcher once per set of ready files.
"""

from __future__ import annotations

import errno
import logging
import resource
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from core import checkpoint as checkpoints
from core import guard, lines
from core.alerts import Alerts
from core.checkpoint import Checkpoint
from core.discover import DataFile, Skipped, shown, valid_name
from core.guard import PluginHooks
from core.ledger import Work
from core.output import build_anomalies, build_summary, check_output, state_memory, write_checked
from core.redact import Redactor
from core.rules import Rule
from core.settings import Settings
from core.sources import DEFAULT_SOURCES, Source
from core.state import Failure
from core.writers import Writers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunReport:
    """What a run produced: the documents as written, and whether anything failed along the way."""

    summary: dict[str, Any]
    anomalies: dict[str, Any]
    #: A plugin's ``after_run`` hook that raised, after the outputs were written (so not listed in them).
    after_run_failed: bool = False

    @property
    def failed(self) -> bool:
        return bool(self.summary["rule_errors"] or self.summary["file_errors"] or self.after_run_failed)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux's ``VmHWM`` where there is one: ``getrusage``'s maximum also counts the memory of the
    process that started this one when it forked before the exec (a runpipeline started from a
    large Python process reported that process's size as its own peak).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def plan(files: list[DataFile], checkpoint: Checkpoint, hooks: PluginHooks) -> list[Work]:
    """The uncounted part of each file; a file that cannot be opened is recorded as a file error."""
    works = []
    for data_file in files:
        try:
            if not valid_name(data_file.name):  # names are columns, keys and JSON text: they must be text
                raise OSError("its name is not valid UTF-8: rename it to have it read")
            work = checkpoint.ledger.plan(data_file.name, data_file.path, data_file.source)
        except OSError as exc:
            message = f"cannot read {shown(str(data_file.path))}: {exc.strerror or exc}"
            checkpoint.state.failures.add(Failure("file", shown(data_file.name), "", message))
            log.error("%s", message)
            hooks.on_error(exc, shown(data_file.name), None)
            continue
        if work is not None:
            works.append(work)
    for old, new in checkpoint.ledger.renamed:  # a renamed file's counts go with it
        if old in checkpoint.state.files:
            stats = checkpoint.state.files.pop(old)
            stats.path = new
            checkpoint.state.files[new] = stats
    checkpoint.ledger.renamed.clear()
    return works


def write_outputs(
    settings: Settings, hooks: PluginHooks, rules: list[Rule], checkpoint: Checkpoint, run: dict[str, Any],
    writers: Writers | None = None, *, watching: bool = False, sources: Sequence[Source] = DEFAULT_SOURCES,
    alerts: Alerts | None = None,
) -> RunReport:
    """Build both documents from the checkpoint, commit the checkpoint, check both, then write both atomically.

    Building reads every rule's result, and a rule may keep what it showed in its state (the text
    of an incident's sample lines, read while the file is still there): the checkpoint is saved
    after that, and saved whether or not building succeeds, as it was before. A rule whose result
    raises is failed and left out; the hooks that raised in this run are listed with the rules.
    Then the ``writers`` make their outputs from the two documents (``core.writers``). Sample
    lines are read back through the ``sources`` that read them (``core.lines.SOURCES``). ``alerts``
    queue what the incidents call for, committed with the checkpoint (a batch run sends it first),
    and report in summary.json's ``alerts`` section.
    """
    started = time.perf_counter()
    state = checkpoint.state
    state.failures |= hooks.failures | (writers.failures if writers is not None else set())
    state.keep_recent_files(settings.summary_files)  # what is kept, written and checked stays bounded
    known = state.failed_rules()
    reading = lines.SOURCES.set(sources)
    try:
        # Anomalies first: reading a detector's result seals it, and the summary says how each
        # state degraded (a seal may thin a detector's windows).
        anomalies = build_anomalies(state, rules, run["started_at"])
        summary = build_summary(state, rules, run, Redactor.from_settings(settings), settings.summary_files)
        if alerts is not None:
            summary["alerts"] = alerts.commit(anomalies, summary, checkpoint, deliver=not watching)
    finally:
        lines.SOURCES.reset(reading)
        saving = time.perf_counter()
        checkpoints.save(settings, checkpoint)
        run["checkpoint_seconds"] = round(time.perf_counter() - saving, 3)
        guard.announce([f for f in state.rule_failures() if f.rule not in known], hooks)
    built = saving - started
    run["rule_state"] = state_memory(checkpoint.state)  # sealed and read: as large as it got
    # The last seals and judging happen in building, often the run's peak: read it again now.
    run["peak_rss_mb"] = max(run.get("peak_rss_mb", 0.0), peak_rss_mb())
    checking = time.perf_counter()
    check_output(anomalies, "anomalies")  # both are checked before either is written
    check_output(summary, "summary")
    for name in ("anomalies.json", "summary.json"):  # and either can be written: no folder in their place
        if (settings.output_dir / name).is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder where the output file goes; move it away",
                                    str(settings.output_dir / name))
    # The other writers (the HTML report) render from the checked documents, before
    # output_seconds is known: their cost counts in it, so they cannot show it.
    written_failed = writers is not None and writers.write(settings.output_dir, summary, anomalies, watching=watching)
    run["output_seconds"] = round(built + time.perf_counter() - checking, 3)  # the writes below add milliseconds
    # summary.json last: whoever sees it count a file (a watcher's readers poll it) finds that
    # file in anomalies.json and every other output too.
    write_checked(settings.output_dir / "anomalies.json", anomalies)
    write_checked(settings.output_dir / "summary.json", summary)
    before = len(hooks.failures)
    hooks.after_run(summary, anomalies["anomalies"])
    return RunReport(summary, anomalies, after_run_failed=len(hooks.failures) > before or written_failed)


def forget_gone(checkpoint: Checkpoint, files: list[DataFile], skipped: list[Skipped]) -> None:
    """The ledger keeps the files no longer in the data folder by identity only (``Ledger.forget_missing``).

    A name passed over as a link to another file (``skipped``) is still there: the ledger may know
    the file by that name.
    """
    present = {f.name for f in files} | {s.name for s in skipped}
    checkpoint.ledger.forget_missing(present)
    state = checkpoint.state  # and a file error is about a file that is there
    state.failures = {f for f in state.failures if f.kind != "file" or f.path in present}


def forget_run_failures(checkpoint: Checkpoint, names: set[str] | None = None) -> None:
    """A file error or a hook's failure describes the latest attempt; each run tries again and records anew.

    With ``names``, only the file errors of those files are forgotten (a watcher trying them again).
    """
    state = checkpoint.state
    if names is None:
        state.failures = {f for f in state.failures if f.kind == "rule"}
    else:
        state.failures = {f for f in state.failures if f.kind != "file" or f.path not in names}


def metrics(settings: Settings, started_at: datetime, elapsed: float, lines: int, nbytes: int) -> dict[str, Any]:
    """The ``run`` block of summary.json: what this run read, how fast, and at what memory."""
    from core import __version__, compiled

    seconds = max(elapsed, 1e-9)
    return {
        "version": __version__,
        "started_at": started_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "elapsed_seconds": round(elapsed, 3),
        "peak_rss_mb": peak_rss_mb(),
        "lines_per_second": round(lines / seconds),
        "bytes_per_second": round(nbytes / seconds),
        "workers": settings.workers,
        "compiled": compiled.all_compiled(),
        "chunk_bytes": settings.chunk_bytes,
        "lines_read": lines,
        "bytes_read": nbytes,
    }
