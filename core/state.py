"""Everything a run accumulates, as one mergeable, picklable value."""

from __future__ import annotations

from dataclasses import dataclass, field

from core import guard
from core.guard import Failure  # also found here by checkpoints saved before core.guard held it
from core.rules import Rule
from core.stats import FileStats, merge_file_stats


@dataclass
class RunState:
    """Rule states, per-file counts and failures; ``merge`` is associative and commutative."""

    rules: dict[str, Rule]
    files: dict[str, FileStats] = field(default_factory=dict)
    failures: set[Failure] = field(default_factory=set)

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
        self.failures |= other.failures

    def seal(self, path: str = "") -> None:
        """Seal every rule that has not failed; a rule whose seal raises is failed like any other."""
        failed = self.failed_rules()
        for name, rule in self.rules.items():
            if name not in failed:
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
