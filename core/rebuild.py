"""Build the state of the rules that are new or changed from the files still in the data folder.

Only those rules are built; the others keep theirs. Each file is read from its first byte up to
the offset the ledger has counted, no further: the rebuilt rules then stand exactly where the
others do, and the bytes after the offset are read next, for every rule, as usual. A file no
longer there, or no longer the file that was counted, is left out (its counts are lost for these
rules, as they are for every rule when a checkpoint is rebuilt whole).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import pluggy

from core import hookspecs
from core.checkpoint import Checkpoint, rule_fingerprint
from core.engine import Pipeline
from core.guard import PluginHooks
from core.ledger import Ledger, Work
from core.rules import Rule
from core.settings import Settings
from core.sources import DEFAULT_SOURCES, Source, choose
from core.state import RunState

log = logging.getLogger(__name__)


def rebuild_marked(settings: Settings, rules: list[Rule], checkpoint: Checkpoint,
                   stop: threading.Event | None = None, readers: Sequence[Source] = DEFAULT_SOURCES) -> None:
    """Build the rules in ``checkpoint.rebuild`` from what the ledger counted, then clear the mark.

    Stopped by ``stop`` before the end, what was built is kept but not fingerprinted: the next
    start builds it again.
    """
    chosen = [rule for rule in rules if rule.name in checkpoint.rebuild]
    checkpoint.rebuild.clear()
    if not chosen:
        return
    works = counted_works(settings, checkpoint.ledger, readers)
    side = Checkpoint(RunState.empty(chosen), Ledger())
    # Plugins' hooks are not told of these files again: they saw them when they were first read.
    quiet = _no_plugins()
    with Pipeline(settings, chosen, quiet, stop=stop, hooks=PluginHooks(quiet)) as pipeline:
        pipeline.committer.log_files = False  # the log's file lines are the files read, once each
        pipeline.process(works, side, final=True)
        lines = pipeline.lines_read
    stopped = stop is not None and stop.is_set()
    built = side.state.rules
    checkpoint.state.rules = {rule.name: built.get(rule.name) or checkpoint.state.rules[rule.name]
                              for rule in rules if rule.name in built or rule.name in checkpoint.state.rules}
    checkpoint.state.failures |= {f for f in side.state.failures if f.kind == "rule"}
    if not stopped:
        checkpoint.rules.update({rule.name: rule_fingerprint(rule) for rule in chosen if rule.name in built})
    names = ", ".join(f"'{rule.name}'" for rule in chosen)
    log.info("rebuilt rule%s %s from %d file%s still in the data folder (%d lines)%s",
                "s" if len(chosen) > 1 else "", names, len(works), "s" if len(works) != 1 else "", lines,
                "; stopped before the end: built again at the next start" if stopped else "")


def counted_works(settings: Settings, ledger: Ledger, readers: Sequence[Source] = DEFAULT_SOURCES) -> list[Work]:
    """The counted bytes of each file still in the data folder, in name order, each read by its source."""
    works = (ledger.counted(name, settings.data_dir / name, choose(name, readers)) for name in sorted(ledger.entries))
    return [work for work in works if work is not None]


def _no_plugins() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.NAMESPACE)
    pm.add_hookspecs(hookspecs)
    return pm
