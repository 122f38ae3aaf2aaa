"""Tallies of a frame's rows per key and event-time window, in one compiled pass (``core/_tally.c``).

A windowed detector needs, per (key, window) of a batch: how many records, how many of them are
*flagged* (a failure, say), the first and last time of the flagged ones and the smallest of
their line numbers. In Polars that is several group-bys and filters, each a pass over the batch;
``tally`` does it in one pass without the GIL, hashing each key once.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import polars as pl

from core import compiled
from core.columns import Columns
from core.parse import ORDINAL_LINE_BITS, Batch

#: The version of ``core/_tally.c`` this module is written for.
TALLY_VERSION = 6
_tally = compiled.load("_tally", TALLY_VERSION, "the compiled tally")
#: Wider than any time in microseconds (years 1 to 9999 are within 2.6e17): ``-EVER`` and
#: ``EVER`` bound a tally that counts every row, and a window ``EVER`` wide holds them all.
EVER = 2**62
#: The tables a tally can build, in the order of ``core/_tally.c``'s bit mask.
TABLES = ("groups", "samples", "totals")


class Weights(NamedTuple):
    """Columns that make each row stand for many, to fold tallies: a row adds its ``counts`` (not 1)
    and its ``flagged`` count (not its flag), and brings its ``first`` and ``last`` times (nulls
    are skipped) instead of its own time. Each is a column name, or None for the usual."""

    counts: str | None = None
    flagged: str | None = None
    first: str | None = None
    last: str | None = None


@dataclass(frozen=True)
class Tally:
    """What ``tally`` found. Groups and samples are ordered by window, then by first appearance.

    - ``groups``: the keys (or ``hash``), ``window``, ``count``, ``flagged``, and ``first`` /
      ``last``, the smallest and largest time of the flagged rows (null if none);
    - ``samples``: per group, the flagged rows with the smallest line numbers: the keys (or
      ``hash``), ``window``, ``us``, ``line``, and ``n``, the group's flagged count on its first
      sample and 0 on the others (so that summing ``n`` gives the flagged records);
    - ``totals``: ``window``, ``count``, ``flagged``, per window;
    - ``newest``: the largest times counted, largest first;
    - ``lo``, ``hi``: the range of times counted.
    """

    groups: Columns
    samples: Columns
    totals: Columns
    newest: list[int]
    lo: int = -EVER
    hi: int = EVER


def tally(
    frame: pl.DataFrame,
    *,
    width: int,
    lo: int,
    hi: int,
    keys: Sequence[str] = (),
    flag: tuple[str, Collection[str]] | None = None,
    skip: tuple[str, Collection[str]] | None = None,
    sample_limit: int = 5,
    sample_one_in: int = 1,
    top: int = 100,
    hash_keys: bool = False,
    tables: Collection[str] = TABLES,
    time: str = "ts",
    line: str | pl.Series | None = "line",
    weights: Weights | None = None,
) -> Tally:
    """Tally ``frame``'s rows with ``lo <= time <= hi`` (microseconds) per ``keys`` and window of ``width``.

    A row's window is ``floor(time / width)``. ``flag`` is ``(column, values)``: rows whose
    ``column`` is one of ``values`` are flagged; without it every row is. ``skip``, also
    ``(column, values)`` and instead of ``flag``, leaves those rows out altogether (and flags every
    other): the unknown statuses of a batch are tallied without hashing its known ones. With ``hash_keys``
    the groups carry a stable 64-bit ``hash`` of their keys instead of the keys themselves.
    The columns must hold no nulls: times are Datetime or Int64 microseconds, keys strings or
    integers (Int64 and UInt64 keys come back as they are, other integers as Int64). Only the
    ``tables`` named are built; the others have no rows.

    With ``weights``, rows are themselves tallies being folded into one (see ``Weights``).
    ``line`` is a column's name or a Series of the frame's height: what samples are ranked by.
    With ``sample_one_in`` (a power of two) above 1, only that share of the flagged rows can be a
    sample: the ones a hash of their keys and time picks, the same rows however the input is split.
    """
    bits = sample_one_in.bit_length() - 1
    if sample_one_in < 1 or sample_one_in != 1 << bits:
        raise ValueError(f"sample_one_in: expected a power of two, got {sample_one_in}")
    if flag is not None and skip is not None:
        raise ValueError("flag and skip: give one of them")
    marks = flag if skip is None else skip
    flag_stream, flag_values = (None, ()) if marks is None else (_stream(frame[marks[0]]), _encoded(marks[1]))
    lines = frame[line] if isinstance(line, str) else line
    groups, samples, totals, newest = _tally.tally(
        _stream(frame[time]), None if lines is None else _stream(lines), tuple(_stream(frame[k]) for k in keys),
        flag_stream, flag_values, skip is not None, width, lo, hi, sample_limit, bits, top, not hash_keys,
        sum(1 << TABLES.index(name) for name in set(tables)),
        tuple(None if name is None else _stream(frame[name]) for name in (weights or Weights())),
    )
    names = ["hash"] if hash_keys else list(keys)
    return Tally(
        groups=_table(groups, [*names, "window", "count", "flagged", "first", "last"]),
        samples=_table(samples, [*names, "window", "us", "line", "n"]),
        totals=_table(totals, ["window", "count", "flagged"]),
        newest=newest,
        lo=lo,
        hi=hi,
    )


def shared(batch: Batch, *, counts_only: bool = False, **options: Any) -> Tally:
    """``tally(batch.frame, **options)``, made once per batch for the rules that ask for the same.

    With ``counts_only`` the caller reads only the groups' ``count`` column (and ``newest``,
    ``totals``' ``count``): then a tally of the same keys, windows and range made with any
    ``flag`` (which changes only ``flagged``, the times and the samples) serves it too. Error
    spikes and silent services both tally services by ten minutes, for instance.
    """
    key = tuple(sorted((name, _hashable(value)) for name, value in options.items()))
    counted = tuple(item for item in key if item[0] not in _NOT_COUNTS)  # what the counts depend on
    tables = frozenset(options.get("tables", TABLES))
    for made_key, made_counted, made_tables, made in batch.tallies:
        if made_key == key or (counts_only and made_counted == counted and tables <= made_tables):
            return made
    if batch.ordinal is not None and options.get("line", "line") == "line":
        found = _located(tally(batch.frame, **{**options, "line": batch.ordinal}), batch)
    else:
        found = tally(batch.frame, **options)
    batch.tallies.append((key, counted, tables, found))
    return found


def sample_places(batch: Batch, found: Tally) -> list[tuple[str, int]]:
    """The (file, line) of each of the samples of a tally ``shared`` made of ``batch``."""
    lines = found.samples["line"].to_list()
    if not batch.files:
        return [(batch.path, line) for line in lines]
    return list(zip(found.samples["file"].cast(pl.String).to_list(), lines, strict=True))


def _located(found: Tally, batch: Batch) -> Tally:
    """A tally of a batch of several files, ranked by ``batch.ordinal``: its samples' ``line``
    split back into a ``file`` (Categorical) and the line in it.

    Samples are the smallest (file name, line) places, as when the files are tallied one by one
    and folded (``plugins.windows``).
    """
    samples = found.samples
    if not samples.height:
        return replace(found, samples=Columns(0, [*samples, "file"],
                                              (*(samples[n] for n in samples), pl.Series([], dtype=pl.Categorical))))
    packed = samples["line"].to_numpy()
    names = pl.Series(sorted(batch.files), dtype=pl.Categorical)
    file = names.gather(pl.Series(packed >> ORDINAL_LINE_BITS))
    line = pl.Series(packed & ((1 << ORDINAL_LINE_BITS) - 1))
    columns = {name: samples[name] for name in samples} | {"line": line, "file": file}
    return replace(found, samples=Columns(samples.height, list(columns), tuple(columns.values())))


#: Options that change a tally's flagged counts, times and samples, never its counts.
_NOT_COUNTS = ("flag", "sample_limit", "tables")


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return tuple(sorted(value))
    return value


def _table(made: tuple[int, tuple[tuple[object, object], ...]], names: list[str]) -> Columns:
    height, arrays = made
    return Columns(height, names, arrays)


def _stream(series: pl.Series) -> object:
    """The column as one Arrow chunk of a type the tally reads."""
    dtype = series.dtype
    if isinstance(dtype, pl.Datetime) and dtype.time_unit != "us":
        series = series.dt.cast_time_unit("us")
    elif isinstance(dtype, (pl.Categorical, pl.Enum)):
        series = series.cast(pl.String)
    elif dtype.is_integer() and dtype not in (pl.Int64, pl.UInt64):
        series = series.cast(pl.Int64)
    if series.n_chunks() > 1:
        series = series.rechunk()
    return series.__arrow_c_stream__()


def _encoded(values: Collection[str]) -> tuple[bytes, ...]:
    return tuple(value.encode() for value in values)
