"""An exact, mergeable count table kept as a Polars frame, shared by the counting rule types."""

from __future__ import annotations

import polars as pl

#: Fields of a record that counting rules may group by.
FIELDS = ("status", "service", "user")
_COMPACT_AFTER = 16


class CountTable:
    """Counts per key; ``add`` a frame of (key, count) rows, ``merge`` another table, read ``top``.

    Partial counts are appended and summed in one vectorised step every few additions, which
    keeps both the number of Python operations and the memory of repeated keys small.
    """

    def __init__(self, dtype: pl.DataType) -> None:
        self._dtype = dtype
        self._parts: list[pl.DataFrame] = []

    def add(self, counts: pl.DataFrame) -> None:
        """Add a frame with columns ``key`` and ``count``."""
        self._parts.append(counts.select(pl.col("key").cast(self._dtype), pl.col("count").cast(pl.Int64)))
        if len(self._parts) > _COMPACT_AFTER:
            self._compact()

    def add_values(self, values: pl.Series) -> None:
        """Count each value of a series once."""
        self.add(values.rename("key").value_counts(name="count"))

    def merge(self, other: CountTable) -> None:
        """Add every count of ``other``."""
        self._parts.extend(other._parts)
        self._compact()

    def frame(self) -> pl.DataFrame:
        """All counts, most frequent first, ties by key ascending."""
        self._compact()
        return self._parts[0].sort(["count", "key"], descending=[True, False])

    def _compact(self) -> None:
        if not self._parts:
            self._parts = [pl.DataFrame(schema={"key": self._dtype, "count": pl.Int64})]
            return
        if len(self._parts) > 1:
            self._parts = [pl.concat(self._parts).group_by("key").agg(pl.col("count").sum())]
