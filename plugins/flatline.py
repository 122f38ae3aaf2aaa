"""``flatline``: a service that goes quiet, judged per epoch-aligned event-time window.

Records are counted per value of ``field`` (``service``) and window. A window of a value is
judged once it is complete (a later record of any value has been seen) and the value *had
traffic*: the mean of its ``baseline_windows`` previous windows (empty windows count as zero)
is at least ``min_baseline``. It is flagged when its count is below ``threshold`` (absolute), or
below ``fraction`` x that baseline. ElastAlert's flatline is the ``threshold`` half.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from core import hookimpl
from core.tally import Weights
from plugins.detection import DURATION, FIELDS, INSTANT, params_schema
from plugins.windows import MAX_FUTURE, MIN_TIME, Table, Tables, WindowedDetector, first_windows, in_range

if TYPE_CHECKING:
    from core.parse import Batch
    from core.tally import Tally

_KEY = {"key": pl.String(), "window": pl.Int64()}


class Flatline(WindowedDetector):
    """Flag a window in which a value of ``field`` that had traffic falls below its threshold or baseline."""

    type_name = "flatline"
    description = "A service whose volume in a window falls below a threshold or a fraction of its baseline."
    default_severity = "high"
    params_schema = params_schema({
        "field": {"enum": list(FIELDS)},
        "timeframe": DURATION,
        "threshold": {"type": ["integer", "null"], "minimum": 1},
        "fraction": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
        "baseline_windows": {"type": "integer", "minimum": 1, "maximum": 1000},
        "min_baseline": {"type": "number", "minimum": 0},
        "retention": DURATION,
        "min_time": INSTANT,
        "max_future": DURATION,
    })
    tables = {
        "counts": Table({**_KEY, "count": pl.Int64()}, keys=("key", "window"), sums=("count",),
                        tallied=Weights(counts="count")),
        "firsts": Table({"key": pl.String(), "first_window": pl.Int64()}, keys=("key",),
                        mins=("first_window",), windowed=False),
    }
    events = ("counts", "count")
    sample_limit = 0  # a quiet window has no line to point at
    tally_tables = ("groups",)

    def setup(
        self,
        field: str = "service",
        timeframe: int | str = "10m",
        threshold: int | None = None,
        fraction: float | None = 0.1,
        baseline_windows: int = 6,
        min_baseline: float = 20,
        retention: int | str = "1d",
        min_time: str = MIN_TIME,
        max_future: int | str = MAX_FUTURE,
        severity: str = "high",
    ) -> None:
        if threshold is None and fraction is None:
            raise ValueError("threshold, fraction: expected at least one of them set, got both null")
        self.field = field
        self.threshold = threshold
        self.fraction = fraction
        self.min_baseline = min_baseline
        self.init_windows(timeframe, retention, baseline_windows, min_time, max_future)

    def tally_keys(self) -> list[str]:
        return [self.field]

    def batch_tables(self, batch: Batch, found: Tally) -> Tables:
        counts = found.groups.frame(key=self.field, window="window", count="count")
        return {"counts": counts, "firsts": first_windows(counts, "key")}

    def verdicts(self, data: Tables, lo: int | None, hi: int | None) -> list[dict[str, Any]]:
        if not self.newest:
            return []
        # Only complete windows: the newest record's window may still be filling.
        newest = self.newest[0] // self.width
        hi = newest if hi is None else min(hi, newest)
        judged = self._judge(data).filter(in_range(lo, hi) & pl.col("flag"))
        return [self._anomaly(row) for row in judged.iter_rows(named=True)]

    def _judge(self, data: Tables) -> pl.DataFrame:
        """Every window that has or follows traffic of a key (within the lookback), with its baseline."""
        n, counts = self.lookback, data["counts"]
        # Quiet windows have no rows: add, for each window with traffic, the n windows after it.
        after = counts.select("key", pl.col("window") + pl.int_ranges(0, n + 1)).explode("window").unique()
        grid = after.join(counts, on=["key", "window"], how="left").with_columns(pl.col("count").fill_null(0))
        base = pl.col("count").rolling_sum_by("window", f"{n}i", closed="left").over("key")
        frame = grid.sort("key", "window").with_columns(baseline=base / n).join(data["firsts"], on="key")
        low = pl.lit(False)
        if self.threshold is not None:
            low = low | (pl.col("count") < self.threshold)
        if self.fraction is not None:
            low = low | (pl.col("count") < pl.col("baseline") * self.fraction)
        eligible = (pl.col("baseline") >= self.min_baseline) & (pl.col("window") - n >= pl.col("first_window"))
        return frame.with_columns(flag=eligible & low & (pl.col("baseline") > 0))

    def _anomaly(self, row: dict[str, Any]) -> dict[str, Any]:
        baseline = row["baseline"]
        relative = None if self.fraction is None else baseline * self.fraction
        limits = [x for x in (self.threshold, relative) if x is not None]
        start, end = self.window_bounds(row["window"])
        return self.anomaly(
            key=row["key"],
            window=(start, end),
            count=row["count"],
            observed=row["count"],
            expected=round(baseline, 3),
            threshold=round(max(limits), 3),
            # A quiet window is about records that are missing: there is no line to point at.
            samples=[],
            first_seen=None,
            detail={
                "field": self.field,
                "baseline_windows": self.lookback,
                "fraction": self.fraction,
                "absolute_threshold": self.threshold,
            },
        )


@hookimpl
def register_rule_types(register: Any) -> None:
    register(Flatline)
