"""``count_by``: how many records carry each value of a field (e.g. ``payment_statuses``)."""

from __future__ import annotations

from typing import Any

from core import Result, Rule, hookimpl
from plugins.counting import FIELDS, HeavyHitters


class CountBy(Rule):
    """Count records per value of ``field``; every value seen is reported while the counts fit.

    A field with more distinct values than the rule's share of ``limits.memory_mb`` holds (users,
    in a large file) switches to a frequent items sketch: then only the values certainly more
    frequent than the sketch's error bound are reported, with estimated counts, and the detail
    says so.
    """

    type_name = "count_by"
    description = "Count records per value of a field (status, service or user)."
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["field"],
        "properties": {"field": {"enum": list(FIELDS)}},
    }
    result_schema = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}}

    def setup(self, field: str) -> None:
        self.field = field
        self.counts = HeavyHitters()

    def limit_state(self, max_bytes: int) -> None:
        super().limit_state(max_bytes)
        self.counts.limit(max_bytes)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.counts = HeavyHitters.upgrade(self.counts)  # a checkpoint written before the memory cap

    def update(self, batch: Any) -> None:
        self.counts.add_values(batch.frame[self.field])

    def merge(self, other: CountBy) -> None:
        self.counts.merge(other.counts)

    def result(self) -> Result:
        if self.counts.approximate:
            return Result(dict(self.counts.frequent(guaranteed=True)), self.counts.describe())
        return Result(dict(self.counts.frame().iter_rows()))


@hookimpl
def register_rule_types(register: Any) -> None:
    register(CountBy)
