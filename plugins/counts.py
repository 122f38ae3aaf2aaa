"""``count_by``: how many records carry each value of a field (e.g. ``payment_statuses``)."""

from __future__ import annotations

from typing import Any

from core import Result, hookimpl
from plugins.counting import FIELDS, FieldCounts


class CountBy(FieldCounts):
    """Count records per value of ``field``; every value seen is reported while the counts fit.

    A field with more distinct values than the rule's share of ``limits.memory_mb`` holds (users,
    in a large file) switches to a Misra-Gries summary: then only the values certainly more
    frequent than any value it dropped are reported, with estimated counts, and the detail says so.
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

    def result(self) -> Result:
        if self.counts.approximate:
            return Result(dict(self.counts.certain()), self.counts.describe())
        return Result(dict(self.counts.certain()))


@hookimpl
def register_rule_types(register: Any) -> None:
    register(CountBy)
