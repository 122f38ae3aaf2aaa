"""Frames and columns put together from Series as they are, without a Polars query each time.

A query (``select``, ``with_columns``) has a fixed cost and goes through Polars' thread pool; per
batch and per rule, those costs added up to more than the work they did.
"""

from __future__ import annotations

import polars as pl


class Columns(dict[str, pl.Series]):
    """A table of a tally as its named columns: picking and renaming them runs no Polars query."""

    @property
    def height(self) -> int:
        return len(next(iter(self.values()))) if self else 0

    def frame(self, **columns: str | pl.Series) -> pl.DataFrame:
        """A frame whose columns are named by the keywords: each a column of this table, or a Series."""
        return pl.DataFrame([
            (self[source] if isinstance(source, str) else source).alias(name) for name, source in columns.items()
        ])


def constant(value: object, height: int, dtype: pl.DataType) -> pl.Series:
    """A column of ``height`` copies of ``value``."""
    return pl.Series([value], dtype=dtype).new_from_index(0, height)
