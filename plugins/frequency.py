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
from core.counts import INLINE_BYTES, long_values, positions
from core.tally import Weights
from plugins.detection import (
    DURATION,
    FIELDS,
    INSTANT,
    file_column,
    params_schema,
    sample_locations,
)
from plugins.seasonal import deviance_z
from plugins.windows import (
    MAX_FUTURE,
    MIN_TIME,
    Table,
    Tables,
    WindowedDetector,
    window_rows,
)

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
    # Earlier saved forms: 3 did not count long values' bytes; 2 had no thinning (records per window, levels).
    state_version = 5  # 4 kept every closed flag
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

    def long_key_bytes(self, data: Tables) -> dict[int, int]:
        """A value longer than a string view holds inline (12 bytes) costs its bytes again in each row
        that names it: counted for each of its records, the worst case (users of 60 KB held 20 MB of
        rows against a 16 MB share when only the records were counted)."""
        counts = data["counts"]
        rows, lengths = long_values(counts["key"])
        if not len(rows):
            return {}
        extra = (lengths - INLINE_BYTES) * counts["count"].to_numpy()[rows]
        found: dict[int, int] = {}
        for window, more in zip(counts["window"].to_numpy()[rows].tolist(), extra.tolist(), strict=True):
            found[window] = found.get(window, 0) + more
        return found

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
        # A seal judges a few windows of tens of thousands of (value, window) rows, of which a few
        # dozen reach min_count on usual traffic: only those are joined to their history (one
        # Polars query), and the rest is NumPy over them. A query costs about 0.3 ms whatever its
        # size: joining every judged row to its history and population took 18 of them (0.26 s
        # of a 10M-line run), and copies of the judged rows (most of a seal's memory spikes).
        counts, n = data["counts"], self.lookback
        judged_rows = window_rows(counts, lo, hi)
        if not judged_rows.height:
            return []
        count, window = judged_rows["count"].to_numpy(), judged_rows["window"].to_numpy()
        pick = count >= self.min_count
        start = data["start"]["first_window"].min() if data["start"].height else None
        if start is not None:
            pick &= window - n >= start
        rows = np.flatnonzero(pick)
        if not len(rows):
            return []
        candidates = judged_rows[pl.Series(rows)]
        windows = window[rows]
        own = _own_levels(window_rows(counts, int(windows.min()) - n, int(windows.max())),
                          candidates["key"].to_list(), windows, n)
        # The population's level: records per active value in the window. The judged rows have a
        # row per (value, window); a thinned window holds 1 in 2^level values, and as many again
        # stand behind each one counted.
        if len(window) < 2 or (window[1:] >= window[:-1]).all():
            active = np.searchsorted(window, windows, "right") - np.searchsorted(window, windows, "left")
        else:
            present, many = np.unique(window, return_counts=True)
            active = many[np.searchsorted(present, windows)]
        active = active * 2 ** self.levels_at(windows)
        total = _totals_at(data["totals"], windows)
        population = total / active
        expected = np.fmax(np.fmax(own, population), 0.5)
        observed = count[rows]
        z = deviance_z(observed, expected)
        flagged = np.flatnonzero((z >= self.z) & (observed >= expected * self.ratio))
        if not len(flagged):
            return []
        judged = candidates[pl.Series(flagged)].to_dicts()
        for row, i in zip(judged, flagged.tolist(), strict=True):
            known = not np.isnan(total[i])  # a window without a total has no population level
            row.update(own=float(own[i]), population=float(population[i]) if known else None,
                       expected=float(expected[i]), z=float(z[i]), total=int(total[i]) if known else None)
        wanted = pl.DataFrame({"key": [row["key"] for row in judged], "window": [row["window"] for row in judged]},
                              schema=_KEY)
        near = pl.col("key").is_in(wanted["key"].implode()) & pl.col("window").is_in(wanted["window"].implode())
        located = window_rows(data["samples"], lo, hi).filter(near).join(wanted, on=["key", "window"])
        samples = sample_locations(located, ["key", "window"])
        return [self._flag(row, samples.get((row["key"], row["window"]), [])) for row in judged]

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
                "population_level": None if row["population"] is None else round(row["population"], 3),
                "share": round(row["count"] / row["total"], 6) if row["total"] else None,
                "window_records": row["total"],
            },
        )


def _own_levels(past: pl.DataFrame, keys: list[str], windows: np.ndarray, n: int) -> np.ndarray:
    """Each candidate's own level: its key's records per window in the ``n`` windows before, the largest left out.

    ``past`` holds the rows (key, window, count) of those windows. Only the candidates' keys'
    rows are found (``core.counts.positions``, one pass over the keys), then summed in NumPy: a
    Polars join of every past row to the candidates was a query a seal, 5 ms while the other
    worker ran its own (10M lines of default traffic: 0.3 s of 60 seals).
    """
    own = np.zeros(len(keys))
    distinct = list(dict.fromkeys(keys))
    found, which = positions(past["key"], distinct)
    if not len(found):
        return own
    # Rows ordered by (key, window): each candidate's are one run, found by two binary searches.
    at = past["window"].to_numpy()[found]
    base = min(int(windows.min()) - n, int(at.min()))
    span = max(int(windows.max()), int(at.max())) - base + 1
    code = which * span + (at - base)
    order = np.argsort(code, kind="stable")
    code, count = code[order], past["count"].to_numpy()[found][order]
    number = {key: i for i, key in enumerate(distinct)}
    start = np.array([number[key] for key in keys], dtype=np.int64) * span + (windows - base)
    lo, hi = np.searchsorted(code, start - n), np.searchsorted(code, start)
    total = np.concatenate([[0], np.cumsum(count)])
    largest = np.zeros(len(keys), dtype=count.dtype)
    for step in range(int((hi - lo).max())):  # a run has a row per window at most (n), once folded
        inside = lo + step < hi
        largest = np.where(inside, np.maximum(largest, count[np.minimum(lo + step, len(count) - 1)]), largest)
    seen = hi > lo
    own[seen] = (total[hi] - total[lo] - largest)[seen] / (n - 1)
    return own


def _totals_at(totals: pl.DataFrame, windows: np.ndarray) -> np.ndarray:
    """The ``total`` of each of ``windows`` in a table of (window, total), NaN where it has none."""
    order = np.argsort(totals["window"].to_numpy(), kind="stable")
    known, values = totals["window"].to_numpy()[order], totals["total"].to_numpy()[order]
    total = np.full(len(windows), np.nan)
    if len(known):
        at = np.minimum(np.searchsorted(known, windows), len(known) - 1)
        hit = known[at] == windows
        total[hit] = values[at[hit]]
    return total


def sample_one_in(min_count: int) -> int:
    """The largest power of two at most ``min_count / SAMPLE_CANDIDATES``, and at least 1."""
    return 1 << max(0, (min_count // SAMPLE_CANDIDATES).bit_length() - 1)


@hookimpl
def register_rule_types(register: Any) -> None:
    register(Frequency)
