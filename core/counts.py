"""Counts per string key: exact while the keys fit a capacity, a bounded frequent-items summary beyond.

The table is compiled (``core/_count.c``, which says how it works); ``core/fallback/_count.py`` is
its pure Python stand-in, purge for purge the same. ``KeyCounts`` wraps it for the rules: Polars
columns in, sorted lists and frames out, and a state that pickles as the table's own bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from core import compiled, safestate

#: The version of ``core/_count.c`` this module is written for.
COUNT_VERSION = 5
_count = compiled.load("_count", COUNT_VERSION, "the compiled counts")

#: Memory of a table, per key of up to 12 bytes: an entry of 32 bytes, and slots of 4 bytes, a
#: power of two of them at most 3/4 full (measured with 2M user names: 40.4 bytes a key). A longer
#: key adds its length. Capacities are sized from these (``KeyCounts.capacity_for``).
ENTRY_BYTES, SLOT_BYTES = 32, 4
#: The most a key can cost (slots just over 3/8 full). The table weighs each this many bytes of
#: keys longer than 12 as one key more against its capacity (core/_count.c), so that long keys
#: make it approximate sooner rather than take it past its memory.
BYTES_PER_KEY = 43
#: Keys up to this many bytes are kept in their entry; longer ones in the table's arena.
INLINE_BYTES = 12
#: The table's own object and alignment, whatever its keys.
OVERHEAD = 4096
#: The fewest keys a table keeps, whatever its bound: a summary this size still finds every key
#: with more than a few tenths of a per cent of the records.
MIN_CAPACITY = 1024
#: The most keys a table can keep (its slots are 32-bit: core/_count.c and its stand-in refuse more).
#: A bound that would allow more (``limits.memory_mb`` of 64 GB for one rule) keeps this many.
MAX_CAPACITY = 0xFFFFFFFF // 4


@safestate.register
class KeyCounts:
    """Counts of the values of String columns; see ``core/_count.c``.

    While at most ``capacity`` distinct values came, every count is exact. Beyond, the table is
    a Misra-Gries summary of ``capacity`` keys for good: ``max_error`` says by how much a count
    may be off, and whether a table is exact depends only on the distinct values of everything it
    counted, never on how the input was split or merged.
    """

    def __init__(self, capacity: int) -> None:
        self.table = _count.Counts(_within(capacity))

    @staticmethod
    def capacity_for(max_bytes: int) -> int:
        """The largest capacity whose table stays within ``max_bytes`` (keys of up to 12 bytes), at
        least ``MIN_CAPACITY`` and at most ``MAX_CAPACITY``."""
        max_bytes -= OVERHEAD
        capacity = max(1, max_bytes // BYTES_PER_KEY)
        while True:  # the slots of ``capacity + 1`` keys may leave room for more keys in the same slots
            more = max_bytes // ENTRY_BYTES
            slots = _slots(capacity)
            fits = min(more, (max_bytes - SLOT_BYTES * slots) // ENTRY_BYTES, slots * 3 // 4)
            if fits <= capacity or capacity >= MAX_CAPACITY:
                return min(MAX_CAPACITY, max(MIN_CAPACITY, capacity))
            capacity = fits

    @property
    def capacity(self) -> int:
        return self.table.capacity

    @property
    def approximate(self) -> bool:
        return bool(self.table.approximate)

    @property
    def max_error(self) -> int:
        """A listed estimate is never below the true count, nor above it by more than this; a key
        not listed has at most this many."""
        return int(self.table.offset)

    @property
    def total(self) -> int:
        """Everything counted (rows, or their weights)."""
        return int(self.table.total)

    @property
    def nbytes(self) -> int:
        return int(self.table.nbytes)

    def __len__(self) -> int:
        return len(self.table)

    def limit(self, capacity: int) -> None:
        """Keep at most ``capacity`` keys from now on (a table holding more turns approximate now)."""
        if _within(capacity) != self.table.capacity:
            self.table.limit(_within(capacity))

    def add(self, values: pl.Series) -> None:
        """Count each value once (nulls are skipped)."""
        self.table.add(_stream(values))

    def merge(self, other: KeyCounts) -> None:
        """Add every count of ``other``."""
        self.table.merge(other.table)

    def top(self, k: int) -> list[tuple[str, int]]:
        """The ``k`` keys counted most, most first, ties by key; approximate ones as estimates
        (at least the true count, at most ``max_error`` above it)."""
        offset = self.max_error
        return [(key, count + offset) for key, count in self.table.top(k)]

    def certain(self) -> list[tuple[str, int]]:
        """Every key certainly counted more than any key not kept, with its estimate, most first.

        While exact, that is every key with its count.
        """
        offset = self.max_error
        return [(key, count + offset) for key, count in self.table.top(len(self.table)) if count > offset]

    def describe(self) -> dict[str, Any]:
        """What a reader needs to judge approximate counts: the summary and its error bound."""
        return {
            "approximate": True,
            "sketch": "misra_gries",
            "capacity": self.capacity,
            "max_error": self.max_error,
            "total_weight": self.total,
        }

    def __getstate__(self) -> dict[str, Any]:
        return {"table": self.table.to_bytes()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.table = _count.Counts.from_bytes(state["table"])


def _within(capacity: int) -> int:
    """``capacity`` within what a table can keep: 1 to ``MAX_CAPACITY``."""
    return min(MAX_CAPACITY, max(1, capacity))


def _slots(keys: int) -> int:
    """Slots of a table holding ``keys`` keys: a power of two, at least 2048, at most 3/4 full (core/_count.c)."""
    size = 2048
    while 4 * keys > 3 * size:
        size *= 2
    return size


def _stream(series: pl.Series) -> object:
    """The column as one Arrow chunk, as the table reads it."""
    if isinstance(series.dtype, (pl.Categorical, pl.Enum)):
        series = series.cast(pl.String)
    if series.n_chunks() > 1:
        series = series.rechunk()
    return series.__arrow_c_stream__()


def capacity_holding(values: list[str]) -> int:
    """The capacity that holds the distinct ``values`` exactly: a key each, and long keys' bytes (``BYTES_PER_KEY``)."""
    long = sum(length for length in (len(value.encode()) for value in values) if length > INLINE_BYTES)
    return max(1, len(values) + long // BYTES_PER_KEY)


def positions(column: pl.Series, values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a String ``column`` whose value is one of ``values`` (distinct), and which one each is.

    One compiled pass without the GIL and without a Polars query: a join of 90k rows of user
    names to a few of them took 2 ms, 5 ms while the other worker ran queries (Polars' thread
    pool is shared).
    """
    table = _count.Counts(capacity_holding(values))
    table.add(_stream(pl.Series(values, dtype=pl.String())))
    if len(table) != len(values):
        raise ValueError("positions: expected distinct values")
    rows, which = table.positions(_stream(column))
    return np.frombuffer(rows, dtype=np.int64), np.frombuffer(which, dtype=np.int64)


def long_values(column: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a String ``column`` whose value is longer than ``INLINE_BYTES``, and their lengths.

    A compiled pass over the string views' lengths (a Polars ``str.len_bytes`` in each worker cost
    about 1 ms a batch while the other worker ran queries).
    """
    pairs = np.frombuffer(_count.long_values(_stream(column)), dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def repeated_rows(hashes: np.ndarray) -> np.ndarray:
    """The rows of ``hashes`` (64-bit values) whose value occurs more than once, ascending.

    One compiled pass over a hash table, without the GIL: about 1.1 ms for a batch of 55k records,
    where a numpy sort and a Polars ``is_in`` took about 2 ms.
    """
    return np.frombuffer(_count.repeats(np.ascontiguousarray(hashes)), dtype=np.int64)
