"""``error_spike``: a window whose failure *rate* is far above what was expected of it.

Failure-like records (``statuses``) and all records are counted per epoch-aligned window of
``timeframe`` (per value of ``by``, or over all traffic). Each window's expected failure rate
comes from ``plugins.seasonal``: the median rate at the same time of day on previous days (or of
the week, for weekly traffic), otherwise of the recent windows, flagged windows left out. The
window is flagged when its failures are surprising under a binomial model given its records
(z >= ``z``, after the dispersion the series has shown) *and* at least ``ratio`` times the expected
failures and ``min_count`` of them. More traffic at the same rate is therefore never a spike.
Flagged windows of a key join into incidents (``plugins.incidents``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from core import hookimpl
from core.columns import constant
from core.tally import Weights
from plugins.detection import DURATION, FIELDS, INSTANT, STATUS_LIST, file_column, params_schema, sample_locations
from plugins.seasonal import SeasonalDetector
from plugins.windows import MAX_FUTURE, MIN_TIME, Table, Tables

if TYPE_CHECKING:
    from core.columns import Columns
    from core.parse import Batch
    from core.tally import Tally
    from plugins.runs import Runs

_GROUP = {"key": pl.String(), "window": pl.Int64()}
#: The key of all records judged together.
ALL = "all"


class ErrorSpike(SeasonalDetector):
    """Flag windows whose failure rate is surprisingly far above its seasonal expectation."""

    type_name = "error_spike"
    many_files = True  # samples are placed by each record's file (``plugins.detection.file_column``)
    description = "A burst of failures: a failure rate far above what the same time of day had, and not by chance."
    default_severity = "high"
    # Earlier saved forms: 4 did not thin its keys; 3 kept every array of its judged windows over four weeks.
    state_version = 6  # 5 kept every closed flag
    rate = True
    params_schema = params_schema({
        "statuses": STATUS_LIST,
        "timeframe": DURATION,
        "z": {"type": "number", "exclusiveMinimum": 0},
        "ratio": {"type": "number", "minimum": 1},
        "min_count": {"type": "integer", "minimum": 0},
        "min_score": {"type": "number", "minimum": 0},
        "max_gap": {"type": "integer", "minimum": 0, "maximum": 1000},
        "spike_type": {"enum": ["up", "down", "both"]},
        "by": {"enum": [None, *FIELDS]},
        "overall": {"type": "boolean"},
        "retention": DURATION,
        "min_time": INSTANT,
        "max_future": DURATION,
    })
    tables = {
        "counts": Table(
            {**_GROUP, "count": pl.Int64(), "total": pl.Int64(), "first": pl.Int64(), "last": pl.Int64()},
            keys=("key", "window"), sums=("count", "total"), mins=("first",), maxs=("last",),
            tallied=Weights(counts="total", flagged="count", first="first", last="last"),
        ),
        "samples": Table({**_GROUP, "file": pl.Categorical(), "line": pl.Int64()}, keys=("key", "window"),
                         samples=True),
    }
    events = ("counts", "total")
    tally_tables = ("groups", "samples")
    row_bytes = 160  # a counts row and up to three samples
    whole_keys = frozenset({ALL})

    def setup(
        self,
        statuses: tuple[str, ...] | list[str] = ("FAILURE", "ERROR"),
        timeframe: int | str = "10m",
        z: float = 4.0,
        ratio: float = 1.5,
        min_count: int = 10,
        min_score: float = 15.0,
        max_gap: int = 6,
        spike_type: str = "up",
        by: str | None = None,
        overall: bool = True,
        retention: int | str = "1d",
        min_time: str = MIN_TIME,
        max_future: int | str = MAX_FUTURE,
        severity: str = "high",
        **incident_params: Any,
    ) -> None:
        self.statuses = list(statuses)
        self.min_count = self.least_flagged = min_count
        self.by = by
        # With ``by``, all records are also judged together (key ``all``): a spike spread over
        # every service can be too thin in each to be surprising there.
        self.overall = overall and by is not None
        self.keeps_rest = self.overall  # the records of keys thinned out still count in ``all``
        self.init_windows(timeframe, retention, 0, min_time, max_future)
        self.init_model(z, ratio, spike_type in ("up", "both"), spike_type in ("down", "both"), min_score, max_gap)

    def tally_keys(self) -> list[str]:
        return [self.by] if self.by else []

    def key_noun(self) -> str:
        return f"values of {self.by}"

    def tally_flag(self) -> tuple[str, list[str]]:
        return ("status", self.statuses)

    def subject(self, key: str) -> dict[str, Any]:
        scope = {self.by: key} if self.by and not (self.overall and key == ALL) else {"records": "all"}
        return {**scope, "statuses": self.statuses}

    def batch_tables(self, batch: Batch, found: Tally) -> Tables:
        groups, samples = found.groups, found.samples
        counts = groups.frame(key=self._groups(groups), window="window", count="flagged", total="count",
                              first="first", last="last")
        located = samples.frame(key=self._groups(samples), window="window",
                                file=file_column(batch, samples), line="line")
        return {"counts": counts, "samples": located}

    def verdicts(self, data: Tables, lo: int | None, hi: int | None) -> list[dict[str, Any]]:
        if self.overall:  # all records together, as key ``all``: summed here, once per judged span
            counts = data["counts"]
            overall = counts.group_by("window").agg(pl.col("count", "total").sum(), pl.col("first").min(),
                                                    pl.col("last").max()).with_columns(key=pl.lit(ALL))
            data = {**data, "counts": pl.concat([counts, overall.select(counts.columns)])}
        return super().verdicts(data, lo, hi)

    def _groups(self, table: Columns) -> pl.Series:
        return table[self.by] if self.by else constant(ALL, table.height, pl.String())

    def windowed_incidents(self, flags: list[dict[str, Any]], newest: int | None, gap: int,
                           min_score: float | dict[str, float], runs: Runs | None = None) -> list[dict[str, Any]]:
        found = super().windowed_incidents(flags, newest, gap, min_score, runs)
        if not self.overall:
            return found
        # ``all`` is for a spike spread thin over many values: one that overlaps an incident of a
        # value is that value's, and is not listed twice.
        own = [(f["window_start"], f["window_end"]) for f in found if f["key"] != ALL]
        return [f for f in found if f["key"] != ALL
                or not any(start < f["window_end"] and f["window_start"] < end for start, end in own)]

    def flags(self, data: Tables, flagged: list[tuple[str, int, float, float, float, float]]) -> list[dict[str, Any]]:
        kept = [f for f in flagged if f[2] >= self.min_count or f[2] < f[3]]
        if not kept:
            return []
        windows = {(key, window) for key, window, *_ in kept}
        wanted = pl.DataFrame({"key": [k for k, _ in windows], "window": [w for _, w in windows]},
                              schema=_GROUP)
        located = data["samples"]
        overall = [window for key, window in windows if key == ALL]
        if self.overall and overall:  # key ``all``'s samples are every key's, in its flagged windows only
            everyone = located.filter(pl.col("window").is_in(overall)).with_columns(key=pl.lit(ALL))
            located = pl.concat([located, everyone])
        samples = sample_locations(located.join(wanted, on=["key", "window"]), ["key", "window"])
        times = {(k, w): (a, b) for k, w, a, b in
                 data["counts"].join(wanted, on=["key", "window"]).select("key", "window", "first", "last").rows()}
        return [self._flag(row, samples.get(row[:2], []), times.get(row[:2], (None, None))) for row in kept]

    def _flag(self, row: tuple[str, int, float, float, float, float], samples: list[str],
              times: tuple[int | None, int | None]) -> dict[str, Any]:
        key, window, failures, expected, z, records = row
        return self.anomaly(
            key=key,
            kind="spike" if z > 0 else "drop",
            score=round(abs(z), 3),
            window=self.window_bounds(window),
            count=int(failures),
            observed=int(failures),
            expected=round(expected, 3),
            samples=samples,
            first_seen=times[0],
            last_seen=times[1],
            _w=window,
            detail={
                "records": int(records),
                "failure_rate": round(failures / records, 6) if records else None,
                "expected_failure_rate": round(expected / records, 6) if records else None,
                "statuses": self.statuses,
            },
        )


@hookimpl
def register_rule_types(register: Any) -> None:
    register(ErrorSpike)
