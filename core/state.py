"""Everything a run accumulates, as one mergeable, picklable value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core import guard, safestate
from core.errors import PluginFailed, RuleExecutionFailed
from core.rules import Rule
from core.stats import FileStats, FileTotals, fold_oldest, merge_file_stats


@safestate.register
@dataclass(frozen=True, order=True)
class Failure:
    """A rule, a plugin's hook or a file that failed; the run went on without it.

    ``kind`` is ``rule`` (a rule's method raised), ``hook`` (a plugin's hook raised) or ``file``
    (a file could not be read). ``path`` is the file being worked on, "" when there was none.
    """

    kind: str
    path: str
    rule: str
    error: str
    plugin: str = ""
    phase: str = ""

    def as_dict(self) -> dict[str, Any]:
        if self.kind == "file":
            return {"file": self.path, "error": self.error}
        return {"rule": self.rule or None, "plugin": self.plugin, "phase": self.phase,
                "file": self.path or None, "error": self.error}

    def describe(self) -> str:
        """One line for the log: who failed, in what, on which file, and what the run does about it."""
        where = f" on {self.path}" if self.path else ""
        if self.kind == "rule":
            return (f"rule '{self.rule}' (plugin '{self.plugin}') failed in {self.phase}{where}: {self.error}; "
                    "the run goes on without this rule")
        if self.kind == "hook":
            return (f"plugin '{self.plugin}' failed in {self.phase}{where}: {self.error}; "
                    "its hooks are not called again in this run")
        return self.error

    def as_error(self) -> PluginFailed:
        """The exception the ``on_error`` hooks are given: a ``RuleExecutionFailed`` for a rule."""
        kind = RuleExecutionFailed if self.kind == "rule" else PluginFailed
        return kind(self.describe(), plugin=self.plugin, phase=self.phase, path=self.path or None,
                    rule=self.rule or None)


@dataclass
class RunState:
    """Rule states, per-file counts and failures; ``merge`` is associative and commutative.

    ``files`` holds the files merged most recently, in the order of their last merge;
    ``keep_recent_files`` folds the older ones into ``earlier``.
    """

    rules: dict[str, Rule]
    files: dict[str, FileStats] = field(default_factory=dict)
    failures: set[Failure] = field(default_factory=set)
    earlier: FileTotals = field(default_factory=FileTotals)

    @classmethod
    def empty(cls, rules: list[Rule], failed: frozenset[str] = frozenset(), path: str = "") -> RunState:
        """A state with a fresh partial of every rule not ``failed``; a rule whose ``setup`` raises is failed."""
        state = cls({})
        for rule in rules:
            if rule.name not in failed and rule.setup_error is None:
                fresh = guard.call_rule(state.failures, rule, "setup", path, rule.empty)
                if fresh is not guard.FAILED:
                    state.rules[rule.name] = fresh
        return state

    def failed_rules(self) -> set[str]:
        return {f.rule for f in self.failures if f.kind == "rule"}

    def merge(self, other: RunState, path: str = "") -> None:
        """Fold ``other`` (a partial of ``path``) into this state; a rule whose ``merge`` raises is failed."""
        failed = self.failed_rules() | other.failed_rules() if self.failures or other.failures else set()
        for name, rule in other.rules.items():
            if name not in failed and name in self.rules:
                guard.call_rule(self.failures, self.rules[name], "merge", path, self.rules[name].merge, rule)
        merge_file_stats(self.files, other.files)
        self.earlier.merge(other.earlier)
        self.failures |= other.failures

    def shift_lines(self, path: str, by: int) -> None:
        """Move the line numbers of ``path`` by ``by`` in every rule (``Rule.shift_lines``): a raising rule fails."""
        failed = self.failed_rules() if self.failures else set()
        for name, rule in self.rules.items():
            if name not in failed:
                guard.call_rule(self.failures, rule, "merge", path, rule.shift_lines, path, by)

    def keep_recent_files(self, keep: int) -> None:
        """Keep the counts of the ``keep`` most recently merged files one by one; fold the others."""
        fold_oldest(self.files, self.earlier, keep)

    def seal(self, path: str = "", side_by_side: bool = False) -> None:
        """Seal every rule that has not failed; a rule whose seal raises is failed like any other.

        ``side_by_side`` seals the rules on up to one thread per CPU (``guard.call_each``): for the
        last seal of a run, when no chunk work is left to share the CPUs with.
        """
        failed = self.failed_rules()
        rules = [rule for name, rule in self.rules.items() if name not in failed]
        if side_by_side:
            guard.call_each(self.failures, rules, "seal", path, _seal_last)
            return
        for rule in rules:
            guard.call_rule(self.failures, rule, "seal", path, _seal, rule)

    def rule_failures(self) -> list[Failure]:
        """The first failure of each failed rule (first by file name), for reporting."""
        first: dict[str, Failure] = {}
        for failure in sorted(f for f in self.failures if f.kind == "rule"):
            first.setdefault(failure.rule, failure)
        return sorted(first.values(), key=lambda f: f.rule)

    def plugin_failures(self) -> list[Failure]:
        """What ``rule_errors`` lists: each failed rule's first failure, then each failed hook's, by plugin."""
        hooks = sorted((f for f in self.failures if f.kind == "hook"), key=lambda f: (f.plugin, f.phase, f.path))
        return self.rule_failures() + hooks


def _seal(rule: Rule) -> None:
    rule.seal()
    rule.note_state_size()


def _seal_last(rule: Rule) -> None:
    """The last seal of a pass: and the state compacted, as results are read from it (``Rule.compact``)."""
    rule.seal()
    rule.compact()
    rule.note_state_size()
