"""``error_spike``: a window with far more failures than its baseline, ElastAlert's spike rule by event time.

Failure-like records (``statuses``) are counted per epoch-aligned window of ``timeframe``. The
*current* count is a window's failures; the *reference* is the mean of the ``baseline_windows``
windows before it (ElastAlert's ``ref`` window, for ``baseline_windows: 1``). A window is a spike
when, as in ElastAlert's ``find_matches``:

- ``up``:   current >= reference x ``spike_height``;  ``down``: current <= reference / ``spike_height``;
- current >= ``min_count`` (ElastAlert's ``threshold_cur``) and reference >= ``min_baseline``
  (``threshold_ref``);
- the whole reference period lies after the first record of the group (ElastAlert does not
  alert before its reference window has filled once: ``alert_on_new_data: false``).

With ``measure: rate`` (or ``both``, the default) the failure *rate* (failures / records) is
compared the same way with the pooled rate of the reference windows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from core import hookimpl
from core.columns import constant
from core.tally import Weights
from plugins.detection import DURATION, FIELDS, INSTANT, STATUS_LIST, file_column, params_schema, sample_locations
from plugins.windows import MAX_FUTURE, MIN_TIME, Table, Tables, WindowedDetector, first_windows, in_range

if TYPE_CHECKING:
    from core.columns import Columns
    from core.parse import Batch
    from core.tally import Tally

_GROUP = {"group": pl.String(), "window": pl.Int64()}


class ErrorSpike(WindowedDetector):
    """Flag windows whose failure count or rate spikes against the mean of the windows before it."""

    type_name = "error_spike"
    description = "A burst of failures: a window with spike_height times its baseline's failures or failure rate."
    default_severity = "high"
    params_schema = params_schema({
        "statuses": STATUS_LIST,
        "timeframe": DURATION,
        "spike_height": {"type": "number", "minimum": 1},
        "spike_type": {"enum": ["up", "down", "both"]},
        "baseline_windows": {"type": "integer", "minimum": 1, "maximum": 1000},
        "min_count": {"type": "integer", "minimum": 0},
        "min_baseline": {"type": "number", "minimum": 0},
        "measure": {"enum": ["count", "rate", "both"]},
        "by": {"enum": [None, *FIELDS]},
        "retention": DURATION,
        "min_time": INSTANT,
        "max_future": DURATION,
    })
    tables = {
        "counts": Table(
            {**_GROUP, "failures": pl.Int64(), "total": pl.Int64(), "first": pl.Int64(), "last": pl.Int64()},
            keys=("group", "window"), sums=("failures", "total"), mins=("first",), maxs=("last",),
            tallied=Weights(counts="total", flagged="failures", first="first", last="last"),
        ),
        "samples": Table({**_GROUP, "file": pl.Categorical(), "line": pl.Int64()}, keys=("group", "window"),
                         samples=True),
        "firsts": Table({"group": pl.String(), "first_window": pl.Int64()}, keys=("group",),
                        mins=("first_window",), windowed=False),
    }
    events = ("counts", "total")
    tally_tables = ("groups", "samples")

    def setup(
        self,
        statuses: tuple[str, ...] | list[str] = ("FAILURE", "ERROR"),
        timeframe: int | str = "10m",
        spike_height: float = 3,
        spike_type: str = "up",
        baseline_windows: int = 6,
        min_count: int = 20,
        min_baseline: float = 0,
        measure: str = "both",
        by: str | None = None,
        retention: int | str = "1d",
        min_time: str = MIN_TIME,
        max_future: int | str = MAX_FUTURE,
        severity: str = "high",
    ) -> None:
        self.statuses = list(statuses)
        self.spike_height = spike_height
        self.spike_type = spike_type
        self.min_count = min_count
        self.min_baseline = min_baseline
        self.measure = measure
        self.by = by
        self.init_windows(timeframe, retention, baseline_windows, min_time, max_future)

    def tally_keys(self) -> list[str]:
        return [self.by] if self.by else []

    def tally_flag(self) -> tuple[str, list[str]]:
        return ("status", self.statuses)

    def batch_tables(self, batch: Batch, found: Tally) -> Tables:
        groups, samples = found.groups, found.samples
        counts = groups.frame(group=self._groups(groups), window="window", failures="flagged", total="count",
                              first="first", last="last")
        return {
            "counts": counts,
            "samples": samples.frame(group=self._groups(samples), window="window",
                                     file=file_column(batch, samples.height), line="line"),
            "firsts": first_windows(counts, "group"),
        }

    def _groups(self, table: Columns) -> pl.Series:
        return table[self.by] if self.by else constant("all", table.height, pl.String())

    def verdicts(self, data: Tables, lo: int | None, hi: int | None) -> list[dict[str, Any]]:
        judged = self._judge(data).filter(in_range(lo, hi) & pl.col("flag"))
        if judged.is_empty():
            return []
        samples = sample_locations(data["samples"].filter(in_range(lo, hi)), ["group", "window"])
        rows = judged.iter_rows(named=True)
        return [self._anomaly(row, samples.get((row["group"], row["window"]), [])) for row in rows]

    def _judge(self, data: Tables) -> pl.DataFrame:
        n = self.lookback
        def base(column: str) -> pl.Expr:  # the sum over the n windows before each window
            return pl.col(column).rolling_sum_by("window", f"{n}i", closed="left").over("group")

        frame = (
            data["counts"].sort("group", "window")
            .with_columns(base_failures=base("failures"), base_total=base("total"))
            .join(data["firsts"], on="group")
            .with_columns(
                baseline=pl.col("base_failures") / n,
                rate=pl.col("failures") / pl.col("total"),
                base_rate=pl.when(pl.col("base_total") > 0).then(pl.col("base_failures") / pl.col("base_total")),
            )
        )
        newest = self.newest[0] // self.width if self.newest else None
        # A window still filling up cannot be judged low yet.
        complete = pl.col("window") < newest if newest is not None else pl.lit(False)
        wanted = {"up": (True, False), "down": (False, True), "both": (True, True)}[self.spike_type]
        up, down = (pl.lit(w) for w in wanted)
        height = self.spike_height
        count_up = up & (pl.col("failures") >= pl.col("baseline") * height) & (self.measure != "rate")
        count_down = down & complete & (pl.col("failures") <= pl.col("baseline") / height) & (self.measure != "rate")
        rate_up = up & (pl.col("rate") >= pl.col("base_rate") * height) & (self.measure != "count")
        rate_down = down & complete & (pl.col("rate") <= pl.col("base_rate") / height) & (self.measure != "count")
        eligible = (
            (pl.col("failures") >= self.min_count)
            & (pl.col("baseline") >= self.min_baseline)
            & (pl.col("window") - n >= pl.col("first_window"))
        )
        hits = [e.fill_null(False) for e in (count_up, count_down, rate_up, rate_down)]
        return frame.with_columns(
            by_count=hits[0] | hits[1],
            by_rate=hits[2] | hits[3],
            up=hits[0] | hits[2],
        ).with_columns(flag=eligible & (pl.col("by_count") | pl.col("by_rate")))

    def _anomaly(self, row: dict[str, Any], samples: list[str]) -> dict[str, Any]:
        baseline, height = row["baseline"], self.spike_height
        needed = max(self.min_count, baseline * height) if row["up"] else baseline / height
        return self.anomaly(
            key=row["group"],
            window=self.window_bounds(row["window"]),
            count=row["failures"],
            observed=row["failures"],
            expected=round(baseline, 3),
            threshold=round(needed, 3),
            samples=samples,
            first_seen=row["first"],
            last_seen=row["last"],
            detail={
                "direction": "up" if row["up"] else "down",
                "triggered_by": [m for m in ("count", "rate") if row[f"by_{m}"]],
                "records": row["total"],
                "failure_rate": round(row["rate"], 6),
                "baseline_failure_rate": None if row["base_rate"] is None else round(row["base_rate"], 6),
                "baseline_windows": self.lookback,
                "statuses": self.statuses,
            },
        )


@hookimpl
def register_rule_types(register: Any) -> None:
    register(ErrorSpike)
