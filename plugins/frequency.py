"""``frequency``: one value of a field (a user, by default) with far more records than its own history.

Windows are epoch-aligned, ``timeframe`` long. A value's expected count in a window is the larger
of its own recent level, the trimmed mean of its ``history_windows`` previous windows (the
largest left out, so a burst does not excuse its own continuation), and the population's, the
mean records per active value in that window. A window is flagged when the count is at least
``min_count``, at least ``ratio`` times that expectation, and surprising under a Poisson model
(z >= ``z``). A steady heavy user is therefore never flagged, however large its share; a new burst
is. The first ``history_windows`` windows after the first record are not judged.

A flagged window's samples are its earliest records among the 1 in 2^k that a hash of their value
and time picks, k such that a window of ``min_count`` records holds about ``SAMPLE_CANDIDATES`` of
them (1 in 8 at the default 100; every record below 24). Keeping every record's location until its
window closed cost about a tenth of a run on default traffic, where nearly every (user, window)
has a record or two and none is ever flagged. The same records are picked in every run and split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from core import hookimpl
from core.tally import Weights
from plugins.detection import DURATION, FIELDS, INSTANT, file_column, params_schema, sample_locations
from plugins.seasonal import deviance_z
from plugins.windows import MAX_FUTURE, MIN_TIME, Table, Tables, WindowedDetector, window_rows

if TYPE_CHECKING:
    from core.parse import Batch
    from core.tally import Tally

_KEY = {"key": pl.String(), "window": pl.Int64()}
#: A window of ``min_count`` records has about this many that can be its samples (5 are shown).
SAMPLE_CANDIDATES = 12


class Frequency(WindowedDetector):
    """Flag a value of ``field`` whose count in a window is far above its own history and the population's."""

    type_name = "frequency"
    many_files = True  # samples are placed by each record's file (``plugins.detection.file_column``)
    description = "One user (or service, or status) with far more records in a window than its own history."
    default_severity = "medium"
    state_version = 3  # 2 had no thinning (records per window, levels)
    params_schema = params_schema({
        "field": {"enum": list(FIELDS)},
        "timeframe": DURATION,
        "min_count": {"type": "integer", "minimum": 1},
        "ratio": {"type": "number", "minimum": 1},
        "z": {"type": "number", "exclusiveMinimum": 0},
        "history_windows": {"type": "integer", "minimum": 2, "maximum": 1000},
        "min_score": {"type": "number", "minimum": 0},
        "max_gap": {"type": "integer", "minimum": 0, "maximum": 1000},
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
        "start": Table({"key": pl.String(), "first_window": pl.Int64()}, keys=("key",), mins=("first_window",),
                       windowed=False),
    }
    events = ("totals", "total")
    #: A band is folded whole on every few merges, and its counts have a row per (user, window):
    #: an hour's band keeps that fold small on a busy log (6 hours took 4 ms a merge at 10M lines).
    band_us = 3600 * 1_000_000
    #: Beyond its share of the memory, windows are thinned to the values (users) whose hash is kept
    #: (see ``WindowedDetector._thin``); the population level is then read from those.
    thin_by = "key"
    #: Its state has a row per (value, window), at most one per record and far fewer where values
    #: repeat, and a sample location per ``sample_one_in`` records. Counted per record (the only
    #: size of a window that does not depend on how the input was split), at the worst case of a
    #: new (value, window) per record. Default traffic holds about half that (10M lines over 3
    #: days: 9.8 MB at most, unthinned), and is thinned to 1 in 2 users at its densest hours.
    bytes_per_record = 48

    def state_weight(self) -> float:
        return 2.0  # a row per (value, window): up to one per record

    @property
    def sample_one_in(self) -> int:  # type: ignore[override]
        return sample_one_in(self.min_count)

    def setup(
        self,
        field: str = "user",
        timeframe: int | str = "10m",
        min_count: int = 100,
        ratio: float = 5.0,
        z: float = 8.0,
        history_windows: int = 6,
        min_score: float = 10.0,
        max_gap: int = 2,
        retention: int | str = "1h",
        min_time: str = MIN_TIME,
        max_future: int | str = MAX_FUTURE,
        severity: str = "medium",
        **incident_params: Any,
    ) -> None:
        self.field = field
        self.min_count = min_count
        self.ratio = ratio
        self.z = z
        self.min_score = min_score
        self.max_gap = max_gap
        self.init_windows(timeframe, retention, history_windows, min_time, max_future)

    @property
    def thin_noun(self) -> str:
        return f"{self.field} values"

    def tally_keys(self) -> list[str]:
        return [self.field]

    def subject(self, key: str) -> dict[str, Any]:
        return {self.field: key}

    def batch_tables(self, batch: Batch, found: Tally) -> Tables:
        groups, samples = found.groups, found.samples
        totals = found.totals.frame(window="window", total="count")
        return {
            "counts": groups.frame(key=self.field, window="window", count="count", first="first", last="last"),
            "totals": totals,
            "samples": samples.frame(key=self.field, window="window", file=file_column(batch, samples),
                                     line="line"),
            "start": pl.DataFrame({"key": ["all"], "first_window": [totals["window"].min()]},
                                  schema={"key": pl.String(), "first_window": pl.Int64()}),
        }

    def verdicts(self, data: Tables, lo: int | None, hi: int | None) -> list[dict[str, Any]]:
        counts, n = data["counts"], self.lookback
        start = data["start"]["first_window"].min() if data["start"].height else None
        judged_rows = window_rows(counts, lo, hi)
        candidates = judged_rows.filter(pl.col("count") >= self.min_count)
        if start is not None:
            candidates = candidates.filter(pl.col("window") - n >= start)
        if candidates.is_empty():
            return []
        # The history of the candidates' values only: a few rows each, found without joining
        # every (value, window) of the span (nearly all of them one-off values).
        history = window_rows(counts, candidates["window"].min() - n, candidates["window"].max()).filter(
            pl.col("key").is_in(candidates["key"].unique().implode()))
        before = (
            history.join(candidates.select("key", pl.col("window").alias("judged")), on="key")
            .filter((pl.col("window") < pl.col("judged")) & (pl.col("window") >= pl.col("judged") - n))
            .group_by("key", "judged").agg(pl.col("count").sum().alias("sum"), pl.col("count").max().alias("max"))
        )
        # Active values per window: the folded table has a row per (value, window), in window order
        # (runs of equal windows: counted in one pass, with no sort or copy of a million windows).
        # Thinned windows hold 1 in 2^level values: as many again stand behind each one counted.
        runs = judged_rows["window"].rle().struct.unnest()
        population = runs.group_by(pl.col("value").alias("window")).agg(active=pl.col("len").sum().cast(pl.Int64))
        population = population.join(data["totals"], on="window", how="left").with_columns(
            active=pl.col("active") * 2 ** self.levels_of(pl.col("window")))
        judged = (
            candidates.join(before, left_on=["key", "window"], right_on=["key", "judged"], how="left")
            .join(population, on="window", how="left")
            .with_columns(own=(pl.col("sum").fill_null(0) - pl.col("max").fill_null(0)) / (n - 1),
                          population=pl.col("total") / pl.col("active"))
            .with_columns(expected=pl.max_horizontal("own", "population", pl.lit(0.5)))
        )
        z = deviance_z(judged["count"].to_numpy(), judged["expected"].to_numpy())
        judged = judged.with_columns(z=pl.Series(z)).filter(
            (pl.col("z") >= self.z) & (pl.col("count") >= pl.col("expected") * self.ratio)
        )
        if judged.is_empty():
            return []
        wanted = judged.select("key", "window")
        near = pl.col("key").is_in(wanted["key"].implode()) & pl.col("window").is_in(wanted["window"].implode())
        located = window_rows(data["samples"], lo, hi).filter(near).join(wanted, on=["key", "window"])
        samples = sample_locations(located, ["key", "window"])
        return [self._flag(row, samples.get((row["key"], row["window"]), [])) for row in judged.iter_rows(named=True)]

    def _flag(self, row: dict[str, Any], samples: list[str]) -> dict[str, Any]:
        return self.anomaly(
            key=row["key"],
            kind="burst",
            score=round(float(np.float64(row["z"])), 3),
            window=self.window_bounds(row["window"]),
            count=row["count"],
            observed=row["count"],
            expected=round(row["expected"], 3),
            samples=samples,
            first_seen=row["first"],
            last_seen=row["last"],
            _w=row["window"],
            detail={
                "field": self.field,
                "own_level": round(row["own"], 3),
                "population_level": round(row["population"], 3),
                "share": round(row["count"] / row["total"], 6) if row["total"] else None,
                "window_records": row["total"],
            },
        )


def sample_one_in(min_count: int) -> int:
    """The largest power of two at most ``min_count / SAMPLE_CANDIDATES``, and at least 1."""
    return 1 << max(0, (min_count // SAMPLE_CANDIDATES).bit_length() - 1)


@hookimpl
def register_rule_types(register: Any) -> None:
    register(Frequency)
