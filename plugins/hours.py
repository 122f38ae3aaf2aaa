"""``peak_hours``: the UTC hours of the day with the most records, and the 24-hour histogram."""

from __future__ import annotations

from typing import Any

from core import Result, Rule, hookimpl
from core.parse import Batch
from core.rules import WITHOUT_MESSAGE
from core.tally import EVER, shared


def hour_label(hour: int) -> str:
    """``12`` -> ``12:00-13:00``; the last hour wraps to ``23:00-00:00``."""
    return f"{hour:02d}:00-{(hour + 1) % 24:02d}:00"


_US_PER_HOUR = 3_600_000_000


def hour_counts(batch: Batch) -> list[int]:
    """Records per UTC hour of day, hour 0 first. One compiled pass counts them per hour since the
    epoch (a batch spans a few dozen), without the GIL; ``timeline`` reads the same pass."""
    totals = shared(batch, counts_only=True, width=_US_PER_HOUR, lo=-EVER, hi=EVER, line=None, sample_limit=0,
                    top=0, tables=("totals",)).totals
    by_hour = [0] * 24
    for hour, count in zip(totals["window"].to_list(), totals["count"].to_list(), strict=True):
        by_hour[hour % 24] += count  # a floored modulo: before 1970 too
    return by_hour


class PeakHours(Rule):
    """The ``limit`` busiest hours of day (UTC), ties by hour ascending; hours with no record are never peaks.

    The state is 24 counts, in a Python list: a Polars table per batch for so few values cost more
    than counting them.
    """

    columns = WITHOUT_MESSAGE
    many_files = True
    state_version = 2  # 1 kept a CountTable

    type_name = "peak_hours"
    description = "The busiest hours of the day (UTC), with the 24-hour volume histogram."
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"limit": {"type": "integer", "minimum": 1, "maximum": 24}},
    }
    result_schema = {
        "type": "array",
        "items": {"type": "string", "pattern": r"^([01][0-9]|2[0-3]):00-([01][0-9]|2[0-3]):00$"},
    }

    def setup(self, limit: int = 3) -> None:
        self.limit = limit
        self.by_hour = [0] * 24

    def update(self, batch: Any) -> None:
        self.by_hour = [a + b for a, b in zip(self.by_hour, hour_counts(batch), strict=True)]

    def state_weight(self) -> float:
        return 0.1  # a count per hour of the day: 24 numbers

    def merge(self, other: PeakHours) -> None:
        self.by_hour = [a + b for a, b in zip(self.by_hour, other.by_hour, strict=True)]

    def result(self) -> Result:
        counts = self.by_hour
        ranked = sorted((hour for hour in range(24) if counts[hour]), key=lambda hour: (-counts[hour], hour))
        peaks = [hour_label(hour) for hour in ranked[: self.limit]]
        histogram = {hour_label(hour): count for hour, count in enumerate(counts)}
        return Result(peaks, {"hourly_volume": histogram})


@hookimpl
def register_rule_types(register: Any) -> None:
    register(PeakHours)
