"""Turn a chunk of raw bytes into a columnar batch of records plus the accounting of its lines.

The whole contract is in ``docs/line-contract.md``. Valid lines are the vast majority, so a fast
path finds them: Polars' CSV reader splits every line's first four fields, and a line of plain
printable ASCII with four non-empty fields and a well-formed timestamp is a record. Every other
line (a few per cent in dirty files) is classified the full way, one regular expression at a time;
``tests/test_property.py`` checks that both ways agree on any input.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import polars as pl

from core.stats import FileStats, MalformedLine

log = logging.getLogger(__name__)

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
_PLAIN_TIMESTAMP = rf"^{_TIMESTAMP}$"
_TS = pl.col("f0").str.to_datetime(_TIMESTAMP_FORMAT, strict=False, time_unit="us")
# Years 0001-9999 hold both as written and once normalised to UTC (0001-01-01T00:00:00+01:00
# would be year 0), so every record's ts is also a Python datetime.
_FIRST_INSTANT = pl.lit(datetime(1, 1, 1, tzinfo=timezone.utc)).dt.cast_time_unit("us")
_LAST_INSTANT = pl.lit(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)).dt.cast_time_unit("us")
_IN_RANGE = pl.col("ts").is_between(_FIRST_INSTANT, _LAST_INSTANT)
_REAL_INSTANT = (_IN_RANGE & ~pl.col("f0").str.starts_with("0000")).fill_null(False)
_SAMPLE_CHARS = 200
_FIELDS = ("f0", "f1", "f2", "f3")
_NEWLINE, _CARRIAGE_RETURN = 0x0A, 0x0D
_NOT_IN_PLAIN_LINES = "\x01"
#: Every record column, for rules that do not say which they read.
RECORD_COLUMNS = tuple(RECORD_SCHEMA)


@dataclass(frozen=True)
class Chunk:
    """Whole lines of one file: bytes ``start`` to ``end``, the first of them numbered ``first_line``.

    A chunk for a line the reader discarded because it exceeded ``max_line_bytes`` has no
    ``data`` and lists that line (numbered ``first_line``) in ``overlong``.

    ``data`` may go on past ``end - start`` bytes with the start of the next line (no newline):
    the reader hands over the block it read as it is, as cutting it would copy it.
    """

    path: str
    data: bytes
    first_line: int
    start: int
    end: int
    overlong: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        """Bytes of the chunk's lines: the first ``size`` bytes of ``data`` (none for a skipped line)."""
        return min(len(self.data), self.end - self.start)

    @property
    def open_tail(self) -> bool:
        """The last line has no newline (yet)."""
        return self.size > 0 and self.data[self.size - 1] != _NEWLINE


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


def parse_chunk(
    chunk: Chunk, max_line_bytes: int, sample_limit: int, columns: Collection[str] = RECORD_COLUMNS
) -> tuple[Batch, FileStats]:
    """Parse one chunk into its records and the counts of its lines.

    ``columns`` names the record columns the rules read; the costly ``message`` column is
    built only when it is wanted, and is otherwise all ``""``.
    """
    stats = FileStats(chunk.path, sample_limit=sample_limit, bytes=chunk.end - chunk.start)
    stats.lines = len(chunk.overlong)
    stats.add_malformed([MalformedLine(n, "too_long", "") for n in chunk.overlong])
    if not chunk.size:
        return Batch(chunk.path, _empty_frame(), dict(stats.reasons)), stats
    lines = _Lines(chunk.data, chunk.size)
    stats.lines += lines.count
    fields = _read_fields(lines)
    if "message" in columns and fields.height == lines.count:
        fields = _with_messages(fields, lines)
    if fields.height == lines.count:
        plain = _plain(fields, lines, max_line_bytes)
        records, rejected = _records(fields.filter(plain), chunk)
        others = np.union1d(np.flatnonzero(~plain.to_numpy()), rejected.to_numpy())
    else:  # the CSV reader split lines otherwise than the contract does: every line the full way
        records, others = _record_columns(fields.clear().with_columns(ts=_TS), chunk), np.arange(lines.count)
    other = _classify(_fields(lines.frame(others)), max_line_bytes)
    if other["suspect"].any():
        other = _recheck_lengths(other, lines, max_line_bytes)
    if (other["kind"] == "record").any():  # unless the CSV reader disagreed, _plain found them all
        more = other.filter(pl.col("kind") == "record")
        more = more if "message" in columns else more.drop("f4")
        records = pl.concat([records, _record_columns(more, chunk)])
        records = records.sort("line")
    stats.records = records.height
    stats.blank = int((other["kind"] == "blank").sum())
    stats.add_malformed(_malformed(other, chunk.first_line))
    return Batch(chunk.path, records, dict(stats.reasons)), stats


class _Lines:
    """Where the lines of a chunk are; line ``i`` is ``data[starts[i]:ends[i]]``, its newline excluded."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data = data
        self.size = size  # data may go on with a partial line, which is not one of these
        self.bytes = np.frombuffer(data, dtype=np.uint8, count=size)
        ends = np.flatnonzero(np.equal(self.bytes, _NEWLINE, out=_scratch(size, np.bool_)))
        if data[size - 1] != _NEWLINE:
            ends = np.append(ends, size)
        self.ends = ends
        self.starts = np.concatenate(([0], ends[:-1] + 1)) if len(ends) else ends
        self.count = len(ends)

    def text(self, i: int) -> str:
        """Line ``i`` decoded as the contract says: invalid UTF-8 as U+FFFD, one trailing \\r dropped."""
        raw = self.data[self.starts[i] : self.ends[i]]
        return raw.decode("utf-8", "replace").removesuffix("\r")

    def frame(self, rows: np.ndarray) -> pl.DataFrame:
        """The given lines as ``idx`` (their index in the chunk) and ``line`` (their text)."""
        return pl.DataFrame(
            {"idx": rows.astype(np.uint32), "line": [self.text(i) for i in rows.tolist()]},
            schema={"idx": pl.UInt32(), "line": pl.String()},
        )

    def unusual(self) -> np.ndarray:
        """Lines holding a byte other than printable ASCII, a space and a last \\r: a few per cent.

        The other lines need no Unicode, whitespace or control-character checks; and these are
        all the lines where the CSV reader might split otherwise than the contract (it drops a
        \\r before a space, and a byte-order mark at the start of its input).
        """
        arr = self.bytes
        shifted = np.subtract(arr, np.uint8(0x20), out=_scratch(self.size, np.uint8))
        odd = np.greater(shifted, np.uint8(0x7E - 0x20), out=_scratch(self.size, np.bool_))  # < 0x20 or > 0x7e
        ends = self.ends[self.ends < len(arr)]
        odd[ends] = False
        crlf = ends[ends > 0] - 1
        odd[crlf[arr[crlf] == _CARRIAGE_RETURN]] = False
        at = np.flatnonzero(odd)
        return np.unique(np.searchsorted(self.ends, at)) if len(at) else at


_SCRATCH = threading.local()


def _scratch(size: int, dtype: type[np.generic]) -> np.ndarray:
    """A reused array of ``size`` items for the calling thread.

    Fresh arrays of a chunk's size would each be a new mapping from the system (see
    ``core.budget.return_freed_buffers``), and faulting its pages in costs more than the
    arithmetic done on them.
    """
    key = np.dtype(dtype).name
    array = getattr(_SCRATCH, key, None)
    if array is None or len(array) < size:
        array = np.empty(max(size, 1 << 20), dtype=dtype)
        setattr(_SCRATCH, key, array)
    return array[:size]


def count_newlines(data: bytes, size: int) -> int:
    """Newlines in the first ``size`` bytes of ``data``; unlike ``bytes.count``, mostly without the GIL."""
    newline = np.equal(np.frombuffer(data, dtype=np.uint8, count=size), _NEWLINE, out=_scratch(size, np.bool_))
    return int(np.count_nonzero(newline))


def _read_fields(lines: _Lines) -> pl.DataFrame:
    """The first four space-separated fields of every line, by Polars' CSV reader (the fast way)."""
    return _read_csv(lines, " ", dict.fromkeys(_FIELDS, pl.String())).with_row_index("idx")


def _read_csv(lines: _Lines, separator: str, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """A row per line, or a different number of rows where the CSV reader splits lines otherwise.

    No rows if the reader fails: then every line goes the full way, which never needs it.
    """
    try:
        frame = pl.read_csv(
            lines.data, has_header=False, separator=separator, quote_char=None, encoding="utf8-lossy",
            schema=schema, empty_string_is_null=False, raise_if_empty=False,
            truncate_ragged_lines=True, extra_columns="ignore", missing_columns="insert",
        )
    except pl.exceptions.PolarsError:
        log.debug("the CSV reader failed on a chunk; classifying its lines the full way", exc_info=True)
        return pl.DataFrame(schema=schema)
    if len(lines.data) > lines.size:  # the partial line after the chunk's lines is one more row
        frame = frame.head(frame.height - 1)
    return frame


def _plain(fields: pl.DataFrame, lines: _Lines, max_line_bytes: int) -> pl.Series:
    """Lines that are records for certain, but perhaps for their timestamp's calendar check.

    They are short enough, printable ASCII (see ``_Lines.unusual``), have four non-empty fields
    and a timestamp of the accepted form.
    """
    short = pl.Series(lines.ends - lines.starts <= max_line_bytes)  # raw length: see _classify
    plain = fields.select(
        pl.all_horizontal(
            pl.col("f0").str.contains(_PLAIN_TIMESTAMP), *(pl.col(f).str.len_bytes() > 0 for f in _FIELDS[1:])
        ).fill_null(False).alias("plain")
    )["plain"] & short
    unusual = lines.unusual()
    return plain.scatter(unusual, False) if len(unusual) else plain


def _with_messages(fields: pl.DataFrame, lines: _Lines) -> pl.DataFrame:
    """``fields`` with each plain line's MESSAGE as ``f4``: its text past the fourth space.

    The CSV reader reads whole lines too, given a separator no plain line holds (a control
    character); a plain line is printable ASCII, so its characters are its bytes. Other lines get
    their message in ``_classify``. No rows (so the full way for every line) if this read of the
    lines disagrees with the first on how many there are.
    """
    text = _read_csv(lines, _NOT_IN_PLAIN_LINES, {"text": pl.String()})
    if text.height != fields.height:
        return fields.clear()
    skip = pl.sum_horizontal(pl.col(f).str.len_bytes() for f in _FIELDS) + len(_FIELDS)
    return fields.with_columns(f4=text["text"]).with_columns(f4=pl.col("f4").str.slice(skip))


def _fields(lines: pl.DataFrame) -> pl.DataFrame:
    parts = lines["line"].str.splitn(" ", 5).struct.rename_fields([*_FIELDS, "f4"])
    return pl.concat([lines, parts.struct.unnest()], how="horizontal")


def _classify(frame: pl.DataFrame, max_line_bytes: int) -> pl.DataFrame:
    """Say what each line is (``kind``), with the columns ``_malformed`` needs to say why."""
    line = pl.col("line")
    nbytes = line.str.len_bytes()
    has_fffd = line.str.contains("\ufffd", literal=True)
    # Without U+FFFD the decoded length is the raw length; with it, raw bytes are rechecked.
    too_long = (nbytes > max_line_bytes) & ~has_fffd
    valid = line.str.contains(_VALID_LINE) & ~too_long
    frame = frame.with_columns(
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
    frame = frame.with_columns(ts=pl.when(pl.col("kind") == "record").then(_TS))
    return frame.with_columns(
        kind=pl.when((pl.col("kind") == "record") & ~_REAL_INSTANT)
        .then(pl.lit("malformed"))
        .otherwise(pl.col("kind"))
    )


def _recheck_lengths(frame: pl.DataFrame, lines: _Lines, max_line_bytes: int) -> pl.DataFrame:
    """Measure raw byte lengths for the rare long lines that held invalid UTF-8."""
    data = lines.data
    long_rows = frame.filter("suspect")["idx"].to_list()
    too_long = {
        i for i in long_rows
        if len(data[lines.starts[i] : lines.ends[i]].removesuffix(b"\r")) > max_line_bytes
    }
    flagged = pl.col("idx").is_in(list(too_long))
    return frame.with_columns(
        too_long=pl.col("too_long") | flagged,
        kind=pl.when(flagged).then(pl.lit("malformed")).otherwise(pl.col("kind")),
    )


def _records(plain: pl.DataFrame, chunk: Chunk) -> tuple[pl.DataFrame, pl.Series]:
    """The records among plain lines, and the indexes of those whose timestamp is not a real instant."""
    timed = plain.with_columns(ts=_TS)
    real = timed.select(_REAL_INSTANT.alias("real"))["real"]
    if real.all():
        return _record_columns(timed, chunk), plain["idx"].clear()
    return _record_columns(timed.filter(real), chunk), plain.filter(~real)["idx"]


def _record_columns(frame: pl.DataFrame, chunk: Chunk) -> pl.DataFrame:
    message = pl.col("f4").fill_null("") if "f4" in frame.columns else pl.lit("")
    return frame.select(
        pl.col("ts"),
        pl.col("f1").alias("status"),
        pl.col("f2").alias("service"),
        pl.col("f3").alias("user"),
        message.alias("message"),
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
