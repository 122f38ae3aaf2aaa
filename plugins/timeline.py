"""``timeline``: records and failures per stretch of event time (an hour by default), for charts.

The summary's other aggregates have no time axis: the 24-hour histogram folds every day into one.
A timeline keeps, per epoch-aligned bucket of ``every``, how many records fell in it and how many
of them had a failure-like status; the report draws volume and failure rate over time from it.

Only plausible times are placed (``min_time`` up to the run's "now" plus ``max_future``, as the
detectors bound them): one record stamped 2099 would otherwise stretch the axis over 75 years.
The others are counted as ``outside``.

The state is one pair of counts per bucket that holds a record, bounded by the rule's share of
``limits.memory_mb``: past it, buckets are joined two by two (an hour becomes two), as many
times as needed, and the result says what width it reached. Joining is aligned to the epoch, so
two partials joined to different widths merge exactly at the wider one.
"""

from __future__ import annotations

from typing import Any

from core import Result, Rule, hookimpl
from core.parse import Batch
from core.rules import WITHOUT_MESSAGE
from core.tally import shared
from plugins.detection import DURATION, INSTANT, STATUS_LIST, duration_us, instant_us, iso

#: Bytes a bucket costs in the state: two ints and a dict slot (measured with sys.getsizeof: ~150).
BUCKET_BYTES = 160
#: Points at most in summary.json: past this, the result joins buckets (the state keeps its width).
MAX_POINTS = 2000
_EVER = 2**62


class Timeline(Rule):
    """Records and failure-like records per bucket of event time."""

    type_name = "timeline"
    description = "Records and failures per hour (or any width) of event time, for the report's charts."
    columns = WITHOUT_MESSAGE
    many_files = True  # counts per bucket, whatever the file
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "every": DURATION,
            "statuses": STATUS_LIST,
            "min_time": INSTANT,
            "max_future": DURATION,
        },
    }
    result_schema = {
        "type": "object",
        "required": ["every_seconds", "outside", "points"],
        "properties": {
            "every_seconds": {"type": "integer", "minimum": 1},
            "statuses": {"type": "array", "items": {"type": "string"}},
            "outside": {"type": "integer", "minimum": 0},
            "points": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["start", "records", "failures"],
                    "properties": {
                        "start": {"type": "string"},
                        "records": {"type": "integer", "minimum": 1},
                        "failures": {"type": "integer", "minimum": 0},
                    },
                },
            },
        },
    }

    def setup(self, every: str = "1h", statuses: list[str] | tuple[str, ...] = ("FAILURE", "ERROR"),
              min_time: str = "2000-01-01", max_future: str = "5m") -> None:
        self.every = duration_us(every)
        self.statuses = list(statuses)
        self.min_time = instant_us(min_time)
        self.max_future = duration_us(max_future)
        self.width = self.every  # ``every`` times a power of two, once the state has been coarsened
        #: bucket index (time // width) -> [records, failures]
        self.buckets: dict[int, list[int]] = {}
        self.outside = 0

    def state_weight(self) -> float:
        return 0.5  # a pair of counts per hour of event time: years of it fit in a megabyte or two

    def update(self, batch: Batch) -> None:
        # Tallied at ``every`` over all times, as ``peak_hours`` tallies hours: with the default
        # ``every`` both read one compiled pass (``core.tally.shared``), and a bucket is judged
        # plausible or not as a whole. A record with a stray clock is in ``outside`` too (``timed``).
        batch = batch.timed()
        found = shared(batch, width=self.every, lo=-_EVER, hi=_EVER, line=None, flag=("status", self.statuses),
                       sample_limit=0, top=0, tables=("totals",))
        first, last = self.min_time // self.every, (batch.now + self.max_future) // self.every
        columns = (found.totals[c].to_list() for c in ("window", "count", "flagged"))
        buckets: dict[int, list[int]] = {}
        for window, count, failures in zip(*columns, strict=True):
            if first <= window <= last:
                buckets[window] = [count, failures]
            else:
                self.outside += count
        self._add(buckets, self.every)

    def merge(self, other: Timeline) -> None:
        self.outside += other.outside
        self._add(other.buckets, other.width)

    def _add(self, buckets: dict[int, list[int]], width: int) -> None:
        """Add buckets of ``width``, joining theirs or ours first so that both have the wider width."""
        while width < self.width:
            buckets, width = _joined(buckets), width * 2
        while self.width < width:
            self.buckets, self.width = _joined(self.buckets), self.width * 2
        for window, (count, failures) in buckets.items():
            bucket = self.buckets.setdefault(window, [0, 0])
            bucket[0] += count
            bucket[1] += failures
        self._bound()

    def _bound(self) -> None:
        limit = self.state_bytes or 2**40
        while len(self.buckets) * BUCKET_BYTES > limit and len(self.buckets) > 1:
            self.buckets, self.width = _joined(self.buckets), self.width * 2

    def state_size(self) -> int:
        return len(self.buckets) * BUCKET_BYTES

    def result(self) -> Result:
        buckets, width = self.buckets, self.width
        while len(buckets) > MAX_POINTS:
            buckets, width = _joined(buckets), width * 2
        points = [{"start": iso(window * width), "records": count, "failures": failures}
                  for window, (count, failures) in sorted(buckets.items())]
        value = {"every_seconds": width // 1_000_000, "statuses": self.statuses, "outside": self.outside,
                 "points": points}
        return Result(value, {"coarsened": width != self.every} if width != self.every else None)


def _joined(buckets: dict[int, list[int]]) -> dict[int, list[int]]:
    """Buckets of twice the width: bucket ``i`` goes into ``i // 2`` (a floor: before 1970 too)."""
    joined: dict[int, list[int]] = {}
    for window, (count, failures) in buckets.items():
        bucket = joined.setdefault(window // 2, [0, 0])
        bucket[0] += count
        bucket[1] += failures
    return joined


@hookimpl
def register_rule_types(register: Any) -> None:
    register(Timeline)
