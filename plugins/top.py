"""``top_k``: the names with the most records for a field, with the counts behind them."""

from __future__ import annotations

from typing import Any

import polars as pl

from core import Result, Rule, hookimpl
from plugins.counting import FIELDS, CountTable


class TopK(Rule):
    """The ``limit`` values of ``field`` with the most records, ties broken by name ascending."""

    type_name = "top_k"
    description = "The values of a field with the most records (top services, top users)."
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["field"],
        "properties": {
            "field": {"enum": list(FIELDS)},
            "limit": {"type": "integer", "minimum": 1, "maximum": 10000},
        },
    }
    result_schema = {"type": "array", "items": {"type": "string"}}

    def setup(self, field: str, limit: int = 10) -> None:
        self.field = field
        self.limit = limit
        self.counts = CountTable(pl.String())

    def update(self, batch: Any) -> None:
        self.counts.add_values(batch.frame[self.field])

    def merge(self, other: TopK) -> None:
        self.counts.merge(other.counts)

    def result(self) -> Result:
        top = self.counts.frame().head(self.limit)
        return Result(top["key"].to_list(), dict(top.iter_rows()))


@hookimpl
def register_rule_types(register: Any) -> None:
    register(TopK)
