"""Every call into plugin code is guarded here: a call that raises is recorded, named, and the run goes on.

A rule's methods (``setup``, ``update``, ``merge``, ``seal``, ``result``, ...) go through
``call_rule``: the rule is failed, with the plugin that registered it, the phase and the file,
and the other rules go on. The lifecycle hooks go through ``PluginHooks``, one plugin at a time:
a plugin whose hook raises is recorded the same way and its hooks are not called again in the
run. Both end up in ``rule_errors`` and make the exit code 3.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

import pluggy

# The module, not its names: core.state calls this module too, and whichever is imported first
# finds the other half-built. A Failure is made only when a call fails, long after both are.
from core import state as run_state

if TYPE_CHECKING:
    from core.rules import Rule
    from core.state import Failure
    from core.stats import FileStats

log = logging.getLogger(__name__)


class ThreadProfile(Protocol):
    """What profiles a thread's calls (``core.profile.RunProfile``)."""

    def thread(self) -> AbstractContextManager[None]: ...


#: The run's profile (``runpipeline --profile``), if any: ``call_each``'s threads are profiled into it too.
PROFILE: contextvars.ContextVar[ThreadProfile | None] = contextvars.ContextVar("profile", default=None)


class Failed:
    """What a guarded call returns when the plugin code raised (its failure is recorded)."""

    def __repr__(self) -> str:
        return "FAILED"


FAILED = Failed()


def plugin_of(rule: Rule) -> str:
    """The plugin that registered the rule's type (set by ``core.plugins.rule_types``), else its module."""
    return type(rule).__dict__.get("plugin") or type(rule).__module__


def call_rule(failures: set[Failure], rule: Rule, phase: str, path: str, method: Callable[..., Any],
              *args: Any) -> Any:
    """``method(*args)``, plugin code of ``rule``; if it raises, record the rule as failed and return FAILED."""
    try:
        return method(*args)
    except Exception as exc:  # a plugin's bug must not stop the other rules
        failures.add(run_state.Failure("rule", path, rule.name, f"{type(exc).__name__}: {exc}", plugin_of(rule),
                                       phase))
        log.debug("rule '%s' raised in %s", rule.name, phase, exc_info=True)  # -vv shows the traceback
        return FAILED


def call_each(failures: set[Failure], rules: list[Rule], phase: str, path: str,
              method: Callable[[Rule], Any]) -> list[Any]:
    """``call_rule(..., method, rule)`` for each rule, side by side on up to one thread per CPU.

    For the calls made once everything is merged (the last seal, ``result``): each rule's state
    is its own, and their work is mostly Polars and numpy, which run without the GIL. Each call
    runs in a copy of the caller's context (``core.lines.SOURCES``, say); the results are in the
    rules' order.
    """
    workers = min(len(rules), os.cpu_count() or 1)
    if workers < 2:
        return [call_rule(failures, rule, phase, path, method, rule) for rule in rules]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"omp-{phase}") as pool:
        futures = [pool.submit(contextvars.copy_context().run, _profiled_call, failures, rule, phase, path, method)
                   for rule in rules]
        return [future.result() for future in futures]


def _profiled_call(failures: set[Failure], rule: Rule, phase: str, path: str, method: Callable[[Rule], Any]) -> Any:
    profile = PROFILE.get()
    with profile.thread() if profile is not None else nullcontext():
        return call_rule(failures, rule, phase, path, method, rule)


def announce(failures: Iterable[Failure], hooks: PluginHooks | None) -> None:
    """Log each failure and tell the plugins' ``on_error`` hooks about it."""
    for failure in failures:
        log.error("%s", failure.describe())
        if hooks is not None:
            hooks.on_error(failure.as_error(), failure.path or None, failure.rule or None)


def each_plugin(pm: pluggy.PluginManager, hook: str) -> list[tuple[str, Callable[..., Any]]]:
    """Each plugin implementing ``hook``, in pluggy's call order, with a caller for its implementations alone."""
    impls = list(reversed(getattr(pm.hook, hook).get_hookimpls()))  # pluggy calls the last registered first
    plugins = list({impl.plugin_name: impl.plugin for impl in impls}.items())
    return [
        (name, pm.subset_hook_caller(hook, remove_plugins=[other for n, other in plugins if n != name]))
        for name, _ in plugins
    ]


class PluginHooks:
    """The lifecycle hooks, called one plugin at a time: one that raises is recorded and not called again.

    Its failures (``failures``) describe this process's run: the outputs list them (see
    ``core.run.write_outputs``) and a new run starts without them.
    """

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm
        self._callers: dict[str, list[tuple[str, Callable[..., Any]]]] = {}
        self._lock = threading.Lock()
        self.disabled: set[str] = set()
        self.failures: set[Failure] = set()

    def before_run(self, paths: list[str], settings: dict[str, Any]) -> None:
        self._call("before_run", "", {"paths": paths, "settings": settings})

    def before_file(self, path: str) -> None:
        self._call("before_file", path, {"path": path})

    def after_file(self, path: str, stats: FileStats) -> None:
        self._call("after_file", path, {"path": path, "stats": stats})

    def on_error(self, error: Exception, path: str | None, rule: str | None) -> None:
        self._call("on_error", path or "", {"error": error, "path": path, "rule": rule})

    def after_run(self, summary: dict[str, Any], anomalies: list[dict[str, Any]]) -> None:
        self._call("after_run", "", {"summary": summary, "anomalies": anomalies})

    def _call(self, hook: str, path: str, kwargs: dict[str, Any]) -> None:
        callers = self._callers.get(hook)
        if callers is None:
            callers = self._callers[hook] = each_plugin(self._pm, hook)
        for plugin, caller in callers:
            if plugin in self.disabled:
                continue
            try:
                caller(**kwargs)
            except Exception as exc:  # a plugin's bug must not stop the run or the other plugins
                self._failed(run_state.Failure("hook", path, "", f"{type(exc).__name__}: {exc}", plugin, hook))
                log.debug("plugin '%s' raised in %s", plugin, hook, exc_info=True)

    def _failed(self, failure: Failure) -> None:
        with self._lock:
            self.disabled.add(failure.plugin)
            self.failures.add(failure)
        # An on_error hook that raises is not told about itself: it is not called again anyway.
        announce([failure], None if failure.phase == "on_error" else self)
