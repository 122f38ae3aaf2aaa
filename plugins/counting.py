"""Mergeable count tables shared by the counting rule types: exact (Polars), or bounded (a sketch)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import polars as pl

from core import Rule
from core.rules import WITHOUT_MESSAGE

if TYPE_CHECKING:
    import datasketches

log = logging.getLogger(__name__)

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
        """Add a frame with columns ``key`` and ``count`` (of any integer type: compaction sums in Int64)."""
        if counts.schema["key"] != self._dtype:
            counts = counts.with_columns(pl.col("key").cast(self._dtype))
        self._parts.append(counts)
        if len(self._parts) > _COMPACT_AFTER:
            self._compact()

    def add_values(self, values: pl.Series) -> None:
        """Count each value of a series once."""
        self.add(values.rename("key").value_counts(name="count"))

    def merge(self, other: CountTable) -> None:
        """Add every count of ``other``."""
        self._parts.extend(other._parts)
        if len(self._parts) > _COMPACT_AFTER:
            self._compact()

    def frame(self) -> pl.DataFrame:
        """All counts, most frequent first, ties by key ascending."""
        self._compact()
        return self._parts[0].sort(["count", "key"], descending=[True, False])

    def _compact(self) -> None:
        if not self._parts:
            self._parts = [pl.DataFrame(schema={"key": self._dtype, "count": pl.Int64})]
            return
        if len(self._parts) > 1 or self._parts[0].schema["count"] != pl.Int64:
            parts = pl.concat(self._parts, how="vertical_relaxed")
            self._parts = [parts.group_by("key").agg(pl.col("count").cast(pl.Int64).sum())]

    def __getstate__(self) -> dict[str, Any]:
        self._compact()  # a checkpoint holds one folded table, not the parts waiting for it
        return self.__dict__

    def table(self) -> pl.DataFrame:
        """All counts, in no particular order."""
        self._compact()
        return self._parts[0]

    def rows(self) -> int:
        """Rows held, an upper bound of the distinct keys (repeated keys wait for compaction)."""
        return sum(part.height for part in self._parts)

    def distinct(self) -> int:
        """The number of distinct keys."""
        self._compact()
        return self._parts[0].height


#: Resident memory per distinct key of a ``CountTable``, measured with 250k-3M user names: the frame
#: holds ~20 bytes a key, but compaction (concat + group_by) and Polars' allocator keep far more.
BYTES_PER_KEY = 300
#: Resident memory per slot of a frequent items sketch of user names (measured: 2^20 slots, 54 MB).
BYTES_PER_SLOT = 64
MIN_LG_MAP, MAX_LG_MAP = 8, 24


def _datasketches() -> Any:
    """The datasketches module, imported when a sketch is first needed: with numpy it adds 70 ms
    to every start, and most runs stay exact."""
    import datasketches

    return datasketches


def sketch_size(max_bytes: int) -> int:
    """``lg_max_map_size`` of the largest frequent items sketch that fits ``max_bytes``."""
    return max(MIN_LG_MAP, min(MAX_LG_MAP, (max(1, max_bytes // BYTES_PER_SLOT)).bit_length() - 1))


class HeavyHitters:
    """String counts kept exact while they fit a memory bound, then in a frequent items sketch.

    Below ``max_bytes`` (about ``max_bytes / BYTES_PER_KEY`` distinct keys) this is a ``CountTable``
    and every count is exact. Once the distinct keys outgrow it, the counts are fed, with their
    weights, into Apache DataSketches' frequent items sketch, and the state stays approximate: its
    memory is fixed, each count is over-estimated by at most ``max_error``. Whether a state is
    approximate depends only on the distinct keys of all it has seen, never on the merge order.
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self.exact: CountTable | None = CountTable(pl.String())
        self.sketch: datasketches.frequent_strings_sketch | None = None
        self.max_bytes = max_bytes
        self.lg_map = 0  # the sketch's lg_max_map_size, once there is one

    @classmethod
    def upgrade(cls, counts: CountTable | HeavyHitters) -> HeavyHitters:
        """``counts`` as a ``HeavyHitters``: rule states pickled before the memory cap held a CountTable."""
        if isinstance(counts, HeavyHitters):
            return counts
        state = cls()
        state.exact = counts
        return state

    @property
    def approximate(self) -> bool:
        return self.sketch is not None

    @property
    def max_keys(self) -> int | None:
        return None if self.max_bytes is None else max(1, self.max_bytes // BYTES_PER_KEY)

    def limit(self, max_bytes: int) -> None:
        """Bound the state to ``max_bytes`` from now on; exact counts beyond it switch at once."""
        self.max_bytes = max_bytes
        self._fit()

    def add_values(self, values: pl.Series) -> None:
        """Count each value of a series once."""
        counts = values.rename("key").value_counts(name="count")
        if self.sketch is not None:
            _feed(self.sketch, counts)
            return
        self.exact.add(counts)
        self._fit()

    def merge(self, other: HeavyHitters) -> None:
        """Add every count of ``other``, exact or sketched."""
        if other.sketch is not None and self.sketch is None:
            self._to_sketch(other.lg_map)
        if self.sketch is None:
            self.exact.merge(other.exact)
            self._fit()
        elif other.sketch is not None:
            self.sketch.merge(other.sketch)
        else:
            _feed(self.sketch, other.exact.table())

    def frame(self) -> pl.DataFrame:
        """Exact counts, most frequent first (ties by key); only while not approximate."""
        if self.exact is None:
            raise ValueError("the counts are approximate; use frequent()")
        return self.exact.frame()

    def frequent(self, guaranteed: bool = False) -> list[tuple[str, int]]:
        """The sketch's items with their estimates, most frequent first (ties by key).

        With ``guaranteed``, only items certainly more frequent than the error bound (no false
        positives); otherwise every item that might be (no false negatives).
        """
        errors = _datasketches().frequent_items_error_type
        kind = errors.NO_FALSE_POSITIVES if guaranteed else errors.NO_FALSE_NEGATIVES
        items = self.sketch.get_frequent_items(kind)
        return sorted(((item, estimate) for item, estimate, _, _ in items), key=lambda kv: (-kv[1], kv[0]))

    def describe(self) -> dict[str, Any]:
        """What a reader needs to judge approximate counts: the sketch and its error bound."""
        return {
            "approximate": True,
            "sketch": "frequent_items",
            "lg_max_map_size": self.lg_map,
            "max_error": self.max_error(),
            "total_weight": self.sketch.total_weight,
        }

    def max_error(self) -> int:
        """An estimate is never below the true count, nor above it by more than this."""
        # Upper minus lower bound is the sketch's offset for any item, tracked or not; the C++
        # get_maximum_error() is not exposed in Python. No record field is ever empty.
        return int(self.sketch.get_upper_bound("") - self.sketch.get_lower_bound(""))

    def _fit(self) -> None:
        keys = self.max_keys
        if self.sketch is None and keys is not None and self.exact.rows() > keys and self.exact.distinct() > keys:
            self._to_sketch(sketch_size(self.max_bytes))

    def _to_sketch(self, lg: int) -> None:
        sketch = _datasketches().frequent_strings_sketch(lg)
        _feed(sketch, self.exact.table())
        self.sketch, self.exact, self.lg_map = sketch, None, lg
        log.debug("counts outgrew %d keys: now a frequent items sketch of 2^%d slots", self.max_keys or 0, lg)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.sketch is not None:
            state["sketch"] = self.sketch.serialize()  # the sketch itself does not pickle
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("sketch") is not None:
            state["sketch"] = _datasketches().frequent_strings_sketch.deserialize(state["sketch"])
        self.__dict__.update(state)


def _feed(sketch: datasketches.frequent_strings_sketch, counts: pl.DataFrame) -> None:
    update = sketch.update
    for key, count in counts.iter_rows():
        update(key, count)


class FieldCounts(Rule):
    """Base of the rule types that count records per value of one ``field`` in a ``HeavyHitters``."""

    columns = WITHOUT_MESSAGE

    def setup(self, field: str) -> None:
        self.field = field
        self.counts = HeavyHitters()

    def limit_state(self, max_bytes: int) -> None:
        super().limit_state(max_bytes)
        self.counts.limit(max_bytes)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.counts = HeavyHitters.upgrade(self.counts)  # a checkpoint written before the memory cap

    def update(self, batch: Any) -> None:
        self.counts.add_values(batch.frame[self.field])

    def merge(self, other: FieldCounts) -> None:
        self.counts.merge(other.counts)
