"""A watcher's configuration, read again when ``settings.yaml`` or a rule file changes, or on SIGHUP.

The files are looked at every ``watch.poll_interval_ms`` (their content, so an edit within one
tick of the file system's clock is still seen). A new configuration is checked the way
``runpipeline --check`` checks one, with the same messages; one that fails, or that changes a
setting only a restart can apply, is refused with a logged reason and the running one stays. The
watch loop applies a valid one at its next commit boundary (``core.watch``), and
``core.checkpoint.adapt`` then rebuilds only the rules whose parameters changed.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

from core.alertconfig import AlertConfig, load_alerts
from core.errors import ConfigError, DataDirError
from core.plugins import rule_types
from core.rules import Rule
from core.ruleset import load_rules
from core.settings import Settings, load_settings

log = logging.getLogger(__name__)

#: What a watcher applies as it changes (``Settings`` fields); every other setting needs a restart.
#: ``alerts`` holds the destinations, the silences and the alerts' timers.
LIVE = frozenset({"rules", "rule_files", "settle_ms", "poll_interval_ms", "rescan_seconds", "status_seconds",
                  "alerts"})
#: How ``Settings`` fields are written in settings.yaml, where that differs from the field's name.
_WRITTEN = {
    "settle_ms": "watch.settle_ms", "poll_interval_ms": "watch.poll_interval_ms",
    "rescan_seconds": "watch.rescan_seconds", "status_seconds": "watch.status_seconds",
    "max_line_bytes": "limits.max_line_bytes", "malformed_samples": "limits.malformed_samples",
    "memory_mb": "limits.memory_mb", "summary_files": "limits.summary_files",
    "stray_clock_seconds": "limits.stray_clock_seconds",
    "redact_cards": "redact.cards", "redact_emails": "redact.emails", "redact_patterns": "redact.patterns",
    "executor": "executor.type", "scheduler": "executor.scheduler", "executor_workers": "executor.workers",
}


@dataclass(frozen=True)
class Config:
    """A configuration that passed every check: the settings and the enabled rules built from them."""

    settings: Settings
    rules: list[Rule]
    alerts: AlertConfig


def restart_needed(running: Settings, new: Settings) -> list[str]:
    """The settings (as settings.yaml writes them) that differ and that only a restart applies."""
    # A local Dask cluster's size follows ``workers`` unless set: it counts only where Dask runs.
    unused = {"executor_workers"} if running.executor == new.executor == "threads" else set()
    return [_WRITTEN.get(name, name) for name, value in running.__dict__.items()
            if name not in LIVE | unused and name != "source" and new.__dict__.get(name) != value]


class ConfigWatch:
    """Notices a changed configuration and checks it; ``poll`` hands over a valid one once.

    ``check`` is what ``runpipeline --check`` runs on a configuration (it raises ``ConfigError``
    with every problem); ``overrides`` are the command line's (``--data-dir``, ``--output-dir``).
    """

    def __init__(self, settings: Settings, pm: pluggy.PluginManager, overrides: dict[str, Any],
                 check: Callable[[Settings], object]) -> None:
        self.settings = settings
        self.pm = pm
        self.overrides = overrides
        self.check = check
        #: Set by SIGHUP (``on_sighup``): read the configuration again even if no file changed.
        self.hup = threading.Event()
        #: Told each outcome: ``applied``, ``invalid`` or ``restart_needed`` (the metrics count them).
        self.on_outcome: Callable[[str], None] | None = None
        self._seen = _snapshot(settings)
        self._next_look = 0.0

    def poll(self) -> Config | None:
        """A new configuration that passed every check, if the files changed (or SIGHUP came); else None."""
        now = time.monotonic()
        if not self.hup.is_set() and now < self._next_look:
            return None
        self._next_look = now + self.settings.poll_interval_ms / 1000
        seen = _snapshot(self.settings)
        if seen == self._seen and not self.hup.is_set():
            return None
        changed = [_shown(path, self.settings) for path in sorted(set(seen) | set(self._seen))
                   if seen.get(path) != self._seen.get(path)]
        why = ", ".join(changed) + " changed" if changed else "SIGHUP"
        self.hup.clear()
        self._seen = seen
        config, outcome = self._load(why)
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        if config is not None:
            self.settings = config.settings
            self._seen = _snapshot(config.settings)  # the rule files it names may be others
        return config

    def _load(self, why: str) -> tuple[Config | None, str]:
        source = self.settings.source
        log.info("reading the configuration again (%s)", why)
        try:
            settings = load_settings(source, self.overrides)
            self.check(settings)
            changed = restart_needed(self.settings, settings)
            if changed:
                log.error("configuration not applied: %s changed, which needs a restart of the watcher; the "
                          "running configuration stays", ", ".join(changed))
                return None, "restart_needed"
            rules = load_rules(settings, rule_types(self.pm))
            alerts = load_alerts(settings, self.pm, [rule.name for rule in rules])
        except ConfigError as exc:
            log.error("configuration not applied (%d problem%s); the running configuration stays:\n  %s",
                      len(exc.problems), "s" if len(exc.problems) != 1 else "", "\n  ".join(exc.problems))
            return None, "invalid"
        except DataDirError as exc:
            log.error("configuration not applied: %s; the running configuration stays", exc)
            return None, "invalid"
        except Exception as exc:  # a plugin's bug while its module or rules load: the service must go on
            log.error("configuration not applied: %s: %s; the running configuration stays (run --check -v to "
                      "see more)", type(exc).__name__, exc)
            log.debug("reading the configuration failed", exc_info=True)
            return None, "invalid"
        return Config(settings, rules, alerts), "applied"


def _snapshot(settings: Settings) -> dict[str, str | None]:
    """A digest of the settings file and of each rule file it names (None: missing or unreadable)."""
    paths = [settings.source]
    base = settings.source.parent
    for pattern in settings.rule_files:
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        paths += sorted(Path(p) for p in glob.glob(full))
    return {str(path): _digest(path) for path in paths}


def _shown(path: str, settings: Settings) -> str:
    """A path as the rule files' messages show it: relative to the settings file's folder."""
    try:
        return str(Path(path).relative_to(settings.source.parent))
    except ValueError:
        return path


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


@contextlib.contextmanager
def on_sighup(event: threading.Event) -> Iterator[None]:
    """SIGHUP sets ``event`` while the block runs (in the main thread only, where signals can be caught)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGHUP, lambda _signum, _frame: event.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)
