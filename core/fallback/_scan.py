"""The pure Python stand-in for ``core/_scan.c``: ``scan``, ``record_hash``, ``timestamp``, ``count_newlines``.

The compiled scan decides every line it can alone. This one decides only the plain records, the
vast majority (printable ASCII fields, four of them, a timestamp naming a real instant), with
Polars string operations over the whole chunk at once; it leaves every other line (blank,
malformed, or a record that needs Unicode) to the full classification in ``core/parse.py``,
which decides those the way the compiled scan would (``tests/test_property.py``). The records,
their timestamps and their hashes are bit for bit the compiled scan's.
"""

from __future__ import annotations

import operator
import re
import struct
from datetime import date

import numpy as np
import polars as pl

from core.fallback.words import P1, P2, P3, Texts, finish, own_bytes, rotl

#: The SCAN_VERSION of core/_scan.c this module does what it does for.
VERSION = 3

_FIRST_US = -62135596800000000  # 0001-01-01T00:00:00Z
_LAST_US = 253402300799999999  # 9999-12-31T23:59:59.999999Z
_INT32_MAX = 2**31 - 1
_SEED = 0x0DDBA11
_NEWLINE = 0x0A
_PIECE_BYTES = 1 << 19  # see _pieces
_CR = 0x0D

# The accepted timestamp form (digits ASCII only), checked before its numbers are read; the
# numbers' ranges are checked as parse_timestamp in core/_scan.c does.
_FORM = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:Z|[+-][0-9]{2}:[0-9]{2})"
_TIMESTAMP = re.compile(rb"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
                        rb"(?:Z|([+-])([0-9]{2}):([0-9]{2}))")
# A field the compiled scan takes without a second look: printable ASCII but the space.
_PLAIN = r"^[!-~]+$"
# carries_id in core/_scan.c: three digits in one run without ASCII whitespace (space, \t-\r).
_ID = r"[0-9][^ \t-\r]*[0-9][^ \t-\r]*[0-9]"
_ID_BYTES = re.compile(_ID.encode())
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MASK = (1 << 64) - 1


# ---- The scan -----------------------------------------------------------------------------------


def scan(data: bytes, size: int, max_line_bytes: int, first_line: int, with_message: bool,
         with_hash: bool) -> tuple:
    """What ``core._scan.scan`` returns for data[:size], with every line but the plain records
    left undecided: (lines, blank, records, malformed, others), the record columns as Series."""
    view = memoryview(data).cast("B")
    if size < 0 or size > view.nbytes or size > _INT32_MAX or max_line_bytes < 0:
        raise ValueError("size must be within the data and below 2 GiB, max_line_bytes >= 0")
    raw = np.frombuffer(view, dtype=np.uint8, count=size)
    starts, ends, content = _line_bounds(raw)
    plain = pl.concat([_plain_records(raw, starts, _fields(view, starts, ends, content, a, b, max_line_bytes))
                       for a, b in _pieces(starts)], rechunk=True)
    records = _records(plain, first_line, with_message, with_hash)
    others = np.setdiff1d(np.arange(len(ends), dtype=np.int64), plain["index"].to_numpy(), assume_unique=True)
    undecided = tuple(np.ascontiguousarray(a, dtype=np.int64).tobytes() for a in (others, starts[others], ends[others]))
    return len(ends), 0, records, (b"", b"", b"", b""), undecided


def _line_bounds(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each line starts and ends (its newline excluded), and its length without one last \\r."""
    ends = np.flatnonzero(raw == _NEWLINE)
    if raw.size and raw[-1] != _NEWLINE:  # the last line counts without its newline
        ends = np.append(ends, raw.size)
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)[: ends.size]
    last = raw[np.maximum(ends - 1, 0)] if raw.size else np.zeros(0, dtype=np.uint8)
    content = ends - starts - ((ends > starts) & (last == _CR))
    return starts, ends.astype(np.int64), content


def _pieces(starts: np.ndarray) -> list[tuple[int, int]]:
    """The lines in pieces of about ``_PIECE_BYTES``, as (first, end) line indexes; one piece at least.

    Each piece's text and parts are made and dropped in turn: made for a whole 4 MiB chunk at
    once, they took some 120 MB more per worker (2M lines of 900k users, limits.memory_mb 500:
    peak RSS 555 MB; in pieces 338 MB, compiled 309 MB).
    """
    cuts = np.unique(np.searchsorted(starts, np.arange(0, starts[-1] + 1 if starts.size else 1, _PIECE_BYTES)))
    return [(int(a), int(b)) for a, b in zip(cuts, [*cuts[1:], starts.size], strict=True) if b > a] or [(0, 0)]


def _fields(view: memoryview, starts: np.ndarray, ends: np.ndarray, content: np.ndarray, first: int, end: int,
            max_line_bytes: int) -> pl.DataFrame:
    """Lines ``first`` to ``end`` that may be plain records (four fields of printable ASCII, the first
    of the timestamp form, not too long): their index and first five space-separated parts.

    The lines are decoded together: an invalid sequence never takes in a newline, so each line
    reads as it would alone, as the contract decodes it.
    """
    text = str(view[starts[first]:ends[end - 1]], "utf-8", "replace") if end > first else ""
    lines = pl.Series("text", [text]).str.split("\n").explode().head(end - first)
    parts = pl.col("text").str.strip_suffix("\r").str.splitn(" ", 5)
    frame = pl.DataFrame([lines, pl.Series("length", content[first:end])]).select(
        pl.int_range(first, first + pl.len(), dtype=pl.Int64).alias("index"), pl.col("length"), parts.alias("parts"),
    ).unnest("parts")
    plain = pl.all_horizontal(pl.col(f"field_{i}").str.contains(_PLAIN).fill_null(False) for i in range(4))
    return frame.filter(
        plain & (pl.col("length") <= max_line_bytes) & pl.col("field_0").str.contains(f"^{_FORM}$"),
    )


def _plain_records(raw: np.ndarray, starts: np.ndarray, candidates: pl.DataFrame) -> pl.DataFrame:
    """The candidates whose timestamp names a real instant, with its time (``us``).

    The first field of a candidate is ASCII, so it is read from the line's own bytes.
    """
    index = candidates["index"].to_numpy()
    us, real = _instants(raw, starts[index], candidates["field_0"].str.len_bytes().to_numpy().astype(np.int64))
    return candidates.filter(pl.Series(real)).with_columns(us=pl.Series(us[real], dtype=pl.Int64))


def _records(plain: pl.DataFrame, first_line: int, with_message: bool, with_hash: bool) -> tuple[pl.Series, ...]:
    """The record columns of the plain lines, as the compiled scan names and types them."""
    message = [own_bytes(pl.col("field_4")).fill_null("").alias("message")] if with_message or with_hash else []
    strings = plain.select(
        own_bytes(pl.col("field_1")).alias("status"), own_bytes(pl.col("field_2")).alias("service"),
        own_bytes(pl.col("field_3")).alias("user"), *message,
    )
    columns = [plain["us"].cast(pl.Datetime("us", "UTC")).alias("ts"), strings["status"], strings["service"],
               strings["user"]]
    if with_message:
        columns.append(strings["message"])
    if with_hash:
        columns.append(_hashes(plain, strings["message"]))
    columns.append((plain["index"] + first_line).alias("line"))
    return tuple(columns)


def _hashes(plain: pl.DataFrame, message: pl.Series) -> pl.Series:
    """The record_hash column: each record's text "STATUS SERVICE USER[ MESSAGE]" hashed with its time."""
    text = plain.select(pl.concat_str(
        "field_1", "field_2", "field_3", pl.when(pl.col("field_4") != "").then("field_4"),
        separator=" ", ignore_nulls=True,
    )).to_series()
    ids = message.str.contains(_ID).to_numpy()
    hashes = _record_hashes(plain["us"].to_numpy(), Texts.of(text), ids)
    return pl.Series("record_hash", hashes, dtype=pl.UInt64)


# ---- Timestamps ---------------------------------------------------------------------------------


def _instants(raw: np.ndarray, at: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """parse_timestamp in core/_scan.c for timestamps of the accepted form at raw[at:at + length]:
    microseconds since the epoch, and whether each names a real instant in years 0001-9999."""
    def number(offset: np.ndarray | int, count: int) -> np.ndarray:
        value = np.zeros(at.size, dtype=np.int64)
        for k in range(count):
            value = value * 10 + raw[at + offset + k] - ord("0")
        return value

    year, month, day = number(0, 4), number(5, 2), number(8, 2)
    hour, minute, second = number(11, 2), number(14, 2), number(17, 2)
    zoned = raw[at + length - 1] == ord("Z")
    fraction = length - np.where(zoned, 1, 6) - 20  # its digits (-1 if none)
    micros = np.zeros(at.size, dtype=np.int64)
    for k in range(6):  # truncated to the microsecond
        digit = raw[np.minimum(at + 20 + k, raw.size - 1)].astype(np.int64) - ord("0")
        micros = micros * 10 + np.where(k < fraction, digit, 0)
    offset_hours, offset_minutes = number(length - 5, 2), number(length - 2, 2)
    sign = np.where(raw[at + length - 6] == ord("-"), -1, 1)
    offset = np.where(zoned, 0, sign * (offset_hours * 60 + offset_minutes))
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset * 60
    us = seconds * 1_000_000 + micros
    real = (
        (hour <= 23) & (minute <= 59) & (second <= 59) & (year != 0) & (month >= 1) & (month <= 12) & (day >= 1)
        & (day <= _days_in_month(year, month)) & (zoned | ((offset_hours <= 23) & (offset_minutes <= 59)))
        & (us >= _FIRST_US) & (us <= _LAST_US)
    )
    return us, real


_DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _days_in_month(year: np.ndarray, month: np.ndarray) -> np.ndarray:
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    return _DAYS[np.clip(month, 1, 12) - 1] + ((month == 2) & leap)


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days from 1970-01-01 to a date (H. Hinnant's days_from_civil, as core/_scan.c has it; years >= 1)."""
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * np.where(month > 2, month - 3, month + 9) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def timestamp(text: str) -> int | None:
    """Microseconds since the epoch (UTC) of a timestamp of the accepted form naming a real instant
    in years 0001-9999, as Polars' to_datetime gives them; None for anything else."""
    if not isinstance(text, str):
        raise TypeError(f"timestamp() argument must be str, not {type(text).__name__}")
    found = _TIMESTAMP.fullmatch(text.encode())
    if found is None:
        return None
    year, month, day, hour, minute, second = (int(found[i]) for i in range(1, 7))
    if hour > 23 or minute > 59 or second > 59 or year == 0:
        return None
    try:
        days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:  # no such month or day
        return None
    offset = 0
    if found[8] is not None:
        if int(found[9]) > 23 or int(found[10]) > 59:
            return None
        offset = (int(found[9]) * 60 + int(found[10])) * (-1 if found[8] == b"-" else 1)
    micros = int((found[7] or b"")[:6].ljust(6, b"0"))
    us = (days * 86400 + hour * 3600 + minute * 60 + second - offset * 60) * 1_000_000 + micros
    return us if _FIRST_US <= us <= _LAST_US else None


# ---- The record hash ----------------------------------------------------------------------------


def _round(h: np.ndarray, word: np.ndarray) -> np.ndarray:
    return rotl(h + word * P2, 31) * P1


def _record_hashes(us: np.ndarray, texts: Texts, ids: np.ndarray) -> np.ndarray:
    """record_hash in core/_scan.c for each record: its time, its text, and whether its message carries an id.

    Two lanes take alternate words of the text, 16 bytes a round; the rows still in a round
    are fewer each time, so a long message costs its own rounds only.
    """
    n, at = texts.lengths, texts.starts
    a = _round(np.full(n.size, _SEED, dtype=np.uint64), us.astype(np.int64).view(np.uint64))
    b = _round(np.full(n.size, P3, dtype=np.uint64), n.astype(np.uint64))
    word = texts.words(at, n)  # a text under 8 bytes is its one word, padded with zeros
    rows = np.flatnonzero(n >= 8)
    i = 0
    while (rows := rows[i + 16 < n[rows]]).size:
        a[rows] = _round(a[rows], texts.words(at[rows] + i))
        b[rows] = _round(b[rows], texts.words(at[rows] + i + 8))
        i += 16
    long = np.flatnonzero(n >= 8)
    last_round = (n[long] - 1) // 16 * 16  # where the rounds stopped
    tail = long[last_round + 8 < n[long]]
    b[tail] = _round(b[tail], texts.words(at[tail] + (n[tail] - 1) // 16 * 16))
    word[long] = texts.words(at[long] + n[long] - 8)  # the last 8 bytes, overlapping what came before
    h = finish(_round(a, word) ^ (rotl(b, 27) * P3))
    return (h & ~np.uint64(1)) | ids.astype(np.uint64)


def record_hash(ts: int, status: str, service: str, user: str, message: str) -> int:
    """The 64-bit hash scan() gives a record with these fields (ts in microseconds): the same for the
    same values in every build, run and machine."""
    ts = operator.index(ts)
    if not -(2**63) <= ts < 2**63:
        raise OverflowError("Python int too large to convert to C long long")
    text = b" ".join(_utf8(field) for field in (status, service, user))
    message_at = len(text) + 1
    if message := _utf8(message):
        text += b" " + message
    return _hash_text(ts, text, min(message_at, len(text)))


def _utf8(field: str | bytes) -> bytes:
    """A field as the C function's ``s#`` takes it: a str as UTF-8, or the bytes as they are."""
    if isinstance(field, str):
        return field.encode()
    if isinstance(field, (bytes, bytearray, memoryview)):
        return bytes(field)
    raise TypeError(f"argument must be str or read-only bytes-like object, not {type(field).__name__}")


def _hash_text(ts: int, text: bytes, message_at: int) -> int:
    """record_hash in core/_scan.c for one record, with Python ints (numpy on one row costs more)."""
    def mix(h: int, word: int) -> int:
        h = (h + word * _P2) & _MASK
        return ((h << 31 | h >> 33) & _MASK) * _P1 & _MASK

    def word_at(i: int) -> int:
        return struct.unpack_from("<Q", text, i)[0]

    n = len(text)
    a, b = mix(_SEED, ts & _MASK), mix(_P3, n)
    word = int.from_bytes(text, "little")
    if n >= 8:
        i = 0
        while i + 16 < n:
            a, b = mix(a, word_at(i)), mix(b, word_at(i + 8))
            i += 16
        if i + 8 < n:
            b = mix(b, word_at(i))
        word = word_at(n - 8)
    h = mix(a, word) ^ ((b << 27 | b >> 37) & _MASK) * _P3 & _MASK
    for multiplier in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        h = (h ^ h >> 33) * multiplier & _MASK
    h ^= h >> 33
    return h & ~1 | (message_at < n and _ID_BYTES.search(text, message_at) is not None)


_P1, _P2, _P3 = int(P1), int(P2), int(P3)


# ---- Counting lines -----------------------------------------------------------------------------


def count_newlines(data: bytes, size: int) -> int:
    """The number of newlines in data[:size]."""
    view = memoryview(data).cast("B")
    if size < 0 or size > view.nbytes:
        raise ValueError("size must be within the data")
    return int(np.count_nonzero(np.frombuffer(view, dtype=np.uint8, count=size) == _NEWLINE))

