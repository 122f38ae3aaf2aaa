"""``timestamp``: records whose timestamp parses but cannot be right, and how many did not parse at all.

- ``future``: later than processing time plus ``max_future``. Processing time is the wall clock
  when the batch is folded in (or the fixed ``now`` parameter, for reproducible runs);
- ``before_min_time``: earlier than ``min_time`` (which catches the epoch, 1970-01-01);
- ``late`` (only with ``max_lateness``): more than ``max_lateness`` behind the newest timestamp of
  an *earlier line of the same file* (arrival order is line order, not processing order);
- ``stray``: a plausible time far from the times of the lines around it (``limits.stray_clock_seconds``,
  ``core.parse.stray_rows``): such records are counted everywhere but in the rules that place
  records in event time, and this says how many there were;
- ``unparseable``: lines whose timestamp field is not a real instant (malformed ``bad_timestamp``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import numpy as np
import polars as pl

from core import Result, hookimpl, safestate
from core.parse import Batch
from core.tally import EVER, sample_places, shared
from plugins.detection import (
    DURATION,
    INSTANT,
    SAMPLE_LIMIT,
    Detector,
    duration_us,
    epoch_us,
    instant_us,
    iso,
    params_schema,
    sample_locations,
)
from plugins.windows import Table, shifted

_STATS = Table(
    {"kind": pl.String(), "count": pl.Int64(), "first": pl.Int64(), "last": pl.Int64(), "worst": pl.Int64()},
    keys=("kind",), sums=("count",), mins=("first",), maxs=("last", "worst"), windowed=False,
)
_SAMPLES = Table({"kind": pl.String(), "file": pl.Categorical(), "line": pl.Int64()}, keys=("kind",),
                 samples=True, windowed=False)
#: Per chunk, the records that may still turn out late once earlier chunks are known: the smallest.
CANDIDATES = 1000
_SEVERITY = {"future": "high", "before_min_time": "high", "late": "medium", "stray": "medium", "unparseable": "low"}


@safestate.register
@dataclass
class Run:
    """A stretch of one file's lines, for lateness: its newest timestamp and its open candidates.

    ``candidates`` are records not late against earlier lines *of the run*, which may still be
    late against lines before it; only the ``CANDIDATES`` smallest timestamps are kept, and
    ``bound`` is the smallest one dropped (None if none was), beyond which a count is a lower bound.
    """

    file: str
    first_line: int
    last_line: int
    newest: int | None
    candidates: pl.DataFrame = field(repr=False)
    bound: int | None = None


class TimestampCheck(Detector):
    """Count timestamps in the future, before ``min_time``, late within their file, or unparseable."""

    type_name = "timestamp"
    many_files = True  # samples are placed by each record's file (``core.tally.sample_places``)
    description = "Timestamps that parse but cannot be right (future, too early, late), and unparseable ones."
    default_severity = "high"
    params_schema = params_schema({
        "max_future": DURATION,
        "min_time": INSTANT,
        "max_lateness": {"anyOf": [DURATION, {"type": "null"}]},
        "now": {"anyOf": [INSTANT, {"type": "null"}]},
    })

    def setup(
        self,
        max_future: int | str = "5m",
        min_time: str = "2000-01-01T00:00:00Z",
        max_lateness: int | str | None = None,
        now: str | None = None,
        severity: str | None = None,
        **incident_params: Any,  # max_incidents, min_severity, realert: read by ``publish``
    ) -> None:
        self.max_future = duration_us(max_future)
        self.min_time = instant_us(min_time)
        self.max_lateness = None if max_lateness is None else duration_us(max_lateness)
        self.now = None if now is None else instant_us(now)
        self.stats = _STATS.empty()
        self.samples = _SAMPLES.empty()
        self.unparseable = 0
        self.inexact = False
        self.runs: list[Run] = []

    #: Set on a partial whose lines are numbered from the start of a byte range (``Batch.relative``):
    #: there, a run from line 1 may have lines before it. Cleared once the committer moves them.
    relative_lines: bool = False

    def update(self, batch: Batch) -> None:
        if batch.relative:
            self.relative_lines = True
        self.unparseable += int(batch.malformed.get("bad_timestamp", 0))
        if batch.frame.is_empty():
            return
        limit = (self.now if self.now is not None else batch.now) + self.max_future
        us = batch.frame["ts"].to_physical()  # microseconds; min and max of a Series run no query
        if self.max_lateness is None and us.min() >= self.min_time and us.max() <= limit:
            if batch.stray is not None:  # every stray is in range
                strays = batch.frame[batch.stray].select("file", "line", us=epoch_us(), kind=pl.lit("stray"))
                self._add(strays)
            return  # no timestamp out of range
        if (self.max_lateness is None and batch.stray is None and self.stats.is_empty()
                and self.samples.is_empty()):
            self.stats, self.samples = self._tallied(batch, limit)  # a fresh partial, as the engine's are
            return
        frame = batch.frame.select("file", "line", us=epoch_us())
        kind = pl.when(pl.col("us") > limit).then(pl.lit("future")).when(pl.col("us") < self.min_time)
        kind = kind.then(pl.lit("before_min_time"))
        if batch.stray is not None:  # a stray in range: not one to measure lateness against either
            stray = np.zeros(frame.height, dtype=bool)
            stray[batch.stray] = True
            kind = kind.when(pl.Series(stray)).then(pl.lit("stray"))
        frame = frame.with_columns(kind=kind)
        odd = frame.filter(pl.col("kind").is_not_null())
        if self.max_lateness is not None:  # late against earlier lines of the same file
            files = frame.partition_by("file", maintain_order=True) if batch.files else [frame]
            odd = pl.concat([odd.with_columns(lateness=pl.lit(None, pl.Int64)), *map(self._lateness, files)],
                            how="vertical_relaxed")
        self._add(odd)

    def _tallied(self, batch: Batch, limit: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Stats and samples of the batch's future and too early records, from two compiled tallies.

        Dirty logs have a few in nearly every batch; this is a pass each and a handful of rows
        put together in Python, where the queries of ``_fold`` cost more than the rest of the rule.
        """
        stats, samples = [], []
        for kind, lo, hi in (("future", limit + 1, EVER), ("before_min_time", -EVER, min(self.min_time - 1, limit))):
            found = shared(batch, width=EVER, lo=lo, hi=hi, sample_limit=SAMPLE_LIMIT, top=0,
                           tables=("groups", "samples"))
            if not found.groups.height:  # windows -1 and 0: before and after 1970
                continue
            groups = found.groups
            stats.append((kind, sum(groups["count"]), min(groups["first"]), max(groups["last"]), None))
            samples += [(kind, *place) for place in sorted(sample_places(batch, found))[:SAMPLE_LIMIT]]
        return (pl.DataFrame(stats, schema=_STATS.schema, orient="row"),
                pl.DataFrame(samples, schema=_SAMPLES.schema, orient="row"))

    def _lateness(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Records late against earlier lines of this batch; the others become the batch's run.

        Only plausible timestamps take part: a record from 2099 is reported as future, and must
        not make every record after it look late.
        """
        file, first, last = frame["file"][0], int(frame["line"].min()), int(frame["line"].max())
        frame = frame.filter(pl.col("kind").is_null()).sort("line").with_columns(before=pl.col("us").cum_max().shift(1))
        late = pl.col("us") < pl.col("before") - self.max_lateness
        open_ = frame.filter(~late.fill_null(False)).select("us", "line")
        self.runs.append(_shortlist(Run(file, first, last, frame["us"].max(), open_)))
        self._join_runs()
        return frame.filter(late).select(
            "file", "line", "us", kind=pl.lit("late"), lateness=pl.col("before") - pl.col("us")
        )

    def _add(self, odd: pl.DataFrame) -> None:
        self.stats, self.samples = _fold(self.stats, self.samples, odd)

    def state_weight(self) -> float:
        return 0.5  # a few runs of implausible records per file

    def shift_lines(self, path: str, by: int) -> None:
        self.samples = shifted(self.samples, path, by)
        self.runs = [run if run.file != path else
                     Run(run.file, run.first_line + by, run.last_line + by, run.newest,
                         run.candidates.with_columns(pl.col("line") + by), run.bound)
                     for run in self.runs]
        self.__dict__.pop("relative_lines", None)  # the state saved keeps its layout

    def merge(self, other: TimestampCheck) -> None:
        self.unparseable += other.unparseable
        self.inexact |= other.inexact
        if not (other.stats.is_empty() and other.samples.is_empty()):  # usual: nothing implausible
            self.stats = _STATS.reduce([self.stats, other.stats])
            self.samples = _SAMPLES.reduce([self.samples, other.samples])
        self.runs.extend(other.runs)
        self._join_runs()

    def subject(self, key: str) -> dict[str, Any]:
        return {"timestamp": key}

    def result(self) -> Result:
        pending, inexact = self._pending_late()
        stats, samples = _fold(self.stats, self.samples, pending)
        locations = sample_locations(samples, ["kind"])
        found = [
            self._anomaly(row, locations.get((row["kind"],), []), inexact)
            for row in stats.sort("kind").iter_rows(named=True)
        ]
        if self.unparseable:
            found.append(self.anomaly(
                key="unparseable", severity=self._severity("unparseable"), count=self.unparseable,
                observed=self.unparseable, threshold=0,
                detail={"reason": "lines whose timestamp is not a real instant (malformed: bad_timestamp); "
                                  "see malformed_samples in summary.json"},
            ))
        return self.publish(self.as_incidents(found))

    # -- lateness across chunks ---------------------------------------------------------------

    def _join_runs(self) -> None:
        """Fold runs that follow each other without a gap; a run from line 1 has nothing before it."""
        joined: list[Run] = []
        for run in sorted(self.runs, key=lambda r: (r.file, r.first_line)):
            if run.first_line == 1 and run.candidates.height and not self.relative_lines:
                run = Run(run.file, 1, run.last_line, run.newest, run.candidates.clear())
            previous = joined[-1] if joined else None
            if previous is not None and previous.file == run.file and previous.last_line + 1 == run.first_line:
                joined[-1] = self._combine(previous, run)
            else:
                joined.append(run)
        self.runs = joined

    def _combine(self, before: Run, after: Run) -> Run:
        late, rest, inexact = self._split_late(after, before.newest)
        self._add(late)
        self.inexact |= inexact
        bounds = [b for b in (before.bound, after.bound) if b is not None]
        merged = Run(before.file, before.first_line, after.last_line, _latest(before.newest, after.newest),
                     pl.concat([before.candidates, rest]), min(bounds) if bounds else None)
        return _shortlist(merged)

    def _split_late(self, run: Run, newest: int | None) -> tuple[pl.DataFrame, pl.DataFrame, bool]:
        """Split ``run``'s candidates into late (against ``newest``, the newest earlier line) and the rest."""
        if newest is None:
            return pl.DataFrame(), run.candidates, False
        cutoff = newest - self.max_lateness
        is_late = pl.col("us") < cutoff
        late = run.candidates.filter(is_late).select(
            pl.lit(run.file).alias("file"), "line", "us", kind=pl.lit("late"), lateness=newest - pl.col("us")
        )
        # Dropped candidates lie at or beyond the bound; below the cutoff some of them were late too.
        inexact = run.bound is not None and run.bound < cutoff
        return late, run.candidates.filter(~is_late), inexact

    def _pending_late(self) -> tuple[pl.DataFrame, bool]:
        """Late records of runs whose predecessor is not known to be adjacent, judged in line order.

        When results are read every chunk read so far is present, so the runs of a file, in line
        order, cover what was read of it; the first is where the file starts.
        """
        found: list[pl.DataFrame] = []
        inexact = self.inexact
        for _, runs in groupby(self.runs, key=lambda r: r.file):
            newest: int | None = None
            for run in runs:
                if newest is not None and run.candidates.height:
                    late, _, dropped = self._split_late(run, newest)
                    found.append(late)
                    inexact |= dropped
                newest = _latest(newest, run.newest)
        return (pl.concat(found) if found else pl.DataFrame()), inexact

    def _severity(self, kind: str) -> str:
        return self.params.get("severity") or _SEVERITY[kind]

    def _anomaly(self, row: dict[str, Any], samples: list[str], inexact: bool) -> dict[str, Any]:
        kind = row["kind"]
        common = {"key": kind, "severity": self._severity(kind), "count": row["count"], "samples": samples,
                  "first_seen": row["first"], "last_seen": row["last"]}
        if kind == "future":
            limit = "processing time + " + (f"{self.max_future // 1_000_000}s")
            return self.anomaly(**common, observed=iso(row["last"]), threshold=limit,
                                detail={"max_future_seconds": self.max_future // 1_000_000,
                                        "now": iso(self.now) if self.now is not None else "wall clock"})
        if kind == "before_min_time":
            return self.anomaly(**common, observed=iso(row["first"]), threshold=iso(self.min_time))
        if kind == "stray":
            return self.anomaly(**common, observed=row["count"], threshold="limits.stray_clock_seconds",
                                detail={"reason": "records stamped far from the lines around them: counted, but "
                                                  "left out of the detectors' windows and the timeline"})
        return self.anomaly(
            **common, observed=row["worst"] / 1_000_000, threshold=self.max_lateness / 1_000_000,
            detail={"unit": "seconds behind the newest earlier line of the same file",
                    "count_is_lower_bound": inexact},
        )


def _fold(stats: pl.DataFrame, samples: pl.DataFrame, odd: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``stats`` and ``samples`` with the odd records of ``odd`` (file, line, us, kind, lateness) added."""
    if odd.is_empty():
        return stats, samples
    worst = pl.col("lateness").max() if "lateness" in odd.columns else pl.lit(None, pl.Int64)
    found = odd.group_by("kind").agg(count=pl.len(), first=pl.col("us").min(), last=pl.col("us").max(), worst=worst)
    return _STATS.reduce([stats, _STATS.conform(found)]), _SAMPLES.reduce([samples, _SAMPLES.conform(odd)])


def _latest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _shortlist(run: Run) -> Run:
    """Keep the ``CANDIDATES`` smallest timestamps of a run; the next one becomes (or lowers) its bound."""
    if run.candidates.height <= CANDIDATES:
        return run
    ordered = run.candidates.sort("us", "line")
    cut = int(ordered["us"][CANDIDATES])
    bound = cut if run.bound is None else min(run.bound, cut)
    return Run(run.file, run.first_line, run.last_line, run.newest, ordered.head(CANDIDATES), bound)


@hookimpl
def register_rule_types(register: Any) -> None:
    register(TimestampCheck)
