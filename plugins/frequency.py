"""``frequency``: one value of a field (a user, by default) with too many records in a window.

Windows are *bucketed*: epoch-aligned, ``timeframe`` long, not sliding, so an anomaly's window and
id never move as more data arrives. A value is flagged in a window when it has at least
``num_events`` records there, or (``max_share``) when it holds at least that share of all records
of the window and at least ``min_count`` records. A burst that straddles two buckets is counted
in both halves; size ``num_events`` for the half you still want to catch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from core import hookimpl
from core.tally import Weights
from plugins.detection import DURATION, FIELDS, INSTANT, file_column, params_schema, sample_locations
from plugins.windows import MAX_FUTURE, MIN_TIME, Table, Tables, WindowedDetector, in_range

if TYPE_CHECKING:
    from core.parse import Batch
    from core.tally import Tally

_KEY = {"key": pl.String(), "window": pl.Int64()}


class Frequency(WindowedDetector):
    """Flag a value of ``field`` with ``num_events`` records, or ``max_share`` of all traffic, in a window."""

    type_name = "frequency"
    description = "One user (or service, or status) with too many records, or too large a share, in a window."
    default_severity = "medium"
    params_schema = params_schema({
        "field": {"enum": list(FIELDS)},
        "num_events": {"type": ["integer", "null"], "minimum": 1},
        "timeframe": DURATION,
        "max_share": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
        "min_count": {"type": "integer", "minimum": 1},
        "retention": DURATION,
        "min_time": INSTANT,
        "max_future": DURATION,
    })
    tables = {
        "counts": Table({**_KEY, "count": pl.Int64(), "first": pl.Int64(), "last": pl.Int64()},
                        keys=("key", "window"), sums=("count",), mins=("first",), maxs=("last",),
                        tallied=Weights(counts="count", first="first", last="last")),
        "totals": Table({"window": pl.Int64(), "total": pl.Int64()}, keys=("window",), sums=("total",),
                        tallied=Weights(counts="total")),
        "samples": Table({**_KEY, "file": pl.Categorical(), "line": pl.Int64()}, keys=("key", "window"),
                         samples=True, keep_all=True),
    }
    events = ("totals", "total")
    #: A band is folded whole on every few merges, and its counts have a row per (user, window):
    #: an hour's band keeps that fold small on a busy log (6 hours took 4 ms a merge at 10M lines).
    band_us = 3600 * 1_000_000

    def setup(
        self,
        field: str = "user",
        num_events: int | None = 300,
        timeframe: int | str = "10m",
        max_share: float | None = 0.2,
        min_count: int = 50,
        retention: int | str = "1h",
        min_time: str = MIN_TIME,
        max_future: int | str = MAX_FUTURE,
        severity: str = "medium",
    ) -> None:
        if num_events is None and max_share is None:
            raise ValueError("num_events, max_share: expected at least one of them set, got both null")
        self.field = field
        self.num_events = num_events
        self.max_share = max_share
        self.min_count = min_count
        self.init_windows(timeframe, retention, 0, min_time, max_future)

    def tally_keys(self) -> list[str]:
        return [self.field]

    def batch_tables(self, batch: Batch, found: Tally) -> Tables:
        groups, samples = found.groups, found.samples
        return {
            "counts": groups.frame(key=self.field, window="window", count="count", first="first", last="last"),
            "totals": found.totals.frame(window="window", total="count"),
            "samples": samples.frame(key=self.field, window="window", file=file_column(batch, samples.height),
                                     line="line"),
        }

    def verdicts(self, data: Tables, lo: int | None, hi: int | None) -> list[dict[str, Any]]:
        by_count = pl.col("count") >= self.num_events if self.num_events is not None else pl.lit(False)
        by_share = (
            (pl.col("share") >= self.max_share) & (pl.col("count") >= self.min_count)
            if self.max_share is not None else pl.lit(False)
        )
        # Either test needs at least this many records: the join then sees a few rows, not every key's.
        least = min(n for n in (self.num_events, self.min_count if self.max_share is not None else None) if n)
        judged = (
            data["counts"].filter(in_range(lo, hi) & (pl.col("count") >= least))
            .join(data["totals"], on="window")
            .with_columns(share=pl.col("count") / pl.col("total"))
            .with_columns(by_count=by_count, by_share=by_share)
            .filter(pl.col("by_count") | pl.col("by_share"))
        )
        if judged.is_empty():
            return []
        wanted = judged.select("key", "window")
        near = pl.col("key").is_in(wanted["key"].implode()) & pl.col("window").is_in(wanted["window"].implode())
        samples = sample_locations(data["samples"].filter(near).join(wanted, on=["key", "window"]), ["key", "window"])
        rows = judged.iter_rows(named=True)
        return [self._anomaly(row, samples.get((row["key"], row["window"]), [])) for row in rows]

    def _anomaly(self, row: dict[str, Any], samples: list[str]) -> dict[str, Any]:
        by_count = row["by_count"]
        return self.anomaly(
            key=row["key"],
            window=self.window_bounds(row["window"]),
            count=row["count"],
            observed=row["count"] if by_count else round(row["share"], 6),
            threshold=self.num_events if by_count else self.max_share,
            samples=samples,
            first_seen=row["first"],
            last_seen=row["last"],
            detail={
                "field": self.field,
                "triggered_by": [m for m in ("count", "share") if row[f"by_{m}"]],
                "share": round(row["share"], 6),
                "window_records": row["total"],
                "num_events": self.num_events,
                "max_share": self.max_share,
            },
        )


@hookimpl
def register_rule_types(register: Any) -> None:
    register(Frequency)
