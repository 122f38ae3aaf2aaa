"""``peak_hours``: the UTC hours of the day with the most records, and the 24-hour histogram."""

from __future__ import annotations

from typing import Any

import polars as pl

from core import Result, Rule, hookimpl
from core.rules import WITHOUT_MESSAGE
from core.tally import EVER, tally
from plugins.counting import CountTable


def hour_label(hour: int) -> str:
    """``12`` -> ``12:00-13:00``; the last hour wraps to ``23:00-00:00``."""
    return f"{hour:02d}:00-{(hour + 1) % 24:02d}:00"


_US_PER_HOUR = 3_600_000_000


def hour_counts(frame: pl.DataFrame) -> pl.DataFrame:
    """Records per UTC hour of day: ``key`` (Int8, each hour once) and ``count``. One compiled pass
    counts them per hour since the epoch (a batch spans a few dozen), without the GIL."""
    totals = tally(frame, width=_US_PER_HOUR, lo=-EVER, hi=EVER, line=None, sample_limit=0, top=0,
                   tables=("totals",)).totals
    by_hour: dict[int, int] = {}
    for hour, count in zip(totals["window"].to_list(), totals["count"].to_list(), strict=True):
        by_hour[hour % 24] = by_hour.get(hour % 24, 0) + count  # a floored modulo: before 1970 too
    return pl.DataFrame({"key": list(by_hour), "count": list(by_hour.values())},
                        schema={"key": pl.Int8(), "count": pl.Int64()})


class PeakHours(Rule):
    """The ``limit`` busiest hours of day (UTC), ties by hour ascending; hours with no record are never peaks."""

    columns = WITHOUT_MESSAGE

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
        self.counts = CountTable(pl.Int8())

    def update(self, batch: Any) -> None:
        self.counts.add(hour_counts(batch.frame))

    def merge(self, other: PeakHours) -> None:
        self.counts.merge(other.counts)

    def result(self) -> Result:
        ranked = self.counts.frame()
        peaks = [hour_label(h) for h in ranked["key"].head(self.limit).to_list()]
        by_hour = dict(ranked.iter_rows())
        histogram = {hour_label(h): by_hour.get(h, 0) for h in range(24)}
        return Result(peaks, {"hourly_volume": histogram})


@hookimpl
def register_rule_types(register: Any) -> None:
    register(PeakHours)
