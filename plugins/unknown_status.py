"""``unknown_status``: records whose status is not in the allowed list, one anomaly per unknown status."""

from __future__ import annotations

from typing import Any

from core import Result, hookimpl
from core.parse import Batch
from core.tally import EVER, sample_places, shared
from plugins.detection import SAMPLE_LIMIT, STATUS_LIST, STATUSES, Detector, params_schema

#: The key of the anomaly that counts statuses beyond ``max_statuses`` (a status never holds a space).
OTHERS = "(other statuses)"


class UnknownStatus(Detector):
    """Report every status outside ``allowed``: its count, first and last time, and sample lines.

    The state is one entry per unknown status, capped at ``max_statuses``: the statuses kept are
    the alphabetically smallest (so the cap does not depend on the order records arrive in), and
    the records of the others are counted together under ``(other statuses)``. It is kept in
    Python dicts: a batch brings a handful of statuses, and Polars tables for so few rows cost
    more than the tally that counted them.
    """

    type_name = "unknown_status"
    many_files = True  # samples are placed by each record's file (``core.tally.sample_places``)
    description = "A status outside the allowed list."
    default_severity = "medium"
    params_schema = params_schema({
        "allowed": STATUS_LIST,
        "max_statuses": {"type": "integer", "minimum": 1, "maximum": 100000},
    })
    state_version = 2  # 1 kept Polars tables

    def setup(self, allowed: tuple[str, ...] | list[str] = STATUSES, max_statuses: int = 100,
              severity: str = "medium", **incident_params: Any) -> None:  # see ``Detector.publish``
        self.allowed = list(allowed)
        self.max_statuses = max_statuses
        #: status -> (count, first time, last time), in microseconds
        self.stats: dict[str, tuple[int, int, int]] = {}
        #: status -> its SAMPLE_LIMIT smallest (file, line) locations, in order
        self.samples: dict[str, list[tuple[str, int]]] = {}
        self.others = 0

    def update(self, batch: Batch) -> None:
        # One compiled pass counts the unknown statuses, with times and samples; the allowed ones
        # are skipped before they are hashed. Dirty logs have a few in nearly every batch.
        found = shared(batch, width=EVER, lo=-EVER, hi=EVER, keys=["status"], skip=("status", self.allowed),
                       sample_limit=SAMPLE_LIMIT, top=0, tables=("groups", "samples"))
        groups = found.groups
        if not groups.height:
            return
        stats: dict[str, tuple[int, int, int]] = {}
        columns = (groups[c].to_list() for c in ("status", "count", "first", "last"))
        for status, count, first, last in zip(*columns, strict=True):
            seen = (count, first, last)  # records before and after 1970 fall in two windows
            stats[status] = _combined(stats[status], seen) if status in stats else seen
        samples: dict[str, list[tuple[str, int]]] = {}
        for status, place in zip(found.samples["status"].to_list(), sample_places(batch, found), strict=True):
            if status in stats:
                samples.setdefault(status, []).append(place)
        self._fold(stats, samples)

    def state_weight(self) -> float:
        return 0.5  # at most ``max_statuses`` statuses

    def shift_lines(self, path: str, by: int) -> None:
        self.samples = {status: [(file, line + by if file == path else line) for file, line in places]
                        for status, places in self.samples.items()}

    def merge(self, other: UnknownStatus) -> None:
        self.others += other.others
        self._fold(other.stats, other.samples)

    def _fold(self, stats: dict[str, tuple[int, int, int]], samples: dict[str, list[tuple[str, int]]]) -> None:
        for status, seen in stats.items():
            self.stats[status] = _combined(self.stats[status], seen) if status in self.stats else seen
            self.samples[status] = sorted(self.samples.get(status, []) + samples.get(status, []))[:SAMPLE_LIMIT]
        if len(self.stats) > self.max_statuses:
            for status in sorted(self.stats)[self.max_statuses:]:
                self.others += self.stats.pop(status)[0]
                self.samples.pop(status, None)

    def subject(self, key: str) -> dict[str, Any]:
        return {"status": key}

    def result(self) -> Result:
        expected = "one of " + ", ".join(self.allowed)
        found = [
            self.anomaly(
                key=status, count=count, observed=count, expected=expected,
                samples=[f"{file}:{line}" for file, line in self.samples.get(status, [])],
                first_seen=first, last_seen=last, detail={"allowed": self.allowed},
            )
            for status, (count, first, last) in sorted(self.stats.items())
        ]
        if self.others:
            found.append(self.anomaly(
                key=OTHERS, count=self.others, observed=self.others, expected=expected,
                detail={"reason": f"more than {self.max_statuses} distinct unknown statuses", "allowed": self.allowed},
            ))
        return self.publish(self.as_incidents(found))


def _combined(a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[int, int, int]:
    """Two (count, first, last) of one status as one."""
    return a[0] + b[0], min(a[1], b[1]), max(a[2], b[2])


@hookimpl
def register_rule_types(register: Any) -> None:
    register(UnknownStatus)
