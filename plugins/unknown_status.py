"""``unknown_status``: records whose status is not in the allowed list, one anomaly per unknown status."""

from __future__ import annotations

from typing import Any

import polars as pl

from core import Result, hookimpl
from core.parse import Batch
from core.tally import EVER, tally
from plugins.detection import SAMPLE_LIMIT, STATUS_LIST, STATUSES, Detector, params_schema, sample_locations
from plugins.windows import Table

_STATS = Table({"status": pl.String(), "count": pl.Int64(), "first": pl.Int64(), "last": pl.Int64()},
               keys=("status",), sums=("count",), mins=("first",), maxs=("last",), windowed=False)
_SAMPLES = Table({"status": pl.String(), "file": pl.Categorical(), "line": pl.Int64()}, keys=("status",),
                 samples=True, windowed=False)
#: The key of the anomaly that counts statuses beyond ``max_statuses`` (a status never holds a space).
OTHERS = "(other statuses)"


class UnknownStatus(Detector):
    """Report every status outside ``allowed``: its count, first and last time, and sample lines.

    The state is one row per unknown status, capped at ``max_statuses``: the statuses kept are
    the alphabetically smallest (so the cap does not depend on the order records arrive in), and
    the records of the others are counted together under ``(other statuses)``.
    """

    type_name = "unknown_status"
    description = "A status outside the allowed list."
    default_severity = "medium"
    params_schema = params_schema({
        "allowed": STATUS_LIST,
        "max_statuses": {"type": "integer", "minimum": 1, "maximum": 100000},
    })

    def setup(self, allowed: tuple[str, ...] | list[str] = STATUSES, max_statuses: int = 100,
              severity: str = "medium") -> None:
        self.allowed = list(allowed)
        self.max_statuses = max_statuses
        self.stats = _STATS.empty()
        self.samples = _SAMPLES.empty()
        self.others = 0

    def update(self, batch: Batch) -> None:
        # One compiled pass counts every status (a batch has a handful), with times and samples;
        # dirty logs have a few unknown statuses in nearly every batch.
        found = tally(batch.frame, width=EVER, lo=-EVER, hi=EVER, keys=["status"], sample_limit=SAMPLE_LIMIT, top=0,
                      tables=("groups", "samples"))
        groups, allowed = found.groups, set(self.allowed)
        statuses = groups["status"].to_list()
        if set(statuses) <= allowed:
            return
        # A handful of rows, put together in Python: a query per step cost more than the tally.
        stats: dict[str, tuple[int, int, int]] = {}
        columns = (groups[c].to_list() for c in ("count", "first", "last"))
        for status, count, first, last in zip(statuses, *columns, strict=True):
            if status in allowed:
                continue
            if status in stats:  # records before and after 1970 fall in two windows
                seen = stats[status]
                count, first, last = count + seen[0], min(first, seen[1]), max(last, seen[2])
            stats[status] = (count, first, last)
        samples = found.samples
        lines: dict[str, list[int]] = {}
        for status, line in zip(samples["status"].to_list(), samples["line"].to_list(), strict=True):
            if status in stats:
                lines.setdefault(status, []).append(line)
        kept = sorted(stats)
        sampled = [(status, line) for status in kept for line in sorted(lines.get(status, []))[:SAMPLE_LIMIT]]
        new_stats = pl.DataFrame([[s, *stats[s]] for s in kept], schema=_STATS.schema, orient="row")
        new_samples = pl.DataFrame({"status": [s for s, _ in sampled], "file": [batch.path] * len(sampled),
                                    "line": [line for _, line in sampled]}, schema=_SAMPLES.schema)
        if self.stats.is_empty() and len(kept) <= self.max_statuses:  # a fresh partial, as the engine's are
            self.stats, self.samples = new_stats, new_samples
        else:
            self._fold(new_stats, new_samples)

    def merge(self, other: UnknownStatus) -> None:
        self.others += other.others
        if not other.stats.is_empty():  # most partials saw no unknown status: nothing to fold
            self._fold(other.stats, other.samples)

    def _fold(self, stats: pl.DataFrame, samples: pl.DataFrame) -> None:
        stats = _STATS.reduce([self.stats, stats]).sort("status")
        self.others += int(stats["count"].slice(self.max_statuses).sum())
        self.stats = stats.head(self.max_statuses)
        samples = _SAMPLES.reduce([self.samples, samples])
        self.samples = samples.filter(pl.col("status").is_in(self.stats["status"].implode()))

    def result(self) -> Result:
        locations = sample_locations(self.samples, ["status"])
        expected = "one of " + ", ".join(self.allowed)
        found = [
            self.anomaly(
                key=status, count=count, observed=count, expected=expected,
                samples=locations.get((status,), []), first_seen=first, last_seen=last,
                detail={"allowed": self.allowed},
            )
            for status, count, first, last in self.stats.iter_rows()
        ]
        if self.others:
            found.append(self.anomaly(
                key=OTHERS, count=self.others, observed=self.others, expected=expected,
                detail={"reason": f"more than {self.max_statuses} distinct unknown statuses", "allowed": self.allowed},
            ))
        return Result(found)


@hookimpl
def register_rule_types(register: Any) -> None:
    register(UnknownStatus)
