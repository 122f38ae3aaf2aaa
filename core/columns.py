"""Frames and columns put together from Series as they are, without a Polars query each time.

A query (``select``, ``with_columns``) has a fixed cost and goes through Polars' thread pool; per
batch and per rule, those costs added up to more than the work they did.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping

import numpy as np
import polars as pl

#: A column as a module hands it over: an (arrow_schema, arrow_array) pair of capsules from a
#: compiled module, a Series from its pure Python stand-in (``core/fallback/``).
ModuleColumn = tuple[object, object] | pl.Series


class Columns(Mapping[str, pl.Series]):
    """A table a compiled module (or its stand-in) made, as its named columns, each made a Series when first read.

    Picking and renaming columns runs no Polars query, and a column nobody reads is never
    imported (importing one holds the GIL).
    """

    def __init__(self, height: int, names: list[str], arrays: tuple[ModuleColumn, ...]) -> None:
        self.height = height
        self._arrays = dict(zip(names, arrays, strict=True))
        self._series: dict[str, pl.Series] = {}

    def __getitem__(self, name: str) -> pl.Series:
        if name not in self._series:
            self._series[name] = as_series(self._arrays[name]).alias(name)
        return self._series[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def frame(self, **columns: str | pl.Series) -> pl.DataFrame:
        """A frame whose columns are named by the keywords: each a column of this table, or a Series."""
        return pl.DataFrame([
            (self[source] if isinstance(source, str) else source).alias(name) for name, source in columns.items()
        ])


def as_series(column: ModuleColumn) -> pl.Series:
    """A column a compiled module or its stand-in made, as a Series (imported without a copy)."""
    return column if isinstance(column, pl.Series) else pl.Series(ArrowColumn(column))


class ArrowColumn:
    """A column a compiled module made, for Polars to take through the Arrow PyCapsule interface."""

    def __init__(self, capsules: tuple[object, object]) -> None:
        self.capsules = capsules

    def __arrow_c_array__(self, requested_schema: object | None = None) -> tuple[object, object]:
        return self.capsules


def constant(value: object, height: int, dtype: pl.DataType) -> pl.Series:
    """A column of ``height`` copies of ``value``."""
    return _one(value, dtype).new_from_index(0, height)


@functools.lru_cache(maxsize=1024)
def _one(value: object, dtype: pl.DataType) -> pl.Series:
    # Made once per value: building a Series from Python (a Categorical above all) holds the GIL
    # longer than repeating it does, and every chunk of a file wants its path.
    return pl.Series([value], dtype=dtype)


def stack(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """``pl.concat(frames, how="vertical")`` (frames of one schema, at least one), appended chunk by chunk.

    ``pl.concat`` goes through Polars' thread pool: with two workers concatenating at once, 4
    frames of 20k rows took 123 us a pair of calls instead of 14 us for one. Appending them to a
    copy of the first takes 4 to 9 us, and makes the same frame (of as many chunks).
    """
    if len(frames) == 1:
        return frames[0]
    stacked = frames[0].clone()  # a new frame of the same columns, not a copy of their data
    for frame in frames[1:]:
        stacked.vstack(frame, in_place=True)
    return stacked


def rows_of(frame: pl.DataFrame, keep: np.ndarray) -> pl.DataFrame:
    """``frame.filter(keep)`` for a boolean mask, column by column: no Polars query (see ``stack``)."""
    mask = pl.Series(keep)
    return pl.DataFrame([column.filter(mask) for column in frame.get_columns()])
