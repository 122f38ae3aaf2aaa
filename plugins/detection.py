"""What every detector rule type shares: the anomaly it reports, durations, instants and sample lines."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, ClassVar

import polars as pl

from core import Rule
from core.columns import constant
from core.rules import WITHOUT_MESSAGE
from plugins.counting import FIELDS  # noqa: F401  (re-exported: the fields detectors group by)

if TYPE_CHECKING:
    from core.parse import Batch

SEVERITIES = ("low", "medium", "high", "critical")
#: At most this many ``file:line`` samples per anomaly: the smallest (file, line) pairs.
SAMPLE_LIMIT = 5
STATUSES = ("SUCCESS", "FAILURE", "INFO", "WARN", "ERROR")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_US = 1_000_000

#: A duration: whole seconds, or a whole number followed by s, m, h or d (``90s``, ``10m``, ``1d``).
DURATION = {"type": ["integer", "string"], "minimum": 1, "pattern": r"^[1-9][0-9]*[smhd]$"}
#: A UTC instant or a date, as written in ISO 8601 (``2000-01-01``, ``2025-07-21T09:00:00Z``).
INSTANT = {
    "type": "string",
    "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2}))?$",
}
STATUS_LIST = {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "string", "minLength": 1}}

_INSTANT_OUT = {"type": ["string", "null"]}
#: What a detector's ``result().value`` is: a list of anomalies, before the engine stamps id, rule and type.
ANOMALY_LIST_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["severity", "key", "window_start", "window_end", "observed", "count", "samples", "first_seen"],
        "properties": {
            "severity": {"enum": list(SEVERITIES)},
            "key": {"type": "string"},
            "window_start": _INSTANT_OUT,
            "window_end": _INSTANT_OUT,
            "count": {"type": "integer", "minimum": 0},
            "samples": {"type": "array", "maxItems": SAMPLE_LIMIT, "items": {"type": "string"}},
            "first_seen": _INSTANT_OUT,
        },
    },
}


def params_schema(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON Schema of a detector's parameters: ``properties`` plus ``severity``, nothing else."""
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {**properties, "severity": {"enum": list(SEVERITIES)}},
    }
    if required:
        schema["required"] = list(required)
    return schema


def duration_us(value: int | str) -> int:
    """``90`` or ``"90s"`` -> 90 s, ``"10m"``, ``"2h"``, ``"1d"``; in microseconds."""
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


def iso(us: int | None) -> str | None:
    """Microseconds since the epoch as ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` (the anomalies.json form)."""
    if us is None:
        return None
    moment = EPOCH + timedelta(microseconds=us)
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    return text + (f".{moment.microsecond:06d}Z" if moment.microsecond else "Z")


def epoch_us() -> pl.Expr:
    """The record's timestamp as integer microseconds since the epoch."""
    return pl.col("ts").dt.epoch("us")


def file_column(batch: Batch, height: int) -> pl.Series:
    """The batch's file, as the ``file`` column of a samples table of ``height`` rows."""
    return constant(batch.path, height, pl.Categorical())


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
        **extra: Any,
    ) -> dict[str, Any]:
        """One anomaly; ``extra`` holds ``threshold`` and/or ``expected`` and an optional ``detail``."""
        found: dict[str, Any] = {
            "severity": severity or self.params.get("severity", self.default_severity),
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
