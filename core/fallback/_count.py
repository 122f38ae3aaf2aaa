"""Pure Python stand-in for ``core/_count.c``: the same ``Counts`` table, purge for purge.

A dict keeps the keys in the order they came, as the compiled table's entries do (a purge keeps
the survivors' order, a key dropped and seen again goes last), so that both tables hold the same
keys and counts after the same input, exact or not. Much slower: a dict operation per value.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import polars as pl

#: The version of ``core/_count.c`` this stands in for.
VERSION = 5
_MAGIC = b"OMPC"
_FORMAT_VERSION = 1
# The compiled table's header: magic, version, approximate, reserved, capacity, offset, total, n.
_HEADER = struct.Struct("<4sIII4q")
_ENTRY = struct.Struct("<qI")
#: The compiled table's entry and slot sizes, for ``nbytes`` (see core/counts.py).
_ENTRY_BYTES, _SLOT_BYTES = 32, 4
_MAX_CAPACITY = 0xFFFFFFFF // 4
#: Keys longer than this many bytes are kept apart in the compiled table; each ``_LONG_KEY_BYTES``
#: of theirs weigh as one key more against the capacity.
_INLINE, _LONG_KEY_BYTES = 12, 43


class _Stream:
    """A capsule of an Arrow C stream, as Polars imports it."""

    def __init__(self, capsule: object) -> None:
        self.capsule = capsule

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return self.capsule


def _values(capsule: object) -> list[Any]:
    return pl.Series(_Stream(capsule)).to_list()


class Counts:
    """Counts(capacity): counts per string key, exact up to capacity keys (see core/_count.c)."""

    def __init__(self, capacity: int) -> None:
        if not 1 <= capacity <= _MAX_CAPACITY:
            raise ValueError(f"capacity must be between 1 and {_MAX_CAPACITY}, got {capacity}")
        self.capacity = capacity
        self.offset = 0
        self.total = 0
        self.approximate = False
        self._counts: dict[str, int] = {}
        self._long = 0  # the bytes of the keys longer than _INLINE, as the compiled table's arena holds them

    def __len__(self) -> int:
        return len(self._counts)

    @property
    def nbytes(self) -> int:
        """What the compiled table would hold for these keys: entries, and slots at most 3/4 full."""
        keys = len(self._counts)
        slots = 2048
        while 4 * keys > 3 * slots:
            slots *= 2
        return _ENTRY_BYTES * keys + _SLOT_BYTES * slots + self._long

    def add(self, stream: object) -> None:
        values = pl.Series(_Stream(stream)).drop_nulls()
        # Each distinct value once, in order of first appearance, with its count: the same keys in
        # the same order as adding the values one by one, as long as no purge comes in between.
        grouped = values.to_frame("key").group_by("key", maintain_order=True).len()
        self.total += len(values)
        lengths = grouped["key"].str.len_bytes()
        longest = int(lengths.filter(lengths > _INLINE).sum())
        if len(self._counts) + grouped.height + (self._long + longest) // _LONG_KEY_BYTES <= self.capacity:
            counts = self._counts  # all of them fit: no purge can come in between
            for (key, n), length in zip(grouped.iter_rows(), lengths, strict=True):
                if key not in counts and length > _INLINE:
                    self._long += length
                counts[key] = counts.get(key, 0) + n
            return
        for key in values.to_list():
            self._add(key, 1)

    def add_weighted(self, keys: object, weights: object) -> None:
        keys, weights = _values(keys), _values(weights)
        if len(keys) != len(weights) or None in keys or None in weights:
            raise TypeError("expected a String column of keys and an Int64 column of weights as long")
        for key, weight in zip(keys, weights, strict=True):
            self.total += weight
            self._add(key, weight)

    def positions(self, stream: object) -> tuple[bytes, bytes]:
        if self.offset:
            raise ValueError("positions: the table was purged: its entries are not numbered")
        numbers = {key: number for number, key in enumerate(self._counts)}
        found = [(row, numbers[value]) for row, value in enumerate(_values(stream)) if value in numbers]
        rows = np.array([row for row, _ in found], dtype=np.int64)
        return rows.tobytes(), np.array([number for _, number in found], dtype=np.int64).tobytes()

    def merge(self, other: Counts) -> None:
        if not isinstance(other, Counts):
            raise TypeError(f"expected Counts, got {type(other).__name__}")
        if other is self:
            raise ValueError("cannot merge a Counts into itself")
        self.approximate |= other.approximate
        self.offset += other.offset
        self.total += other.total
        for key, count in list(other._counts.items()):
            self._add(key, count)

    def _add(self, key: str, weight: int) -> None:
        counts = self._counts
        if key in counts:
            counts[key] += weight
            return
        counts[key] = weight
        length = len(key.encode())
        if length > _INLINE:
            self._long += length
        self._purge_to_capacity()

    def _over_capacity(self) -> bool:
        return len(self._counts) + self._long // _LONG_KEY_BYTES > self.capacity

    def _purge_to_capacity(self) -> None:
        while self._counts and self._over_capacity():
            self.approximate = True
            self._purge()

    def _purge(self) -> None:
        values = sorted(self._counts.values())
        median = values[(len(values) - 1) // 2]
        self._counts = {key: count - median for key, count in self._counts.items() if count > median}
        self._long = sum(length for length in (len(key.encode()) for key in self._counts) if length > _INLINE)
        self.offset += median

    def top(self, k: int) -> list[tuple[str, int]]:
        if k < 0:
            raise ValueError("k must be at least 0")
        # The compiled table orders ties by the keys' UTF-8 bytes.
        ranked = sorted(self._counts.items(), key=lambda kv: (-kv[1], kv[0].encode()))
        return ranked[:k]

    def items(self) -> tuple[pl.Series, pl.Series]:
        return (pl.Series("key", list(self._counts), pl.String()),
                pl.Series("count", list(self._counts.values()), pl.Int64()))

    def limit(self, capacity: int) -> None:
        if not 1 <= capacity <= _MAX_CAPACITY:
            raise ValueError(f"capacity out of range: {capacity}")
        self.capacity = capacity
        self._purge_to_capacity()

    def to_bytes(self) -> bytes:
        header = _HEADER.pack(_MAGIC, _FORMAT_VERSION, int(self.approximate), 0, self.capacity, self.offset,
                              self.total, len(self._counts))
        parts = [header]
        for key, count in self._counts.items():
            raw = key.encode()
            parts += [_ENTRY.pack(count, len(raw)), raw]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> Counts:
        try:
            return cls._read(bytes(data))
        except (struct.error, UnicodeDecodeError, ValueError) as exc:
            raise ValueError("not a serialised Counts table") from exc

    @classmethod
    def _read(cls, data: bytes) -> Counts:
        magic, version, approximate, _, capacity, offset, total, n = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _FORMAT_VERSION or not 0 <= n <= capacity or offset < 0:
            raise ValueError("bad header")
        table = cls(capacity)
        at = _HEADER.size
        for _ in range(n):
            count, length = _ENTRY.unpack_from(data, at)
            at += _ENTRY.size
            key = data[at:at + length]
            if len(key) != length or count < 1:
                raise ValueError("truncated")
            at += length
            table._add(key.decode(), count)
        if at != len(data):
            raise ValueError("trailing bytes")
        table.approximate, table.offset, table.total = bool(approximate), offset, total
        return table


def repeats(hashes: Any) -> bytes:
    """The rows (int64, ascending) of a buffer of 64-bit values whose value occurs more than once."""
    values = np.frombuffer(memoryview(hashes).cast("B"), dtype=np.uint64)
    ordered = np.sort(values)
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        return b""
    return np.flatnonzero(np.isin(values, ordered[1:][same])).astype(np.int64).tobytes()


def long_values(stream: object) -> bytes:
    """The rows of a String column whose value is longer than 12 bytes, and their lengths, as int64 pairs."""
    lengths = pl.Series(_Stream(stream)).str.len_bytes().to_numpy()
    rows = np.flatnonzero(np.nan_to_num(lengths.astype(np.float64), nan=0) > _INLINE)
    return np.column_stack([rows, lengths[rows]]).astype(np.int64).tobytes()
