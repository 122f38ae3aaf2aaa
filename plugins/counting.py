"""The base of the counting rule types: records per value of a field, exact while the values fit."""

from __future__ import annotations

from typing import Any

from core import Rule
from core.counts import MAX_CAPACITY, KeyCounts
from core.rules import WITHOUT_MESSAGE

#: Fields of a record that counting rules may group by.
FIELDS = ("status", "service", "user")
#: A rule's share of the state memory, relative to other rules (see ``Rule.state_weight``): users
#: and services can number millions; statuses are a handful.
FIELD_WEIGHTS = {"status": 1, "service": 10, "user": 10}
#: The capacity of a table before the engine sets a bound: every value is counted exactly (as far
#: as a table can count).
UNBOUNDED = MAX_CAPACITY


class FieldCounts(Rule):
    """Base of the rule types that count records per value of one ``field`` in a ``KeyCounts``.

    Exact while the distinct values fit the rule's share of ``limits.memory_mb`` (``limit_state``);
    beyond it, a Misra-Gries summary of as many values, and the result says so (see ``describe``).
    """

    columns = WITHOUT_MESSAGE
    many_files = True  # counts do not care which file a record came from
    state_version = 2  # 1 held a Polars table or a DataSketches sketch

    def setup(self, field: str) -> None:
        self.field = field
        self.counts = KeyCounts(UNBOUNDED)

    def state_weight(self) -> float:
        return FIELD_WEIGHTS[self.field]

    def limit_state(self, max_bytes: int) -> None:
        super().limit_state(max_bytes)
        self.counts.limit(KeyCounts.capacity_for(max_bytes))

    def state_size(self) -> int:
        return self.counts.nbytes

    def degraded(self) -> str | None:
        if not self.counts.approximate:
            return None
        return (f"more than {self.counts.capacity:,} distinct {self.field} values (each 43 bytes of a value "
                f"past 12 weighing as one more): counted in a Misra-Gries summary of that many, each count "
                f"within {self.counts.max_error:,} of the true one")

    def update(self, batch: Any) -> None:
        self.counts.add(batch.frame[self.field])

    def merge(self, other: FieldCounts) -> None:
        self.counts.merge(other.counts)
