"""``count_by``: how many records carry each value of a field (e.g. ``payment_statuses``)."""

from __future__ import annotations

from typing import Any

import polars as pl

from core import Result, Rule, hookimpl
from plugins.counting import FIELDS, CountTable


class CountBy(Rule):
    """Count records per value of ``field``; every value seen is reported."""

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
        self.counts = CountTable(pl.String())

    def update(self, batch: Any) -> None:
        self.counts.add_values(batch.frame[self.field])

    def merge(self, other: CountBy) -> None:
        self.counts.merge(other.counts)

    def result(self) -> Result:
        return Result(dict(self.counts.frame().iter_rows()))


@hookimpl
def register_rule_types(register: Any) -> None:
    register(CountBy)
