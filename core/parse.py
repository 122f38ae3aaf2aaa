"""Turn a chunk of raw bytes into a columnar batch of records plus the accounting of its lines.

The whole contract is in ``docs/line-contract.md``. Valid lines are the vast majority, so one
regular expression recognises them in a single vectorised pass; only the lines it rejects are
classified further, and only lines holding U+FFFD ever look at raw bytes again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl

from core.stats import FileStats, MalformedLine

#: Columns and types of every record batch handed to rules.
RECORD_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Datetime("us", "UTC"),
    "status": pl.String(),
    "service": pl.String(),
    "user": pl.String(),
    "message": pl.String(),
    "file": pl.String(),
    "line": pl.Int64(),
}

_TOKEN = r"[^\s\x00-\x1f\x7f\x{FFFD}]+"
_TIMESTAMP = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_VALID_LINE = rf"^{_TIMESTAMP} {_TOKEN} {_TOKEN} {_TOKEN}(?: |$)"
# Python's str.isspace also counts the separators U+001C-U+001F; Rust's \s does not.
_BLANK_LINE = r"^[\s\x1c-\x1f]*$"
_BAD_CHARS = r"[\s\x00-\x1f\x7f]"
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%#z"
_SAMPLE_CHARS = 200
_FIELDS = ("f0", "f1", "f2", "f3")


@dataclass(frozen=True)
class Chunk:
    """Whole lines of one file: bytes ``start`` to ``end``, the first of them numbered ``first_line``.

    A chunk for a line the reader discarded because it exceeded ``max_line_bytes`` has no
    ``data`` and lists that line (numbered ``first_line``) in ``overlong``.
    """

    path: str
    data: bytes
    first_line: int
    start: int
    end: int
    overlong: tuple[int, ...] = ()


@dataclass(frozen=True)
class Batch:
    """Records of one chunk, as a Polars frame with the columns of ``RECORD_SCHEMA``.

    ``malformed`` counts the chunk's malformed lines by reason, for rules that report on them
    (the records themselves never include those lines).
    """

    path: str
    frame: pl.DataFrame
    malformed: Mapping[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.frame.height


def parse_chunk(chunk: Chunk, max_line_bytes: int, sample_limit: int) -> tuple[Batch, FileStats]:
    """Parse one chunk into its records and the counts of its lines."""
    stats = FileStats(chunk.path, sample_limit=sample_limit, bytes=chunk.end - chunk.start)
    stats.lines = len(chunk.overlong)
    stats.add_malformed([MalformedLine(n, "too_long", "") for n in chunk.overlong])
    if not chunk.data:
        return Batch(chunk.path, _empty_frame(), dict(stats.reasons)), stats
    lines = _split_lines(chunk.data)
    stats.lines += lines.height
    frame = _classify(lines, max_line_bytes)
    if frame["suspect"].any():
        frame = _recheck_lengths(frame, chunk.data, max_line_bytes)
    records = _records(frame.filter(pl.col("kind") == "record"), chunk)
    stats.records = records.height
    stats.blank = int((frame["kind"] == "blank").sum())
    stats.add_malformed(_malformed(frame, chunk.first_line))
    return Batch(chunk.path, records, dict(stats.reasons)), stats


def _split_lines(data: bytes) -> pl.DataFrame:
    # Invalid bytes become U+FFFD here, so that Polars always holds valid UTF-8; line breaks are
    # ASCII, which a UTF-8 decoder never swallows, so the lines stay the same lines. Polars' own
    # splitter drops one trailing \r per line and is twice as fast as str.split + explode.
    text = data.decode("utf-8", "replace").encode("utf-8")
    return pl.read_lines(text, row_index_name="idx")


def _classify(lines: pl.DataFrame, max_line_bytes: int) -> pl.DataFrame:
    line = pl.col("line")
    nbytes = line.str.len_bytes()
    has_fffd = line.str.contains("\ufffd", literal=True)
    # Without U+FFFD the decoded length is the raw length; with it, raw bytes are rechecked.
    too_long = (nbytes > max_line_bytes) & ~has_fffd
    valid = line.str.contains(_VALID_LINE) & ~too_long
    frame = lines.with_columns(
        too_long=too_long,
        suspect=has_fffd & (nbytes > max_line_bytes),
        kind=pl.when(valid)
        .then(pl.lit("record"))
        .when(too_long)
        .then(pl.lit("malformed"))
        .when(line.str.contains(_BLANK_LINE))
        .then(pl.lit("blank"))
        .otherwise(pl.lit("malformed")),
    )
    parts = frame["line"].str.splitn(" ", 5).struct.rename_fields([*_FIELDS, "f4"])
    frame = pl.concat([frame, parts.struct.unnest()], how="horizontal")
    ts = pl.col("f0").str.to_datetime(_TIMESTAMP_FORMAT, strict=False, time_unit="us")
    ts = pl.when(pl.col("kind") == "record").then(ts)
    frame = frame.with_columns(ts=ts)
    # Years 0001-9999 hold both as written and once normalised to UTC (0001-01-01T00:00:00+01:00
    # would be year 0), so every record's ts is also a Python datetime.
    in_range = pl.col("ts").dt.year().is_between(1, 9999)
    real_instant = pl.col("ts").is_not_null() & ~pl.col("f0").str.starts_with("0000") & in_range
    return frame.with_columns(
        kind=pl.when((pl.col("kind") == "record") & ~real_instant)
        .then(pl.lit("malformed"))
        .otherwise(pl.col("kind"))
    )


def _recheck_lengths(frame: pl.DataFrame, data: bytes, max_line_bytes: int) -> pl.DataFrame:
    """Measure raw byte lengths for the rare long lines that held invalid UTF-8."""
    raw = data.split(b"\n")
    long_rows = frame.filter("suspect")["idx"].to_list()
    too_long = {i for i in long_rows if len(raw[i].removesuffix(b"\r")) > max_line_bytes}
    flagged = pl.col("idx").is_in(list(too_long))
    return frame.with_columns(
        too_long=pl.col("too_long") | flagged,
        kind=pl.when(flagged).then(pl.lit("malformed")).otherwise(pl.col("kind")),
    )


def _records(valid: pl.DataFrame, chunk: Chunk) -> pl.DataFrame:
    return valid.select(
        pl.col("ts"),
        pl.col("f1").alias("status"),
        pl.col("f2").alias("service"),
        pl.col("f3").alias("user"),
        pl.col("f4").fill_null("").alias("message"),
        pl.lit(chunk.path, dtype=pl.String).alias("file"),
        (pl.col("idx").cast(pl.Int64) + chunk.first_line).alias("line"),
    )


def _malformed(frame: pl.DataFrame, first_line: int) -> list[MalformedLine]:
    bad = frame.filter(pl.col("kind") == "malformed")
    if bad.is_empty():
        return []
    fields = [pl.col(f) for f in _FIELDS]
    reason = (
        pl.when(pl.col("too_long"))
        .then(pl.lit("too_long"))
        .when(pl.col("f3").is_null())
        .then(pl.lit("missing_fields"))
        .when(pl.any_horizontal(f == "" for f in fields))
        .then(pl.lit("empty_field"))
        .when(pl.any_horizontal(f.str.contains("\ufffd", literal=True) for f in fields))
        .then(pl.lit("invalid_utf8"))
        .when(pl.any_horizontal(f.str.contains(_BAD_CHARS) for f in fields))
        .then(pl.lit("bad_characters"))
        .otherwise(pl.lit("bad_timestamp"))
    )
    text = pl.when(pl.col("too_long")).then(pl.lit("")).otherwise(pl.col("line").str.slice(0, _SAMPLE_CHARS))
    rows = bad.select((pl.col("idx").cast(pl.Int64) + first_line).alias("n"), reason.alias("r"), text.alias("t"))
    return [MalformedLine(n, r, t) for n, r, t in rows.iter_rows()]


def _empty_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=RECORD_SCHEMA)
