"""Output writers: more outputs, made from the two checked documents after each commit (an HTML report, say).

A plugin registers a writer with the ``register_output_writers`` hook. After every commit (the end
of a batch run, each watch-mode commit), once summary.json and anomalies.json are written, each
writer renders its file from those two documents, and the file is written atomically into the
output folder. A writer that raises is named in ``rule_errors`` (as a hook that raised, phase
``write_output``) and not called again in that run; the other writers and the documents stand.
In watch mode a writer is called at most every ``min_interval`` seconds; a commit it skipped is
rendered once that time has passed, and at shutdown.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pluggy

from core.guard import each_plugin
from core.output import atomic_write
from core.state import Failure

log = logging.getLogger(__name__)


class OutputWriter(Protocol):
    """Renders one output file from the two checked documents."""

    #: The file's name in the output folder, e.g. ``report.html``.
    name: str
    #: In watch mode, the fewest seconds between two renders (0: every commit).
    min_interval: float

    def render(self, summary: dict[str, Any], anomalies: dict[str, Any], *, watching: bool) -> str | bytes:
        """The file's content; ``watching`` is true in watch mode (a page may then refresh itself)."""
        ...


@dataclass
class _Registered:
    plugin: str
    writer: OutputWriter
    last: float = float("-inf")  # when it last rendered (monotonic seconds)
    pending: bool = False  # a commit it has not rendered yet


class Writers:
    """The output writers of one run or one watcher."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._writers: list[_Registered] = []
        for plugin, call in each_plugin(pm, "register_output_writers"):
            call(register=lambda writer, plugin=plugin: self._writers.append(_Registered(plugin, writer)))
        self.failures: set[Failure] = set()
        self._documents: tuple[dict[str, Any], dict[str, Any]] | None = None

    @property
    def names(self) -> list[str]:
        return [r.writer.name for r in self._writers]

    def write(self, output_dir: Path, summary: dict[str, Any], anomalies: dict[str, Any], *,
              watching: bool) -> bool:
        """Render every writer due from the documents of a commit; returns whether one failed."""
        self._documents = (summary, anomalies)
        for registered in self._writers:
            registered.pending = True
        return self.flush(output_dir, watching=watching, force=not watching)

    def flush(self, output_dir: Path, *, watching: bool, force: bool = False) -> bool:
        """Render the writers with a commit pending whose interval has passed (all with ``force``)."""
        failed = False
        if self._documents is None:
            return failed
        summary, anomalies = self._documents
        now = time.monotonic()
        for registered in self._writers:
            writer = registered.writer
            if not registered.pending or (not force and now - registered.last < writer.min_interval):
                continue
            registered.pending, registered.last = False, now
            try:
                content = writer.render(summary, anomalies, watching=watching)
                atomic_write(output_dir / writer.name, content.encode("utf-8") if isinstance(content, str)
                             else content, shared=True)
            except Exception as exc:  # a writer's bug must not stop the run or the other outputs
                failed = True
                self.failures.add(Failure("hook", "", "", f"{type(exc).__name__}: {exc}", registered.plugin,
                                          "write_output"))
                log.error("plugin '%s' failed to write %s: %s: %s", registered.plugin, writer.name,
                          type(exc).__name__, exc)
                log.debug("output writer %s raised", writer.name, exc_info=True)
        self._writers = [r for r in self._writers if not any(f.plugin == r.plugin for f in self.failures)]
        return failed
