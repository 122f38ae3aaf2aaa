"""``flatline``: a service whose volume falls far below (or rises far above) what was expected of it.

Records are counted per value of ``field`` (``service``) and epoch-aligned window. Every complete
window up to the newest event time is judged, including windows and whole bands without a single
record, so a total outage is seen for as long as it lasts. The expectation comes from
``plugins.seasonal`` (the same time of day on previous days, or of the week, otherwise the recent
windows; flagged windows left out, so the end of a burst is judged against normal traffic, not
against the burst). A window is a *drop* when its count is surprisingly low under a Poisson model
with the series' own dispersion (z <= -``z``) and at most 1/``ratio`` of the expectation (a fall to
zero included), and a *surge* when it is surprisingly high and at least ``ratio`` times it
(``surge: false`` turns those off). Flagged windows of a key join into incidents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from core import hookimpl
from core.tally import Weights
from plugins.detection import DURATION, FIELDS, INSTANT, params_schema
from plugins.seasonal import SeasonalDetector
from plugins.windows import MAX_FUTURE, MIN_TIME, Table, Tables

if TYPE_CHECKING:
    from core.parse import Batch
    from core.tally import Tally

_KEY = {"key": pl.String(), "window": pl.Int64()}


class Flatline(SeasonalDetector):
    """Flag windows in which a value of ``field`` falls far below, or rises far above, its seasonal expectation."""

    type_name = "flatline"
    many_files = True  # counts per window, no sample locations
    description = "A service whose volume falls far below (or surges far above) what the same time of day had."
    default_severity = "high"
    # Earlier saved forms: 4 did not thin its keys; 3 kept every array of its judged windows over four weeks.
    state_version = 6  # 5 kept every closed flag
    complete_only = True
    params_schema = params_schema({
        "field": {"enum": list(FIELDS)},
        "timeframe": DURATION,
        "z": {"type": "number", "exclusiveMinimum": 0},
        "ratio": {"type": "number", "minimum": 1},
        "surge": {"type": "boolean"},
        "min_score": {"type": "number", "minimum": 0},
        "surge_min_score": {"type": "number", "minimum": 0},
        "max_gap": {"type": "integer", "minimum": 0, "maximum": 1000},
        "retention": DURATION,
        "min_time": INSTANT,
        "max_future": DURATION,
    })
    tables = {
        "counts": Table({**_KEY, "count": pl.Int64(), "total": pl.Int64()}, keys=("key", "window"),
                        sums=("count", "total"), tallied=Weights(counts="count", flagged="total")),
    }
    events = ("counts", "count")
    sample_limit = 0  # a quiet window has no line to point at
    tally_tables = ("groups",)
    tally_counts_only = True  # every record counts: the tally error spikes make of services serves
    row_bytes = 48  # a counts row

    def setup(
        self,
        field: str = "service",
        timeframe: int | str = "10m",
        z: float = 4.0,
        ratio: float = 1.5,
        surge: bool = True,
        min_score: float = 10.0,
        surge_min_score: float = 15.0,
        max_gap: int = 6,
        retention: int | str = "1d",
        min_time: str = MIN_TIME,
        max_future: int | str = MAX_FUTURE,
        severity: str = "high",
        **incident_params: Any,
    ) -> None:
        self.field = field
        self.init_windows(timeframe, retention, 0, min_time, max_future)
        self.init_model(z, ratio, surge, True, min_score, max_gap)
        # A surge is more often benign (a campaign, a batch job) than a service going quiet: it is
        # listed only when it is surprising enough to rank high.
        self.min_score = {"drop": min_score, "surge": surge_min_score}

    def tally_keys(self) -> list[str]:
        return [self.field]

    def key_noun(self) -> str:
        return f"values of {self.field}"

    def subject(self, key: str) -> dict[str, Any]:
        return {self.field: key}

    def batch_tables(self, batch: Batch, found: Tally) -> Tables:
        counts = found.groups.frame(key=self.field, window="window", count="count", total="count")
        return {"counts": counts}

    def flags(self, data: Tables, flagged: list[tuple[str, int, float, float, float, float]]) -> list[dict[str, Any]]:
        return [
            self.anomaly(
                key=key,
                kind="surge" if z > 0 else "drop",
                score=round(abs(z), 3),
                window=self.window_bounds(window),
                count=int(observed),
                observed=int(observed),
                expected=round(expected, 3),
                # A quiet window is about records that are missing: there is no line to point at.
                samples=[],
                first_seen=None,
                _w=window,
                detail={"field": self.field},
            )
            for key, window, observed, expected, z, _ in flagged
        ]


@hookimpl
def register_rule_types(register: Any) -> None:
    register(Flatline)
