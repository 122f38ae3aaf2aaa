"""``top_k``: the names with the most records for a field, with the counts behind them."""

from __future__ import annotations

from typing import Any

from core import Result, hookimpl
from plugins.counting import FIELDS, FieldCounts


class TopK(FieldCounts):
    """The ``limit`` values of ``field`` with the most records, ties broken by name ascending.

    Exact while the distinct values fit the rule's share of ``limits.memory_mb``; beyond it, a
    Misra-Gries summary ranks them, and the detail says the list is approximate and by how much
    a count may be off (see ``core.counts.KeyCounts``).
    """

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
        super().setup(field)
        self.limit = limit

    def result(self) -> Result:
        top = self.counts.top(self.limit)
        detail = {"counts": dict(top)}
        if self.counts.approximate:
            detail = {**self.counts.describe(), **detail}
        return Result([key for key, _ in top], detail if self.counts.approximate else dict(top))


@hookimpl
def register_rule_types(register: Any) -> None:
    register(TopK)
