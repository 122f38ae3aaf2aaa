"""Every hook the engine calls, in one place; plugins implement them with ``@hookimpl``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    from core.alertconfig import Alerter
    from core.rules import Rule
    from core.stats import FileStats
    from core.writers import OutputWriter

#: One namespace feeds the markers, the plugin manager and the entry-point group.
NAMESPACE = "ohmypayments"

hookspec = pluggy.HookspecMarker(NAMESPACE)
hookimpl = pluggy.HookimplMarker(NAMESPACE)


# -- start-up ---------------------------------------------------------------------------------


@hookspec
def register_rule_types(register: Callable[[type[Rule]], None]) -> None:
    """Register the rule types this plugin provides.

    :param register: call it once per rule type class (a subclass of ``core.Rule``).
    :returns: nothing; registration happens through ``register``.

    Called once at start-up, before the rule files are validated.
    """


@hookspec
def register_output_writers(register: Callable[[OutputWriter], None]) -> None:
    """Register writers of more output files, made from the two documents after each commit.

    :param register: call it once per writer: an object with ``name`` (its file in the output
        folder), ``min_interval`` (the fewest seconds between two renders in watch mode) and
        ``render(summary, anomalies, *, watching) -> str | bytes`` (see ``core.writers``).
    :returns: nothing; registration happens through ``register``.

    Called once at start-up.
    """


@hookspec
def register_alerters(register: Callable[[type[Alerter]], None]) -> None:
    """Register the alert destination types this plugin provides (what ``alerts.destinations[].type`` names).

    :param register: call it once per destination type class (a subclass of ``core.alerts.Alerter``
        with a ``type_name``, a ``params_schema`` for its fields and a ``send(message)`` method).
    :returns: nothing; registration happens through ``register``.

    Called once at start-up, before the ``alerts:`` block of the settings is validated.
    """


# -- run lifecycle ----------------------------------------------------------------------------


@hookspec
def before_run(paths: list[str], settings: dict[str, Any]) -> None:
    """Prepare for a run over the given files.

    :param paths: the files the run will read, in processing order.
    :param settings: the validated settings, as a plain mapping.
    :returns: nothing.

    Called once per run, after configuration is validated and before any file is read.
    """


@hookspec
def after_run(summary: dict[str, Any], anomalies: list[dict[str, Any]]) -> None:
    """See the final outputs of a run.

    :param summary: the validated ``summary.json`` document, as written.
    :param anomalies: the validated anomaly list, as written.
    :returns: nothing.

    Called once per run, after the outputs are written.
    """


# -- per file ---------------------------------------------------------------------------------


@hookspec
def before_file(path: str) -> None:
    """Note that a file is about to be read.

    :param path: the file's path.
    :returns: nothing.

    Called once per file, before its first chunk is parsed.
    """


@hookspec
def after_file(path: str, stats: FileStats) -> None:
    """See a file's counts once every chunk of it is processed.

    :param path: the file's path.
    :param stats: its lines, records, blank and malformed counts, bytes and timing.
    :returns: nothing.

    Called once per file, after all of its chunks went through every rule.
    """


@hookspec
def on_error(error: Exception, path: str | None, rule: str | None) -> None:
    """Hear about a failure the run survives (an unreadable file, a failing rule, another plugin's failing hook).

    :param error: the exception: the ``OSError`` of an unreadable file, or a ``core.errors.PluginFailed``
        naming the plugin, the phase, the file and the rule (None for a hook).
    :param path: the file being worked on, if any.
    :param rule: the failing rule's name, if a rule failed.
    :returns: nothing.

    Called when the failure happens; the run goes on. An implementation that raises is not called
    again in the run, and is not told about its own failure.
    """
