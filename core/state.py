"""Everything a run accumulates, as one mergeable, picklable value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core import safestate
from core.rules import Rule
from core.stats import FileStats, merge_file_stats


@safestate.register
@dataclass(frozen=True, order=True)
class Failure:
    """A rule or a file that failed; the run went on without it."""

    kind: str  # "rule" or "file"
    path: str
    rule: str
    error: str

    def as_dict(self) -> dict[str, Any]:
        entry = {"file": self.path, "error": self.error}
        return {"rule": self.rule, **entry} if self.kind == "rule" else entry


@dataclass
class RunState:
    """Rule states, per-file counts and failures; ``merge`` is associative and commutative."""

    rules: dict[str, Rule]
    files: dict[str, FileStats] = field(default_factory=dict)
    failures: set[Failure] = field(default_factory=set)

    @classmethod
    def empty(cls, rules: list[Rule]) -> RunState:
        """A state with a fresh partial of every rule."""
        return cls({rule.name: rule.empty() for rule in rules})

    def failed_rules(self) -> set[str]:
        return {f.rule for f in self.failures if f.kind == "rule"}

    def merge(self, other: RunState) -> None:
        """Fold ``other`` into this state."""
        for name, rule in other.rules.items():
            self.rules[name].merge(rule)
        merge_file_stats(self.files, other.files)
        self.failures |= other.failures

    def seal(self) -> None:
        """Seal every rule that has not failed; a rule whose seal raises is failed like any other."""
        failed = self.failed_rules()
        for name, rule in self.rules.items():
            if name in failed:
                continue
            try:
                rule.seal()
                rule.note_state_size()
            except Exception as exc:  # a plugin's bug must not stop the other rules
                self.failures.add(Failure("rule", "(seal)", name, f"{type(exc).__name__}: {exc}"))

    def rule_failures(self) -> list[Failure]:
        """The first failure of each failed rule (first by file name), for reporting."""
        first: dict[str, Failure] = {}
        for failure in sorted(f for f in self.failures if f.kind == "rule"):
            first.setdefault(failure.rule, failure)
        return sorted(first.values(), key=lambda f: f.rule)
