"""The pure Python stand-in for ``core/_tally.c``: ``tally``, the same tables from Polars group-bys.

``core/tally.py`` says what a tally is. The C code makes it in one pass over the rows; here it
is a few Polars queries over the batch, and the one thing Polars cannot give, the stable 64-bit
hash of a group's keys, is computed the C's way with numpy (``_key_hashes``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from core.fallback.words import P1, P2, P3, Texts, as_words, finish, own_bytes, rotl, shr

#: The TALLY_VERSION of core/_tally.c this module does what it does for.
VERSION = 6

_MAX_KEYS = 8
_WANT_GROUPS, _WANT_SAMPLES, _WANT_TOTALS = 1, 2, 4
_INT64_MAX, _INT64_MIN = 2**63 - 1, -(2**63)
_SEED = np.uint64(0x0DDBA11)
_WEIGHTS = ("counts", "flagged", "first", "last")
_GROUP_INTS = ("window", "count", "flagged", "first", "last")
_SAMPLE_INTS = ("window", "us", "line", "n")
_TOTAL_INTS = ("window", "count", "flagged")


class _Stream:
    """An Arrow stream capsule, for Polars to import through the PyCapsule interface."""

    def __init__(self, capsule: object) -> None:
        self.capsule = capsule

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return self.capsule


@dataclass(frozen=True)
class _Column:
    """An input column: int64 values (times, lines, integer keys) or strings, as the C reads them."""

    values: pl.Series
    strings: bool = False
    unsigned: bool = False  # UInt64: compared and hashed by its bits, handed back as UInt64 (keys only)


def _open(capsule: object, name: str, nullable: bool = False) -> _Column:
    """The column in an Arrow stream capsule; TypeError or ValueError naming it as core/_tally.c does."""
    series = pl.Series(_Stream(capsule))
    dtype = series.dtype
    if dtype == pl.String:
        column = _Column(series, strings=True)
    elif dtype in (pl.Int64, pl.UInt64):
        column = _Column(series, unsigned=dtype == pl.UInt64)
    elif isinstance(dtype, pl.Datetime) and dtype.time_unit == "us":
        column = _Column(series.cast(pl.Int64))
    else:
        raise TypeError(f'{name}: expected Int64, UInt64, Datetime("us") or String, got {dtype}')
    if series.null_count() and not nullable:
        raise ValueError(f"{name}: expected no nulls")
    return column


# ---- The Python function ------------------------------------------------------------------------


def tally(us: object, lines: object, keys: tuple, flag: object, flag_values: tuple, skip: bool, width: int, lo: int,
          hi: int, sample_limit: int, sample_bits: int, top: int, emit_keys: bool, wanted: int,
          weights: tuple) -> tuple:
    """Tally rows per (keys, window = floor(us / width)), as ``core._tally.tally`` does; see its docstring.

    The tables come back as (length, columns), each column a Series where the compiled module
    gives a pair of capsules.
    """
    if not (isinstance(keys, tuple) and isinstance(flag_values, tuple) and isinstance(weights, tuple)
            and len(weights) == 4):
        raise TypeError("keys and flag_values: expected tuples; weights: a tuple of 4")
    if not wanted & _WANT_SAMPLES:
        sample_limit = 0  # none to build: none to collect
    if (width <= 0 or not 0 <= sample_limit <= 1000 or not 0 <= sample_bits <= 63 or top < 0
            or len(keys) > _MAX_KEYS or (lines is None and sample_limit > 0) or (skip and flag is None)):
        raise ValueError("width > 0, 0 <= sample_limit <= 1000, 0 <= sample_bits <= 63, top >= 0, "
                         "at most 8 keys, lines for samples, flag for skip")
    rows = _rows(us, lines, keys, flag, flag_values, weights)
    counted = _counted(rows, width, lo, hi, None if flag is None else _strings(flag_values), skip, weights)
    groups = _groups(counted, len(keys), weights)
    key_columns = _key_columns(groups, keys, rows, emit_keys)
    newest = counted["us"].sort(descending=True).head(top).to_list() if top else []
    return (
        _table(groups, key_columns, _GROUP_INTS, wanted & _WANT_GROUPS),
        _samples(counted, groups, key_columns, len(keys), sample_limit, sample_bits),
        _table(_totals(groups), [], _TOTAL_INTS, wanted & _WANT_TOTALS),
        newest,
    )


def _rows(us: object, lines: object, keys: tuple, flag: object, flag_values: tuple,
          weights: tuple) -> dict[str, _Column]:
    """The input columns, opened and checked in the C's order (so that the same input fails the same way)."""
    rows = {"us": _open(us, "us")}
    if lines is not None:
        rows["line"] = _open(lines, "lines")
    for k, capsule in enumerate(keys):
        rows[f"key{k}"] = _open(capsule, "keys")
    for name, capsule in zip(_WEIGHTS, weights, strict=True):
        if capsule is not None:
            rows[name] = weight = _open(capsule, name, nullable=name in ("first", "last"))
            if weight.strings or weight.unsigned:
                raise TypeError(f"{name}: expected an Int64 column")
    if flag is not None:
        rows["flag"] = _open(flag, "flag")
        if not rows["flag"].strings or len(flag_values) > 64:
            raise ValueError("flag: expected a String column and at most 64 flag values")
        if not all(isinstance(value, bytes) for value in flag_values):
            raise TypeError("flag_values: expected bytes")
    if any(rows[name].strings or rows[name].unsigned for name in ("us", "line") if name in rows):
        raise TypeError('us and lines: expected Int64 or Datetime("us") columns')
    if len({len(column.values) for column in rows.values()}) > 1:
        raise ValueError("us, lines, keys, flag and weights: expected columns of one length")
    if len(rows["us"].values) >= 2**31 - 1:
        raise ValueError("us: expected fewer than 2**31 rows")
    return rows


def _strings(values: tuple[bytes, ...]) -> list[str]:
    """The flag values as strings; one that is not UTF-8 is left out, as it equals no string of a column."""
    strings = []
    for value in values:
        try:
            strings.append(value.decode())
        except UnicodeDecodeError:
            continue
    return strings


def _counted(rows: dict[str, _Column], width: int, lo: int, hi: int, flag_values: list[str] | None, skip: bool,
             weights: tuple) -> pl.DataFrame:
    """The rows with lo <= us <= hi (and, with ``skip``, a flag value not among ``flag_values``), in order:
    their keys, window, weight and flagged weight (``marked``)."""
    frame = pl.DataFrame([column.values.alias(name) for name, column in rows.items()]).with_row_index("row")
    weight = pl.col("counts") if weights[0] is not None else pl.lit(1, pl.Int64)
    if weights[1] is not None:
        marked = pl.col("flagged")
    elif flag_values is not None and not skip:
        marked = pl.when(pl.col("flag").is_in(flag_values)).then(weight).otherwise(0)
    else:
        marked = weight
    counted = pl.col("us").is_between(lo, hi)
    if skip:
        counted &= ~pl.col("flag").is_in(flag_values)
    return frame.filter(counted).with_columns(
        window=pl.col("us") // width, weight=weight, marked=marked,
    )


def _groups(counted: pl.DataFrame, n_keys: int, weights: tuple) -> pl.DataFrame:
    """One row per (keys, window), ordered by window, then by first appearance."""
    if weights[2] is not None or weights[3] is not None:  # folding tallies: the times come with the rows
        first = pl.col("first").min() if weights[2] is not None else pl.lit(None, pl.Int64)
        last = pl.col("last").max() if weights[3] is not None else pl.lit(None, pl.Int64)
    else:
        first = pl.col("us").filter(pl.col("marked") != 0).min()
        last = pl.col("us").filter(pl.col("marked") != 0).max()
    by = [*(f"key{k}" for k in range(n_keys)), "window"]
    groups = counted.group_by(by, maintain_order=True).agg(
        count=pl.col("weight").sum(), flagged=pl.col("marked").sum(), first=first, last=last,
    ).sort("window", maintain_order=True)
    # The C starts first at INT64_MAX and last at INT64_MIN, and reports both as null while first is MAX.
    timed = pl.col("first").is_not_null() & (pl.col("first") < _INT64_MAX)
    return groups.with_columns(
        first=pl.when(timed).then("first"), last=pl.when(timed).then(pl.col("last").fill_null(_INT64_MIN)),
    ).with_row_index("group")


def _totals(groups: pl.DataFrame) -> pl.DataFrame:
    """Per window: the groups' counts and flagged counts summed."""
    return groups.group_by("window", maintain_order=True).agg(pl.col("count").sum(), pl.col("flagged").sum())


def _samples(counted: pl.DataFrame, groups: pl.DataFrame, key_columns: list[pl.Series], n_keys: int,
             sample_limit: int, sample_bits: int) -> tuple:
    """Per group, its flagged rows with the smallest lines (the earlier row first on a tie), in group order."""
    if not sample_limit:
        return _table(None, key_columns, _SAMPLE_INTS, False)
    by = [*(f"key{k}" for k in range(n_keys)), "window"]
    marked = counted.filter(pl.col("marked") != 0)
    if sample_bits:  # picked in C by finish(row_hash(keys) ^ us * P3)'s leading bits
        keyed = _row_hashes([marked[f"key{k}"] for k in range(n_keys)], marked.height)
        us = marked["us"].to_numpy().astype(np.int64).view(np.uint64)
        marked = marked.filter(pl.Series(shr(finish(keyed ^ (us * P3)), 64 - sample_bits) == 0))
    flagged = (
        marked.select(*by, "us", "line", "row")
        .join(groups.select(*by, "group"), on=by).sort("group", "line", "row")
    )
    group = flagged["group"].to_numpy().astype(np.int64)
    rank = _rank_in_run(group)
    kept = np.flatnonzero(rank < sample_limit)
    samples = flagged[kept].with_columns(
        n=pl.Series(np.where(rank[kept] == 0, groups["flagged"].to_numpy()[group[kept]], 0)),
    )
    return _table(samples, [column.gather(samples["group"]) for column in key_columns], _SAMPLE_INTS, True)


def _rank_in_run(values: np.ndarray) -> np.ndarray:
    """Each value's place in its run of equal values (0 for the first of a run)."""
    starts = np.flatnonzero(np.diff(values, prepend=values[:1] - 1) != 0) if values.size else values
    return np.arange(values.size) - np.repeat(starts, np.diff(np.append(starts, values.size)))


def _table(frame: pl.DataFrame | None, key_columns: list[pl.Series], ints: tuple[str, ...],
           wanted: int | bool) -> tuple:
    """A table as (length, columns): the key columns, then the int64 ones; with no rows unless wanted."""
    if frame is None or not wanted:
        empty = [pl.Series(name, [], dtype=pl.Int64) for name in ints]
        return 0, (*(column.clear() for column in key_columns), *empty)
    return frame.height, (*key_columns, *(frame[name].cast(pl.Int64).alias(name) for name in ints))


# ---- Keys and their hash ------------------------------------------------------------------------


def _key_columns(groups: pl.DataFrame, keys: tuple, rows: dict[str, _Column], emit_keys: bool) -> list[pl.Series]:
    """Each group's keys, as the C hands them back (strings, Int64, or UInt64), or their hash alone."""
    names = [f"key{k}" for k in range(len(keys))]
    if emit_keys:
        kept = (own_bytes(pl.col(name)).alias(name) if rows[name].strings else pl.col(name) for name in names)
        return groups.select(kept).get_columns()
    return [pl.Series("hash", _key_hashes([groups[name] for name in names], groups.height), dtype=pl.UInt64)]


def _key_hashes(columns: list[pl.Series], height: int) -> np.ndarray:
    """finish(row_hash) in core/_tally.c: each key as two words, folded into one hash per row."""
    return finish(_row_hashes(columns, height))


def _row_hashes(columns: list[pl.Series], height: int) -> np.ndarray:
    """row_hash in core/_tally.c (not finished)."""
    h = np.full(height, _SEED, dtype=np.uint64)
    for column in columns:
        if column.dtype == pl.String:
            first, second = _string_words(column)
        else:
            first, second = as_words(column.to_numpy()), np.zeros(height, dtype=np.uint64)
        h = (h ^ (first * P1) ^ shr(second * P2, 7)) * P2
        h ^= shr(h, 29)
    return h


def _string_words(strings: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Each string as two words: up to 12 bytes, its Arrow view's length and bytes (inline_words);
    longer, its length and bytes folded by long_words."""
    texts = Texts.of(strings)
    n, at = texts.lengths, texts.starts
    first = n.astype(np.uint64) | (texts.words(at, np.minimum(n, 4)) << np.uint64(32))
    second = texts.words(at + 4, np.clip(n - 4, 0, 8))
    long = np.flatnonzero(n > 12)
    first[long], second[long] = _long_words(texts, long)
    return first, second


def _long_words(texts: Texts, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """long_words in core/_tally.c: two lanes over 16 bytes a round, then the last 8 bytes."""
    n, at = texts.lengths[rows], texts.starts[rows]
    a, b = n.astype(np.uint64) * P3, np.zeros(rows.size, dtype=np.uint64)
    active, i = np.arange(rows.size), 0
    while (active := active[i + 16 <= n[active]]).size:
        a[active] = rotl(a[active] + texts.words(at[active] + i) * P1, 23)
        b[active] = rotl(b[active] + texts.words(at[active] + i + 8) * P2, 29)
        i += 16
    a += texts.words(at + n - 8) * P1
    stopped = n // 16 * 16  # where the rounds stopped
    tail = np.flatnonzero(stopped + 8 < n)
    b[tail] += texts.words(at[tail] + stopped[tail]) * P2
    return a, b
