"""The rule contract: a rule type is a class; a configured rule is a mergeable, picklable state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

if TYPE_CHECKING:
    from core.parse import Batch
    from core.redact import Redactor


#: Every record column but ``message`` and ``record_hash``, the two that cost extra to build:
#: what most rules read (see ``Rule.columns``).
WITHOUT_MESSAGE = ("ts", "status", "service", "user", "file", "line")


class Result(NamedTuple):
    """What a rule reports: ``value`` goes under the rule's key, ``detail`` under ``details``."""

    value: Any
    detail: Any = None


class Rule:
    """Base class of every rule type.

    A subclass sets ``type_name`` (what rule files write in ``type:``), ``params_schema`` (a JSON
    Schema for the rule's parameters) and implements ``setup``, ``update``, ``merge`` and
    ``result``. The
    instance holds the rule's state: ``update`` folds in a batch, ``merge`` folds in another
    partial state of the same rule (associative and commutative), ``result`` reads it out. The
    state must pickle, so that partials can move between threads, processes and machines, and it is
    saved to disk through ``core.safestate`` (plain values, frames, arrays and registered classes).
    """

    type_name: ClassVar[str] = ""
    #: ``summary`` rules write into summary.json; ``anomalies`` rules into anomalies.json.
    output: ClassVar[str] = "summary"
    description: ClassVar[str] = ""
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False}
    #: JSON Schema for ``result().value``; checked before any output is written.
    result_schema: ClassVar[dict[str, Any]] = {}
    #: The record columns ``update`` reads (see ``core.parse.RECORD_SCHEMA``); None means all of
    #: them. Leaving out ``message`` and ``record_hash``, the columns that cost extra to build,
    #: speeds up parsing: where no rule reads them they hold ``""`` and 0.
    columns: ClassVar[tuple[str, ...] | None] = None
    #: Whether ``update`` takes a batch of several small files at once (``core.parse.Batch``):
    #: its ``path`` is then ``""``, and each record's ``file`` column names its file. A rule
    #: without it is handed each file's records as a batch of their own, at a few milliseconds
    #: a call more where folders hold thousands of small files.
    many_files: ClassVar[bool] = False
    #: Raised whenever the state's layout changes, so that a checkpoint holding the old layout is
    #: rebuilt from the data rather than read into the new code (see ``core.checkpoint``).
    state_version: ClassVar[int] = 1
    #: Bytes of memory the state may hold, from ``limits.memory_mb``; None until the engine sets it.
    state_bytes: int | None = None
    #: The largest ``state_size`` seen after a seal (see ``note_state_size``).
    state_peak: int = 0
    #: Masks card numbers, e-mail addresses and configured patterns in text a rule reports (an
    #: incident's sample lines, say); None until the engine sets it from the settings.
    redactor: Redactor | None = None
    #: The data folder the records' ``file`` names are relative to (to read a sample line back).
    data_dir: str | None = None
    #: The plugin that registered this rule type; set by the engine when the plugin registers it.
    plugin: ClassVar[str] = ""
    #: Why ``setup`` raised when the rule was built at start-up; None for a rule that was built.
    setup_error: str | None = None

    def __init__(self, name: str, *, key: str | None = None, **params: Any) -> None:
        self.name = name
        self.key = key or name.replace("-", "_")
        self.params = params
        self.setup(**params)

    @classmethod
    def failed_setup(cls, name: str, *, key: str | None, error: str, **params: Any) -> Rule:
        """A rule of this type whose ``setup`` raised at start-up: it keeps its name and never runs."""
        rule = cls.__new__(cls)
        rule.name = name
        rule.key = key or name.replace("-", "_")
        rule.params = params
        rule.setup_error = error
        return rule

    def setup(self, **params: Any) -> None:
        """Take the validated parameters and create the empty state; override with named arguments."""

    def empty(self) -> Rule:
        """A fresh state with the same name, parameters and memory bound, for a new partial."""
        fresh = type(self)(self.name, key=self.key, **self.params)
        if self.state_bytes is not None:
            fresh.limit_state(self.state_bytes)
        if self.redactor is not None:
            fresh.use_redactor(self.redactor)
        return fresh

    def limit_state(self, max_bytes: int) -> None:
        """Keep the state within about ``max_bytes``; the engine calls it before a run, from the cap.

        A rule whose state grows with the data (one count per user, say) should switch to a bounded,
        approximate form beyond it, and say so in its result; the default only records the bound.
        """
        self.state_bytes = max_bytes

    def state_weight(self) -> float:
        """This rule's share of the memory for rule states, relative to the others' (1 by default).

        A rule whose state may grow with the data (per-user counts) asks for more than one that
        stays small (a count per hour of the day).
        """
        return 1.0

    def state_size(self) -> int:
        """Bytes of memory the state holds now, about; summary.json reports it per rule."""
        return 0

    def degraded(self) -> str | None:
        """How the state was made smaller than exact to stay within ``state_bytes``, if it was, in words
        (summary.json reports it per rule); None while the rule is exact."""
        return None

    def note_state_size(self) -> None:
        """Remember the largest ``state_size`` seen; the engine calls it after each seal."""
        self.state_peak = max(self.state_peak, self.state_size())

    def state_report(self) -> dict[str, Any]:
        """The state's memory for summary.json: now, at its largest (after a seal), and its bound."""
        size = self.state_size()
        return {"bytes": size, "peak_bytes": max(size, self.state_peak), "limit_bytes": self.state_bytes}

    def use_redactor(self, redactor: Redactor) -> None:
        """Redact with ``redactor`` every text the result shows; the engine calls it before a run."""
        self.redactor = redactor

    def update(self, batch: Batch) -> None:
        """Fold one batch of records into this state."""
        raise NotImplementedError

    def merge(self, other: Rule) -> None:
        """Fold another partial state of the same rule into this one."""
        raise NotImplementedError

    def result(self) -> Result:
        """Read out the rule's result from its state."""
        raise NotImplementedError

    def shift_lines(self, path: str, by: int) -> None:
        """Add ``by`` to every line number of the file ``path`` that this partial state holds.

        A worker that reads a byte range of a file on its own (``core.work.range_work``, on
        another process or machine) cannot know how many lines came before the range: it numbers
        them from 1, and its batches say so (``Batch.relative``). The committer, which merges in
        read order and so knows, calls this on that partial before merging it. A rule whose state
        holds no line numbers (counts, times) has nothing to do: the default.
        """

    def seal(self) -> None:
        """Drop what can no longer change the result (e.g. windows long closed); optional.

        The engine calls it on the merged state only, between merges in read order and before
        each checkpoint, so that state stays bounded in a long run; ``merge`` never needs to.
        """

    def compact(self) -> None:
        """Put the state in the form results are read from and checkpoints saved in; optional.

        The engine calls it after the last seal of a pass, with the rules side by side, before
        the results are read: work the first ``result`` (or the checkpoint) would do anyway.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
