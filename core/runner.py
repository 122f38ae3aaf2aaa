"""One batch run from validated configuration to written outputs."""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import pluggy

from core.discover import discover
from core.engine import Pipeline
from core.output import build_anomalies, build_summary, check_output, write_validated
from core.rules import Rule
from core.settings import Settings
from core.state import RunState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunReport:
    """What a run produced: the summary as written, and whether anything failed along the way."""

    summary: dict[str, Any]
    state: RunState
    anomalies: dict[str, Any]

    @property
    def failed(self) -> bool:
        return bool(self.summary["rule_errors"] or self.summary["file_errors"])


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_batch(
    settings: Settings,
    pm: pluggy.PluginManager,
    rules: list[Rule],
    on_progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> RunReport:
    """Process every file in the data folder once and write ``summary.json``."""
    started_at = datetime.now(timezone.utc)
    started = time.perf_counter()
    files, skipped = discover(settings.data_dir, settings.include, settings.exclude, settings.recursive)
    for entry in skipped:
        log.info("not reading %s: %s", entry.name, entry.reason)
    if on_start is not None:
        on_start(sum(_size(f.path) for f in files))
    pm.hook.before_run(paths=[f.name for f in files], settings=settings.as_dict())
    pipeline = Pipeline(settings, rules, pm)
    pipeline.on_progress = on_progress
    state = pipeline.run(files)
    elapsed = time.perf_counter() - started
    summary = build_summary(state, rules, _metrics(settings, started_at, elapsed, pipeline))
    anomalies = build_anomalies(state, rules, summary["run"]["started_at"])
    # Both are checked before either is written, so a failing schema leaves the old pair in place.
    check_output(anomalies, "anomalies")
    write_validated(settings.output_dir / "summary.json", summary, "summary")
    write_validated(settings.output_dir / "anomalies.json", anomalies, "anomalies")
    pm.hook.after_run(summary=summary, anomalies=anomalies["anomalies"])
    return RunReport(summary, state, anomalies)


def _size(path: Any) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _metrics(settings: Settings, started_at: datetime, elapsed: float, pipeline: Pipeline) -> dict[str, Any]:
    from core import __version__

    seconds = max(elapsed, 1e-9)
    return {
        "version": __version__,
        "started_at": started_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "elapsed_seconds": round(elapsed, 3),
        "peak_rss_mb": peak_rss_mb(),
        "lines_per_second": round(pipeline.lines_read / seconds),
        "bytes_per_second": round(pipeline.bytes_read / seconds),
        "workers": settings.workers,
        "chunk_bytes": settings.chunk_bytes,
    }
