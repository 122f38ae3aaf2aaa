"""What every detector rule type shares: the anomaly it reports, durations, instants and sample lines."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import polars as pl

from core import Result, Rule
from core.columns import Columns, constant
from core.rules import WITHOUT_MESSAGE
from plugins.counting import FIELDS  # noqa: F401  (re-exported: the fields detectors group by)

if TYPE_CHECKING:
    from core.parse import Batch

from plugins import incidents as incident_rules
from plugins import runs as closed_runs
from plugins.incidents import SEVERITIES
from plugins.runs import Runs

#: At most this many ``file:line`` samples per anomaly: the smallest (file, line) pairs.
SAMPLE_LIMIT = 5
#: Bytes of a sample line's text kept beside its location.
SAMPLE_BYTES = 200
#: Incidents listed per rule unless its ``max_incidents`` says otherwise; the rest are counted as suppressed.
MAX_INCIDENTS = 20
STATUSES = ("SUCCESS", "FAILURE", "INFO", "WARN", "ERROR")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_US = 1_000_000

#: A duration: a whole number followed by its unit, s, m, h or d (``90s``, ``10m``, ``1d``). A bare
#: number is refused: ``timeframe: 10`` meant ten seconds to the engine and, as often, ten minutes
#: to whoever wrote it. The format bounds it (``core.validation.MAX_DURATION_DAYS``).
DURATION = {"type": "string", "pattern": r"^[1-9][0-9]*[smhd]$", "format": "duration",
            "title": "a duration: a whole number and its unit, s, m, h or d (90s, 10m, 1h, 1d)"}
#: A UTC instant or a date, as written in ISO 8601 (``2000-01-01``, ``2025-07-21T09:00:00Z``); the
#: format checks that it exists (no 2025-02-30, no year 0).
INSTANT = {
    "type": "string",
    "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2}))?$",
    "format": "instant",
}
STATUS_LIST = {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "string", "minLength": 1}}

_INSTANT_OUT = {"type": ["string", "null"]}
#: What a detector's ``result().value`` is: a list of incidents, before the engine stamps id, rule and type.
ANOMALY_LIST_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["severity", "score", "key", "kind", "window_start", "window_end", "windows", "peak",
                     "observed", "count", "samples", "first_seen"],
        "properties": {
            "severity": {"enum": list(SEVERITIES)},
            "score": {"type": "number", "minimum": 0},
            "key": {"type": "string"},
            "kind": {"type": "string"},
            "window_start": _INSTANT_OUT,
            "window_end": _INSTANT_OUT,
            "windows": {"type": "integer", "minimum": 1},
            "count": {"type": "integer", "minimum": 0},
            "samples": {
                "type": "array", "maxItems": SAMPLE_LIMIT,
                "items": {"type": "object", "required": ["location"],
                          "properties": {"location": {"type": "string"}, "text": {"type": ["string", "null"]}}},
            },
            "first_seen": _INSTANT_OUT,
        },
    },
}
#: Parameters every detector takes for the incidents it lists (see ``Detector.publish``).
INCIDENT_PARAMS: dict[str, Any] = {
    "max_incidents": {"type": "integer", "minimum": 0},
    "min_severity": {"enum": list(SEVERITIES)},
    "realert": {"oneOf": [DURATION, {"type": "null"}]},
}


def params_schema(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON Schema of a detector's parameters: ``properties`` plus ``severity``, nothing else."""
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {**properties, **INCIDENT_PARAMS, "severity": {"enum": list(SEVERITIES)}},
    }
    if required:
        schema["required"] = list(required)
    return schema


def duration_us(value: int | str) -> int:
    """``"90s"`` -> 90 s, ``"10m"``, ``"2h"``, ``"1d"``, in microseconds; from code, ``90`` is 90 s too."""
    if isinstance(value, int):
        return value * _US
    return int(value[:-1]) * _UNITS[value[-1]] * _US


def instant_us(text: str) -> int:
    """An ISO 8601 instant (a bare date is midnight UTC; no zone means UTC), in microseconds since the epoch."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - EPOCH) // timedelta(microseconds=1)


def now_us() -> int:
    """Processing time: the wall clock, in microseconds since the epoch."""
    return time.time_ns() // 1000


#: The first and last instants ``iso`` can write (years 0001 to 9999, Python's), in microseconds since the epoch.
_FIRST_US = (datetime.min.replace(tzinfo=timezone.utc) - EPOCH) // timedelta(microseconds=1)
_LAST_US = (datetime.max.replace(tzinfo=timezone.utc) - EPOCH) // timedelta(microseconds=1)


def iso(us: int | None) -> str | None:
    """Microseconds since the epoch as ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` (the anomalies.json form).

    An instant before year 1 is written as year 1's first, one after 9999 as its last: a wide window
    or a long history behind the watermark (1,000 windows of a year) can reach that far.
    """
    if us is None:
        return None
    moment = EPOCH + timedelta(microseconds=min(max(us, _FIRST_US), _LAST_US))
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    return text + (f".{moment.microsecond:06d}Z" if moment.microsecond else "Z")


def epoch_us() -> pl.Expr:
    """The record's timestamp as integer microseconds since the epoch."""
    return pl.col("ts").dt.epoch("us")


def file_column(batch: Batch, table: Columns | pl.DataFrame) -> pl.Series:
    """The ``file`` column of a samples table: a tally's (``core.tally.shared`` gives one to the
    samples of a batch of several files) or a frame of the batch's rows."""
    if not batch.files:  # one file: its name, without a cast per batch
        return constant(batch.path, table.height, pl.Categorical())
    return table["file"].cast(pl.Categorical())


def sample_locations(samples: pl.DataFrame, keys: list[str]) -> dict[tuple[Any, ...], list[str]]:
    """Group a table of sample locations by ``keys``: key tuple -> sorted ``file:line`` list."""
    if samples.is_empty():
        return {}
    texts = samples.sort([*keys, pl.col("file").cast(pl.String), "line"]).select(
        *keys, (pl.col("file").cast(pl.String) + ":" + pl.col("line").cast(pl.String)).alias("loc")
    )
    grouped = texts.group_by(keys, maintain_order=True).agg(pl.col("loc").head(SAMPLE_LIMIT))
    return {tuple(row[:-1]): row[-1] for row in grouped.iter_rows()}


class Detector(Rule):
    """A rule type whose result is a list of anomalies, written to ``anomalies.json``.

    ``result().value`` lists anomaly mappings (see ``anomaly``); the engine stamps each with
    ``id`` = ``rule:key@window_start``, ``rule`` and ``type``, so keys and windows must be stable.
    """

    columns = WITHOUT_MESSAGE

    output = "anomalies"
    result_schema = ANOMALY_LIST_SCHEMA
    default_severity: ClassVar[str] = "medium"

    def anomaly(
        self,
        *,
        key: str,
        count: int,
        observed: float | str,
        window: tuple[int | None, int | None] = (None, None),
        samples: list[str] | None = None,
        first_seen: int | None = None,
        last_seen: int | None = None,
        severity: str | None = None,
        kind: str = "",
        score: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """One anomaly (a flagged window, or an incident of a rule without windows).

        ``extra`` holds ``threshold`` and/or ``expected``, an optional ``detail`` and, for a flagged
        window, ``_w``: its window index (see ``plugins.incidents``).
        """
        found: dict[str, Any] = {
            "severity": severity or self.params.get("severity", self.default_severity),
            "kind": kind,
            "score": score,
            "key": key,
            "window_start": iso(window[0]),
            "window_end": iso(window[1]),
            "observed": observed,
            "count": int(count),
            "samples": list(samples or [])[:SAMPLE_LIMIT],
            "first_seen": iso(first_seen),
        }
        if last_seen is not None:
            found["last_seen"] = iso(last_seen)
        found.update({k: v for k, v in extra.items() if not (k == "detail" and v is None)})
        return found

    # -- incidents --------------------------------------------------------------------------

    #: The score of an incident of a rule that does not measure surprise, by its severity.
    SCORE_OF_LEVEL: ClassVar[dict[str, float]] = {"low": 5.0, "medium": 10.0, "high": 20.0, "critical": 40.0}

    def subject(self, key: str) -> dict[str, Any]:
        """What an incident of ``key`` is about, in the log's own terms (e.g. ``{"service": key}``)."""
        return {}

    def describe(self, incident: dict[str, Any]) -> None:
        """Complete a listed incident once its samples have their text (e.g. its ``subject``); optional."""

    def windowed_incidents(self, flags: list[dict[str, Any]], newest: int | None, gap: int,
                           min_score: float | dict[str, float], runs: Runs | None = None) -> list[dict[str, Any]]:
        """Join flagged windows, and the runs closed windows were folded into (``plugins.runs``), into
        incidents and keep those that reach ``min_score`` (or, given a mapping, the score of their
        kind, ``min_score[kind]``)."""
        found = []
        for run in closed_runs.joined(runs or {}, flags, gap):
            made = run.incident(newest, gap, self.subject(run.key))
            least = min_score.get(made["kind"], 0.0) if isinstance(min_score, dict) else min_score
            if made["score"] >= least:
                found.append(made)
        return found

    def as_incidents(self, anomalies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Anomalies of a rule without windows, each its own incident, scored by its severity."""
        return [incident_rules.single({**a, "subject": a.get("subject") or self.subject(a["key"])},
                                      a.get("score") or self.SCORE_OF_LEVEL[a["severity"]]) for a in anomalies]

    def publish(self, incidents: list[dict[str, Any]], detail: dict[str, Any] | None = None,
                unkept: int = 0) -> Result:
        """The rule's result: its incidents, most severe first, cut by ``realert``, ``min_severity`` and
        ``max_incidents``; how many were found, listed and suppressed go in the detail (``unkept``:
        incidents found but not kept, see ``plugins.runs``, count as found and suppressed)."""
        ordered = sorted(incidents, key=incident_rules.rank)
        realert = self.params.get("realert")
        hidden = incident_rules.realert_suppressed(ordered, duration_us(realert) if realert else None)
        least = SEVERITIES.index(self.params.get("min_severity", "low"))
        kept = [found for i, found in enumerate(ordered)
                if i not in hidden and SEVERITIES.index(found["severity"]) >= least]
        listed = kept[: self.params.get("max_incidents", MAX_INCIDENTS)]
        self.forget_texts({s for found in ordered for s in found["samples"] if isinstance(s, str)})
        self.sample_texts([s for found in listed for s in found["samples"]])  # every file read once, not per incident
        for found in listed:
            found["samples"] = self.sample_texts(found["samples"])
            self.describe(found)
        every = len(ordered) + unkept
        counts = {"found": every, "listed": len(listed), "suppressed": every - len(listed)}
        return Result(listed, {**(detail or {}), "incidents": counts})

    def sample_texts(self, samples: list[Any]) -> list[dict[str, Any]]:
        """``file:line`` samples with the line's text (redacted), read once and kept in the state."""
        texts: dict[str, str | None] = self.__dict__.setdefault("texts", {})
        wanted = [s for s in samples if isinstance(s, str) and s not in texts]
        if wanted:
            texts.update(read_sample_lines(self, wanted))
        out = []
        for sample in samples:
            if isinstance(sample, dict):
                out.append(sample)
            else:
                out.append({"location": sample, "text": texts.get(sample)})
        return out

    def forget_texts(self, keep: set[str]) -> None:
        """Drop kept sample texts no incident points at any more."""
        texts = self.__dict__.get("texts", {})
        for location in [loc for loc in texts if loc not in keep]:
            del texts[location]


def read_sample_lines(rule: Rule, locations: list[str]) -> dict[str, str | None]:
    """The text of each ``file:line`` location, redacted, or None where the file cannot give it."""
    from core.lines import read_lines

    by_file: dict[str, set[int]] = {}
    for location in locations:
        name, _, number = location.rpartition(":")
        by_file.setdefault(name, set()).add(int(number))
    folder = getattr(rule, "data_dir", None)
    redactor = getattr(rule, "redactor", None)
    found: dict[str, str | None] = {}
    for name, numbers in by_file.items():
        # A URL (object storage, ``s3://...``) is joined as a URL: ``Path`` would fold its ``//``.
        where = (f"{folder}/{name}" if "://" in folder else Path(folder) / name) if folder else None
        lines = read_lines(where, numbers, max_bytes=SAMPLE_BYTES) if where else {}
        for number in numbers:
            text = lines.get(number)
            found[f"{name}:{number}"] = redactor.redact(text) if (text is not None and redactor) else text
    return found
