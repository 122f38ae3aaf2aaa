"""Event-time windows for detectors: per-window tables merged by summing, closed and evicted by a watermark.

A windowed detector keeps a few Polars tables whose rows are keyed by an epoch-aligned window
index (``floor(event_time / width)``) and combined by summing (or min / max, or keeping the
smallest sample locations). Partial states are lists of such tables; ``merge`` only appends
them, and every ``COMPACT_AFTER`` parts they are folded into one, so merging stays cheap.

Eviction is by event time, never by arrival, and happens only when results are read (at the
end of a batch run, after each watch-mode commit). The *watermark* is the ``watermark_rank``-th
newest event time seen (a top-k list, so a few stray far-future records cannot move it). Windows
that end more than ``retention`` before the watermark are then *closed*: their anomalies are
computed once and folded into runs (``plugins.runs``: what an incident needs of its flags), and
their rows dropped (but for the ``lookback`` windows that later verdicts still need as a baseline).
Runs that nothing can extend any more are bounded by the rule's share of ``limits.memory_mb``:
beyond it only the highest ranked are kept, and ``degraded`` says how many were not. A record
that arrives later for a closed window is not counted in it: it is counted as *late*, and a
``late_events`` anomaly says how many there were.

``update`` and ``merge`` never evict, so merging is exactly associative and commutative however
the input is split, ordered or merged; a closed window had every record read before it closed.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import polars as pl

from core import Result
from core.columns import rows_of, stack
from core.tally import EVER, Tally, Weights, shared, tally
from plugins import runs as closed_runs
from plugins.detection import SAMPLE_LIMIT, Detector, duration_us, instant_us, iso
from plugins.runs import RUN_BYTES, RUN_SHARE, Runs

#: Fold a band's parts into one table set after this many parts: a fold has a fixed cost of a few
#: Polars calls per table, most of the work for small tables (10M lines, all rules: 3.6 -> 1.0 ms
#: of merging a chunk, against every 4 parts). Folding every 4 parts where they hold many rows
#: (a row per user and window) did not lower peak RSS measurably (30M lines, 20M users: 455-499 MB
#: run to run either way).
COMPACT_AFTER = 12
#: Windows are kept in bands of this much event time (in microseconds): 6 hours.
BAND = 6 * 3600 * 1_000_000
#: A seal judges the windows it closes at once when they span at most this many bands (a few
#: queries instead of a few per band); a longer stretch, such as a resumed backlog, band by band.
JUDGED_AT_ONCE = 4
#: A longer stretch is judged in runs of consecutive bands of at most this many rows together.
JUDGED_ROWS = 262_144
#: The most halvings thinning makes (1 key in 2^20 kept).
MAX_LEVEL = 20
#: The seed of the hash by which string keys are thinned (Polars' ``hash``; a checkpoint is
#: rebuilt when the Polars version changes, see ``core.checkpoint``).
THIN_SEED = 0x0DDBA11
#: Memory of one closed window's verdict (a dict of a dozen fields and its sample locations), about.
FLAG_BYTES = 2048
#: A window's distinct rows (``WindowedDetector.thin_rows``) are estimated by a HyperLogLog of this
#: many registers, fed with the 1 in 2^``ROW_SAMPLE_BITS`` rows whose key hash is smallest: a
#: function of the set of rows alone, merged by a maximum, within a few per cent at the hundreds of
#: thousands of rows where thinning starts, and a few NumPy calls a batch.
ROW_REGISTERS = 256
ROW_SAMPLE_BITS = 4
_ROW_ALPHA = 0.7213 / (1 + 1.079 / ROW_REGISTERS)
_POWERS = np.ldexp(1.0, -np.arange(256))  # 2^-rank, looked up (``np.ldexp`` of int64 ranks is slow)
#: The plausible range windowed detectors accept by default (records outside it are the timestamp rule's business).
MIN_TIME = "2000-01-01T00:00:00Z"
MAX_FUTURE = "5m"

if TYPE_CHECKING:
    from core.parse import Batch

Tables = dict[str, pl.DataFrame]


@dataclass(frozen=True)
class Table:
    """How rows of one table fold together: rows with equal ``keys`` are summed / min-ed / max-ed.

    A ``samples`` table holds sample locations (``file``, ``line``) and keeps, per key, the
    ``SAMPLE_LIMIT`` smallest of them; with ``keep_all``, a windowed one keeps every location
    until its window is evicted, and the smallest are picked when anomalies are judged. That
    is cheaper when nearly every key has fewer than ``SAMPLE_LIMIT`` rows anyway (a user in a
    10-minute window), as pruning would cost a sort on every fold and drop next to nothing. A
    ``windowed`` table has a ``window`` column and loses the rows of evicted windows; other
    tables are kept whole.
    """

    schema: dict[str, pl.DataType]
    keys: tuple[str, ...]
    sums: tuple[str, ...] = ()
    mins: tuple[str, ...] = ()
    maxs: tuple[str, ...] = ()
    samples: bool = False
    keep_all: bool = False
    windowed: bool = True
    #: Which columns hold counts, flagged counts, first and last times: such a table is folded by
    #: the compiled tally (``core.tally``), not by a Polars group-by.
    tallied: Weights | None = None
    #: Whether ``fold`` keeps the order of the rows it keeps: the shared rows of parts are then put
    #: in window order before folding, so that the folded table stays in window order too.
    keeps_order: bool = False
    _aggs: list[pl.Expr] = field(init=False, repr=False, compare=False, default_factory=list)

    def __post_init__(self) -> None:
        aggs = [pl.col(c).sum() for c in self.sums] + [pl.col(c).min() for c in self.mins]
        self._aggs.extend(aggs + [pl.col(c).max() for c in self.maxs])
        # Made once: every fresh partial state starts from empty tables.
        object.__setattr__(self, "_empty", pl.DataFrame(schema=self.schema))
        object.__setattr__(self, "_layout", (list(self.schema), list(self.schema.values())))

    def empty(self) -> pl.DataFrame:
        return self._empty

    def conform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame``'s columns in this table's order and types."""
        if (frame.columns, frame.dtypes) == self._layout:  # nothing to do, and a select has a fixed cost
            return frame
        return frame.select(pl.col(name).cast(dtype) for name, dtype in self.schema.items())

    def reduce(self, frames: list[pl.DataFrame]) -> pl.DataFrame:
        """Fold tables of this kind into one.

        Windowed tables must each be folded already, as a batch's tables and folded parts are.
        A samples table without windows may be any rows of locations: it is always pruned.
        """
        frames = [f for f in frames if f.height]
        if not frames:
            return self.empty()
        if not self.windowed:
            if len(frames) == 1 and not self.samples:
                return frames[0]
            if sum(f.height for f in frames) <= SMALL_ROWS:
                return self._fold_rows([row for f in frames for row in self.conform(f).iter_rows()])
            frame = stack(frames)
            return self.fold(frame)
        if len(frames) == 1:
            return frames[0]
        alone, shared, overlaps = split_shared(frames)
        if shared is None:
            return in_window_order(alone, None, [])
        if self.samples and self.keep_all:  # every location is kept: the shared rows need only ordering
            folded = shared.sort("window", maintain_order=True)
        elif self.keeps_order and overlaps:
            folded = self.fold(shared.sort("window", maintain_order=True))
        else:
            folded = self.fold(shared)
        return in_window_order(alone, folded, overlaps)

    def fold(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Fold the rows of several folded tables, concatenated."""
        if self.samples:
            return _smallest_locations(frame, list(self.keys))
        if self.tallied is not None:
            return self._tally_fold(frame)
        return self.conform(frame.group_by(self.keys).agg(self._aggs))

    def _fold_rows(self, rows: list[tuple[Any, ...]]) -> pl.DataFrame:
        """``fold`` for a few rows (in this table's column order), in Python: the same table."""
        columns = list(self.schema)
        at = {name: columns.index(name) for name in columns}
        groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        for row in rows:
            groups.setdefault(tuple(row[at[k]] for k in self.keys), []).append(row)
        if self.samples:  # each key's SAMPLE_LIMIT smallest locations (file names compare as text)
            where = (at["file"], at["line"])
            folded = [row for kept in groups.values()
                      for row in sorted(kept, key=lambda r: (r[where[0]], r[where[1]]))[:SAMPLE_LIMIT]]
            return pl.DataFrame(folded, schema=self.schema, orient="row")
        folded = []
        for kept in groups.values():
            row = list(kept[0])
            for names, pick in ((self.sums, sum), (self.mins, min), (self.maxs, max)):
                for name in names:  # nulls are skipped, as Polars' aggregations skip them
                    values = [r[at[name]] for r in kept if r[at[name]] is not None]
                    row[at[name]] = pick(values) if values else (0 if pick is sum else None)
            folded.append(tuple(row))
        return pl.DataFrame(folded, schema=self.schema, orient="row")

    def _tally_fold(self, frame: pl.DataFrame) -> pl.DataFrame:
        keys = [k for k in self.keys if k != "window"]
        found = tally(frame, width=1, lo=-EVER, hi=EVER, keys=keys, time="window", line=None, weights=self.tallied,
                      sample_limit=0, top=0, tables=("groups",)).groups
        made = {name: role for name, role in zip(self.tallied, _TALLIED, strict=True) if name}
        return self.conform(found.frame(**{name: made.get(name, name) for name in self.schema}))


#: Tables without windows of at most this many rows are folded in Python: a Polars concat and
#: group-by cost more than the few rows they fold (a detector's per-kind stats, say).
SMALL_ROWS = 256
#: The columns of a tally's groups, in the order of ``Weights``.
_TALLIED = ("count", "flagged", "first", "last")
#: Tables with fewer rows than this are folded whole: splitting them costs more than it saves.
SPLIT_ROWS = 20_000


def split_shared(
    frames: list[pl.DataFrame],
) -> tuple[list[pl.DataFrame], pl.DataFrame | None, list[tuple[int, int]]]:
    """The rows of windows that only one of ``frames`` has, the others concatenated (or None), and those windows.

    A folded table has one row per key (keys include the window), so the rows of a window that
    only one table has are folded already: only windows that two tables share need folding. A
    batch's tables span a few windows and consecutive batches share about one, so this spares
    folding nearly every row again each time parts are folded. The shared windows are returned
    as ranges ``(first, last)``; a table ordered by window (as tallies are) is cut into slices at
    their bounds, not filtered.
    """
    if sum(f.height for f in frames) < SPLIT_ROWS:
        return [], stack(frames), []
    spans = sorted((f["window"].min(), f["window"].max()) for f in frames)
    overlaps: list[list[int]] = []
    for i, (_, hi) in enumerate(spans):
        for other_lo, other_hi in spans[i + 1:]:
            if other_lo > hi:
                break
            start, end = other_lo, min(hi, other_hi)
            if overlaps and start <= overlaps[-1][1] + 1:
                overlaps[-1][1] = max(overlaps[-1][1], end)
            else:
                overlaps.append([start, end])
    if not overlaps:
        return frames, None, []
    ranges = [(lo, hi) for lo, hi in overlaps]
    shared_rows = pl.any_horizontal(pl.col("window").is_between(lo, hi) for lo, hi in ranges)
    alone: list[pl.DataFrame] = []
    shared: list[pl.DataFrame] = []
    for frame in frames:
        windows = frame["window"]
        if not windows.is_sorted():
            alone.append(frame.filter(~shared_rows))
            shared.append(frame.filter(shared_rows))
            continue
        at = 0
        for start, end in _row_bounds(windows, ranges):
            if start > at:
                alone.append(frame.slice(at, start - at))
            if end > start:
                shared.append(frame.slice(start, end - start))
            at = end
        if at < frame.height:
            alone.append(frame.slice(at))
    return alone, stack(shared), ranges


def in_window_order(
    alone: list[pl.DataFrame], folded: pl.DataFrame | None, ranges: list[tuple[int, int]],
) -> pl.DataFrame:
    """``split_shared``'s pieces and the fold of its shared rows as one table, ordered by window if they all are.

    The rows of a shared range are all in ``folded``, and a piece alone holds windows no other
    piece has, so ordering the pieces by their first window orders the rows. A table kept in
    window order is sliced, not filtered, when its windows are cut (``window_rows``).
    """
    frames = [f for f in [*alone, folded] if f is not None and f.height]
    if not all(f["window"].is_sorted() for f in frames):
        return stack(frames)
    pieces = [f for f in alone if f.height]
    if folded is not None and folded.height:
        pieces += [folded.slice(start, end - start) for start, end in _row_bounds(folded["window"], ranges)
                   if end > start]
    if not pieces:  # no rows at all
        return folded if folded is not None else alone[0]
    pieces.sort(key=lambda f: f["window"][0])
    return stack(pieces)


def _row_bounds(windows: pl.Series, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """For each window range ``(first, last)``, in order: the rows ``[start, end)`` of an ordered column in it."""
    bounds, at = [], 0
    for lo, hi in ranges:
        start = bisect.bisect_left(windows, lo, lo=at)
        at = bisect.bisect_left(windows, hi + 1, lo=start)
        bounds.append((start, at))
    return bounds


def window_rows(frame: pl.DataFrame, lo: int | None, hi: int | None) -> pl.DataFrame:
    """The rows of ``frame`` with ``lo <= window < hi`` (``None``: open): a slice when it is ordered by window."""
    if (lo is None and hi is None) or not frame.height:
        return frame
    windows = frame["window"]
    if not windows.is_sorted():
        return frame.filter(in_range(lo, hi))
    start = 0 if lo is None else bisect.bisect_left(windows, lo)
    end = frame.height if hi is None else bisect.bisect_left(windows, hi, lo=start)
    return frame.slice(start, max(0, end - start))


def _smallest_locations(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    if frame["file"].n_unique() <= 1 and frame["line"].is_sorted():
        # One file's rows in line order (a batch, as parsed): each key's first rows are its smallest.
        return frame.filter(pl.int_range(pl.len()).over(keys) < SAMPLE_LIMIT)
    crowded = pl.len().over(keys) > SAMPLE_LIMIT
    few, many = frame.filter(~crowded), frame.filter(crowded)
    if many.is_empty():
        return frame
    rank = pl.int_range(pl.len()).over(keys)
    many = many.sort([*keys, "file", "line"]).filter(rank < SAMPLE_LIMIT)
    return stack([few, many])


def _windows_from(tables: dict[str, Table], data: Tables, lo: int) -> Tables:
    """``data`` without the rows of windows before ``lo``."""
    return {name: window_rows(data[name], lo, None) if spec.windowed else data[name] for name, spec in tables.items()
            if name in data}


def _max_levels(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The level breaks of two states merged: at each window, the higher of their levels."""
    def level(breaks: list[tuple[int, int]], window: int) -> int:
        return max([step for start, step in breaks if start <= window] or [0])

    merged: list[tuple[int, int]] = []
    for window in sorted({w for w, _ in a} | {w for w, _ in b}):
        step = max(level(a, window), level(b, window))
        if step > (merged[-1][1] if merged else 0):
            merged.append((window, step))
    return merged


def _newest(rank: int, kept: list[int], more: list[int]) -> list[int]:
    """The ``rank`` largest of two lists sorted largest first (a sort of two runs: linear, and in C)."""
    return sorted(kept + more, reverse=True)[:rank]


def _prefer(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    # Two flags of one key and window start in a seal (duplicate-events: two records repeated in
    # the same second): keep the one with more evidence, and break ties by content.
    return max(a, b, key=lambda x: (x["count"], json.dumps(x, sort_keys=True)))


def shifted_tables(tables: Tables, path: str, by: int) -> Tables:
    """``tables`` with ``by`` added to the ``line`` of the locations in ``path`` (see ``Rule.shift_lines``)."""
    return {name: shifted(frame, path, by) for name, frame in tables.items()}


def shifted(frame: pl.DataFrame, path: str, by: int) -> pl.DataFrame:
    """``frame`` with ``by`` added to the ``line`` of its rows of the file ``path``, if it has locations."""
    if not frame.height or "line" not in frame.columns or "file" not in frame.columns:
        return frame
    here = pl.col("file").cast(pl.String) == path
    return frame.with_columns(pl.when(here).then(pl.col("line") + by).otherwise(pl.col("line")).alias("line"))


class WindowedDetector(Detector):
    """Base of detectors that judge epoch-aligned event-time windows; see the module docstring.

    The windowed tables are kept in *bands* of consecutive windows (``BAND``), each with its own
    parts, so folding touches only the bands new records fall in, and no step ever groups the
    whole state at once; tables without windows (``whole``) are folded on their own.
    """

    #: The tables of the state, by name.
    tables: ClassVar[dict[str, Table]] = {}
    #: Which table and column count records (to count late records).
    events: ClassVar[tuple[str, str]] = ("", "")
    #: The horizon follows the ``watermark_rank``-th newest event time.
    watermark_rank: ClassVar[int] = 100
    #: Event time per band (microseconds): folding a band costs in proportion to its rows.
    band_us: ClassVar[int] = BAND
    #: How a batch is tallied (``core.tally``): flagged rows are the ones sampled and timed.
    sample_limit: ClassVar[int] = SAMPLE_LIMIT
    #: Only 1 in this many flagged records (a power of two, picked by a hash of their keys and
    #: time: the same records in every split) can be a sample.
    sample_one_in: int = 1
    hash_keys: ClassVar[bool] = False
    tally_tables: ClassVar[tuple[str, ...]] = ("groups", "samples", "totals")
    #: Whether ``batch_tables`` reads only the tally's counts (see ``core.tally.shared``).
    tally_counts_only: ClassVar[bool] = False
    #: A seal (or a read) judges the windows it closes at once when they span at most this many bands.
    judged_at_once: ClassVar[int] = JUDGED_AT_ONCE
    #: A longer stretch is judged in runs of consecutive bands of at most this many rows together,
    #: and at most ``judged_bands`` bands long.
    judged_rows: ClassVar[int] = JUDGED_ROWS
    judged_bands: ClassVar[int] = 2**62
    #: Thinning, the way a detector whose state grows with the records per window stays within its
    #: share of ``limits.memory_mb`` (``state_bytes``): the column of its windowed tables that holds
    #: the key (a UInt64 hash, or a string that is hashed), or None for a detector that never thins.
    thin_by: ClassVar[str | None] = None
    #: State memory per record of a window held (counted by ``events``), for the thinning level.
    bytes_per_record: ClassVar[int] = 0
    #: The table whose rows hold ``thin_by`` once per window (repeats of a key folded), where the
    #: state has a row per distinct key and window rather than per record: thinning then counts a
    #: window's distinct rows (estimated, see ``ROW_REGISTERS``), at ``bytes_per_record`` each.
    #: None counts every record as a row, the worst case.
    thin_rows: ClassVar[str | None] = None
    #: Whether ``thin_by`` holds a 64-bit hash already (else it is hashed with ``THIN_SEED``).
    thin_hashed: ClassVar[bool] = False
    #: What the thinned keys are, for the summary (``degraded``).
    thin_noun: ClassVar[str] = "keys"
    #: The shortest retention (microseconds) whatever the rule says: the horizon within which
    #: results do not depend on the order the records came in (see docs/anomalies.md).
    least_retention: ClassVar[int] = 0

    def init_windows(self, width: int | str, retention: int | str, lookback: int, min_time: str,
                     max_future: int | str) -> None:
        """Set the window width, the retention behind the watermark and the baseline lookback (windows)."""
        self.width = duration_us(width)
        self.lookback = lookback
        # Closing a window needs its baseline too: keep at least the lookback and one window more.
        self.retention = max(duration_us(retention), self.least_retention, (lookback + 1) * self.width)
        self.min_time = instant_us(min_time)
        self.max_future = duration_us(max_future)
        self.band = max(1, self.band_us // self.width)
        self.horizon: int | None = None
        self.late = 0
        self.newest: list[int] = []
        #: Closed windows' flags, folded into runs by key and kind (``plugins.runs``); finished runs
        #: not kept for want of memory, and how many of them would have been listed.
        self.runs: Runs = {}
        self.runs_dropped = 0
        self.unkept = 0
        self._bands: dict[int, list[tuple[int | None, Tables]]] = {}
        self._whole: list[Tables] = []
        #: Thinning levels: (window, level) where the level rises; the most bytes of rows any
        #: closed window's span held (see ``_span_records``); those bytes per window, as batches
        #: come, kept from ``span`` windows before the horizon on (only where the detector may thin).
        self._levels: list[tuple[int, int]] = []
        #: The levels the parts with a tag were thinned at (None: not known, as in a state saved
        #: before it was kept): while they are ``_levels``, only the parts without a tag need it.
        self._thinned_levels: list[tuple[int, int]] | None = []
        self._densest_closed = 0
        self._records: dict[int, int] = {}
        self._row_sketches: dict[int, np.ndarray] = {}  # window -> HyperLogLog registers (``thin_rows``)
        #: Batches' windowed tables not split into bands yet (see ``update``).
        self._fresh: list[Tables] = []

    # -- what a subclass provides -----------------------------------------------------------

    def batch_tables(self, batch: Batch, found: Tally) -> Tables:
        """The tables of one batch, from its tally (see ``tally_keys`` and the like).

        They must be reduced already, as a tally is: one row per key of a summing table, at
        most ``SAMPLE_LIMIT`` rows per key of a ``samples`` table.
        """
        raise NotImplementedError

    def verdicts(self, data: Tables, lo: int | None, hi: int | None) -> list[dict[str, Any]]:
        """The anomalies of windows ``lo <= window < hi`` (``None``: unbounded).

        ``data`` holds every row of those windows, and of the ``lookback`` windows before them.
        """
        raise NotImplementedError

    def admit(self, data: Tables) -> Tables:
        """A batch's tables as the state keeps them (as they are by default; see ``plugins.seasonal``)."""
        return data

    # -- the Rule contract ------------------------------------------------------------------

    def tally_keys(self) -> list[str]:
        """The columns a batch's records are tallied by, besides the window."""
        return []

    def tally_flag(self) -> tuple[str, list[str]] | None:
        """Which records are flagged: ``(column, values)``; None flags every record."""
        return None

    def update(self, batch: Batch) -> None:
        batch = batch.timed()  # a stray clock would open a window years away
        found = shared(
            batch, counts_only=self.tally_counts_only, width=self.width, lo=self.min_time,
            hi=batch.now + self.max_future, keys=self.tally_keys(), flag=self.tally_flag(),
            sample_limit=self.sample_limit, sample_one_in=self.sample_one_in, top=self.watermark_rank,
            hash_keys=self.hash_keys, tables=self.tally_tables,
        )
        if not found.newest:  # no plausible record
            return
        self.newest = _newest(self.watermark_rank, self.newest, found.newest)
        data = self.batch_tables(batch, found)
        data = self.admit({name: spec.conform(data[name]) for name, spec in self.tables.items()})
        if self.thin_rows is not None:
            self._count_rows(data[self.thin_rows])
        elif self.thin_by is not None:
            name, column = self.events
            frame = data[name]
            extra = self.long_key_bytes(data)
            for window, records in zip(frame["window"].to_list(), frame[column].to_list(), strict=True):
                held = records * self.bytes_per_record + extra.get(window, 0)
                self._records[window] = self._records.get(window, 0) + held
        self._whole.append({name: data[name] for name, spec in self.tables.items() if not spec.windowed})
        windowed = {name: data[name] for name, spec in self.tables.items() if spec.windowed}
        spanned = data.get(self.events[0], next(iter(windowed.values()), None))  # a table of every window
        if spanned is not None and _bands_spanned(spanned, self.band) > SPLIT_BANDS:
            # Sparse over a long span (a year in a chunk): split when sealed, in the state it is
            # merged into, not in every partial in flight (each band's tables cost ~2 KB of
            # objects whatever their rows: a year of half-hour bands is 17,000 of them).
            self._fresh.append(windowed)
        else:
            for band, part in self._split(data).items():
                self._bands.setdefault(band, []).append((None, part))
        self._fold_crowded()

    def shift_lines(self, path: str, by: int) -> None:
        # A partial's sample locations are in its tables; closed windows' verdicts (``closed``)
        # exist only in sealed states, which the committer never moves.
        self._bands = {band: [(at, shifted_tables(tables, path, by)) for at, tables in parts]
                       for band, parts in self._bands.items()}
        self._fresh = [shifted_tables(tables, path, by) for tables in self._fresh]
        self._whole = [shifted_tables(tables, path, by) for tables in self._whole]

    def merge(self, other: WindowedDetector) -> None:
        tagged = any(tag is not None for parts in other._bands.values() for tag, _ in parts)
        if tagged and other._thinned_levels != self._levels:  # its thinned parts are not at my levels
            self._thinned_levels = None
        for band, parts in other._bands.items():
            self._bands.setdefault(band, []).extend(parts)
        self._fresh.extend(other._fresh)
        self._whole.extend(other._whole)
        self.newest = _newest(self.watermark_rank, self.newest, other.newest)
        self.late += other.late
        if other.horizon is not None and (self.horizon is None or other.horizon > self.horizon):
            self.horizon = other.horizon
        for key, found in other.runs.items():  # only sealed states have any
            self.runs[key] = closed_runs.merged(self.runs.get(key, []), found, self.max_gap)
        self.runs_dropped += other.runs_dropped
        self.unkept += other.unkept
        if self.thin_rows is not None:
            windows = [w for w in other._row_sketches if self.horizon is None or w >= self.horizon]  # closed: late
            if windows:
                self._add_sketches(windows, np.stack([other._row_sketches[w] for w in windows]))
        else:
            for window, records in other._records.items():
                if self.horizon is None or window >= self.horizon:
                    self._records[window] = self._records.get(window, 0) + records
        if other._levels or other._densest_closed:  # only sealed states have any
            self._levels = _max_levels(self._levels, other._levels)
            self._densest_closed = max(self._densest_closed, other._densest_closed)
        self._fold_crowded()

    #: True while ``result`` judges the open windows (again at every read, never kept): a
    #: subclass must leave its state as it was, and may skip what cannot be flagged there,
    #: where a seal must extend its history.
    provisional: bool = False
    #: Unflagged windows that may sit inside one incident (see ``plugins.incidents``).
    max_gap: int = 6
    #: The combined score an incident needs to be listed (or, per kind, a mapping kind -> score).
    min_score: float | dict[str, float] = 0.0

    def result(self) -> Result:
        self.seal()
        # Open windows are judged again at every read, leaving the state as it was: only a seal
        # extends what was judged (``provisional``).
        self.provisional = True
        try:
            flags = self._verdicts(self.horizon, None)
        finally:
            self.provisional = False
        flags += self.extra_flags()
        newest = self.newest[0] // self.width if self.newest else None
        found = self.windowed_incidents(flags, newest, self.max_gap, self.min_score, self.runs)
        if self.late:
            found += self.as_incidents([self._late_anomaly()])
        return self.publish(found, {"late_events": self.late, "closed_before": iso(self._horizon_us())},
                            unkept=self.unkept)

    def extra_flags(self) -> list[dict[str, Any]]:
        """Flagged windows the rule keeps outside its tables (none by default), joined into incidents too."""
        return []

    def state_size(self) -> int:
        """Bytes of the window tables, the closed windows' runs and whatever a subclass keeps besides."""
        frames = [frame for parts in self._bands.values() for _, data in parts for frame in data.values()]
        frames += [frame for data in self._whole + self._fresh for frame in data.values()]
        held = sum(len(found) for found in self.runs.values())
        return sum(frame.estimated_size() for frame in frames) + RUN_BYTES * held + self.extra_size()

    def extra_size(self) -> int:
        """Bytes a subclass keeps outside its tables (none by default)."""
        return 0

    def compact(self) -> None:
        """Each band's parts folded into one table set, as a checkpoint holds them and results read them."""
        self._settle()
        for band in list(self._bands):
            self._fold_band(band)
        self._fold_whole()

    def __getstate__(self) -> dict[str, Any]:
        self.compact()  # a checkpoint holds one folded table set per band, not the parts it came from
        return self.__dict__

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_thinned_levels", None)  # saved before it was kept: thin every part again
        self.__dict__.setdefault("_fresh", [])
        for name, empty in (("runs", {}), ("runs_dropped", 0), ("unkept", 0)):
            self.__dict__.setdefault(name, empty)
        # Saved before runs (a checkpoint of an earlier release, read before its version is checked):
        # its closed windows' flags, folded as one seal's.
        closed_runs.extend(self.runs, list(self.__dict__.pop("closed", {}).values()), self.max_gap)
        # A state saved by a release without ``least_retention`` keeps its windows that long from
        # now on: the horizon waits for the watermark to pass it, and nothing closed re-opens.
        self.retention = max(self.retention, self.least_retention)

    # -- folding ----------------------------------------------------------------------------

    def _settle(self) -> None:
        """Split the tables ``update`` left whole into their bands."""
        fresh, self._fresh = self._fresh, []
        for data in fresh:
            for band, part in self._split(data).items():
                self._bands.setdefault(band, []).append((None, part))

    def _split(self, data: Tables) -> dict[int, Tables]:
        """The windowed tables of ``data``, by band."""
        by_band: dict[int, Tables] = {}
        for name, spec in self.tables.items():
            if not spec.windowed or data[name].is_empty():
                continue
            for band, frame in _bands(data[name], self.band):
                by_band.setdefault(band, {})[name] = frame
        for tables in by_band.values():
            for name, spec in self.tables.items():
                if spec.windowed and name not in tables:
                    tables[name] = spec.empty()
        return by_band

    def _fold_crowded(self) -> None:
        for band, parts in list(self._bands.items()):
            if len(parts) > COMPACT_AFTER:
                self._fold_band(band)
        if len(self._whole) > COMPACT_AFTER:
            self._fold_whole()

    def _fold_band(self, band: int) -> Tables:
        """Fold one band's parts into one table set; rows for windows closed before they came are late."""
        parts = self._bands[band]
        if len(parts) == 1 and parts[0][0] == self.horizon:  # folded already, and nothing came since
            return parts[0][1]
        kept = [self._drop_late(tag, data, self.horizon) for tag, data in parts]
        stale = self._thinned_levels != self._levels  # parts with a tag were thinned at other levels
        if self._levels and (stale or any(tag is None for tag, _ in parts)):  # rows not thinned yet: a partial's
            kept = [data if tag is not None and not stale else self._thinned(data)
                    for (tag, _), data in zip(parts, kept, strict=True)]
        data = {name: spec.reduce([d[name] for d in kept]) for name, spec in self.tables.items() if spec.windowed}
        self._bands[band] = [(self.horizon, data)]
        return data

    def _fold_whole(self) -> Tables:
        data = {name: spec.reduce([d[name] for d in self._whole]) for name, spec in self.tables.items()
                if not spec.windowed}
        self._whole = [data]
        return data

    def _data(self, lo: int | None, hi: int | None, ordered: list[int] | None = None,
              fresh: list[Tables] = ()) -> Tables:
        """Every row of windows ``lo - lookback <= window < hi``, folded (``ordered``: the bands, sorted).

        ``fresh``: batches' tables not split into bands (see ``seal``), whose rows in the range are
        folded in with the bands'.
        """
        ordered = sorted(self._bands) if ordered is None else ordered
        start_at = 0 if lo is None else bisect.bisect_left(ordered, (lo - self.lookback) // self.band)
        end_at = len(ordered) if hi is None else bisect.bisect_right(ordered, (hi - 1) // self.band)
        bands = ordered[start_at:end_at]
        start = None if lo is None else lo - self.lookback
        parts: dict[str, list[pl.DataFrame]] = {name: [] for name, spec in self.tables.items() if spec.windowed}
        for band in bands:
            folded = self._fold_band(band)
            inside = (start is None or band * self.band >= start) and (hi is None or (band + 1) * self.band <= hi)
            for name, frames in parts.items():  # a band wholly in the range needs no filter
                frames.append(folded[name] if inside else window_rows(folded[name], start, hi))
        data = {name: stack(frames or [self.tables[name].empty()])
                for name, frames in parts.items()}
        for name in data:
            rows = [part for tables in fresh if (part := window_rows(tables[name], start, hi)).height]
            if rows:  # a band's rows are folded already; the same windows' rows of a batch are not
                data[name] = self.tables[name].reduce([data[name], *rows])
        return {**data, **self._fold_whole()}

    def _verdicts(self, lo: int | None, hi: int | None, fresh: list[Tables] = ()) -> list[dict[str, Any]]:
        """The anomalies of windows ``[lo, hi)``, judged at once if they span a few bands, else a few bands at a time.

        A longer stretch (a resumed backlog, a year between two records) is judged in runs of
        consecutive bands holding ``JUDGED_ROWS`` rows or fewer together: one call per band cost
        a call and a pass over every band for each of them, which a log sparse over years of
        event time (tens of thousands of bands) made quadratic.
        """
        end = hi if hi is not None else (max(self._bands) + 1) * self.band if self._bands else None
        if lo is not None and end is not None and end - lo <= self.judged_at_once * self.band:
            return self.verdicts(self._data(lo, hi, fresh=fresh), lo, hi) if end > lo else []
        runs: list[list[int]] = []  # [first band, last band, rows]
        ordered = sorted(self._bands)
        rows_in = {band: sum(frame.height for _, data in parts for frame in data.values())
                   for band, parts in self._bands.items()}
        for tables in fresh:
            for name, spec in self.tables.items():
                if spec.windowed and tables[name].height:
                    found, rows = np.unique(tables[name]["window"].to_numpy() // self.band, return_counts=True)
                    for band, n in zip(found.tolist(), rows.tolist(), strict=True):
                        rows_in[band] = rows_in.get(band, 0) + n
        for band in sorted(rows_in):
            start, stop = band * self.band, (band + 1) * self.band
            if (hi is not None and start >= hi) or (lo is not None and stop <= lo):
                continue
            rows = rows_in[band]
            if runs and runs[-1][2] + rows <= self.judged_rows and band - runs[-1][0] < self.judged_bands:
                runs[-1][1:] = [band, runs[-1][2] + rows]
            else:
                runs.append([band, band, rows])
        found: list[dict[str, Any]] = []
        for first, last, _ in runs:
            low = first * self.band if lo is None else max(lo, first * self.band)
            high = (last + 1) * self.band if hi is None else min(hi, (last + 1) * self.band)
            found += self.verdicts(self._data(low, high, ordered, fresh), low, high)
        return found

    # -- eviction ---------------------------------------------------------------------------

    def seal(self) -> None:
        """Close the windows that end ``retention`` before the watermark: keep their anomalies, drop their rows.

        Called when results are read, never from ``update`` or ``merge``: then every record read
        so far is in this state, so a closed window had all its records, and merging stays
        exactly associative and commutative however the input was split. An engine that merges
        in read order may also call it between merges to bound memory within a run.
        """
        # Rows for windows closed before they came are counted as late and dropped here, also
        # when the watermark stays put: a backlog older than the watermark must not pile up.
        # Bands are not folded for that: only the ones judged below are.
        self._thin()  # first: the parts merged since the last seal are the ones without a tag
        for band, parts in self._bands.items():
            self._bands[band] = [(self.horizon, self._drop_late(tag, data, self.horizon)) for tag, data in parts]
        # Batches spanning many bands (a sparse log: a year in a chunk) are judged straight from
        # their tables, and only the windows kept after this seal are split into bands: a band's
        # tables cost ~2 KB of objects however few rows they hold, and a year of half-hour bands
        # split at once took 100 MB.
        fresh, self._fresh = self._fresh, []
        if self.thin_by is not None and self._levels:
            fresh = [self._thinned(data) for data in fresh]
        fresh = [self._drop_late(None, data, self.horizon) for data in fresh]
        closed_from = self.horizon
        target = self._target_horizon()
        advance = target is not None and (self.horizon is None or target > self.horizon)
        if advance:
            judged: dict[str, dict[str, Any]] = {}
            for anomaly in self._verdicts(self.horizon, target, fresh):
                key = f"{anomaly['key']}@{anomaly['window_start']}"
                judged[key] = _prefer(anomaly, judged[key]) if key in judged else anomaly
            closed_runs.extend(self.runs, list(judged.values()), self.max_gap)
            self.horizon = target
            self._bound_runs()
        if self.horizon is not None:
            fresh = [_windows_from(self.tables, data, self.horizon - self.lookback) for data in fresh]
        self._fresh = fresh
        self._settle()
        if self.horizon is None:
            return
        oldest = self.horizon - self.lookback
        if self.thin_by is not None and advance:
            self._close_records(closed_from, self.horizon)
        for band, parts in list(self._bands.items()):
            if (band + 1) * self.band <= oldest:
                del self._bands[band]
            elif advance and band * self.band < oldest:
                self._bands[band] = [(self.horizon, _windows_from(self.tables, data, oldest)) for _, data in parts]
            elif advance:  # the whole band is kept
                self._bands[band] = [(self.horizon, data) for _, data in parts]

    # -- thinning ---------------------------------------------------------------------------

    def _thin(self) -> None:
        """Keep each window's rows only for the keys its thinning level keeps (see ``level_for``).

        A window's level follows the most records the state held over any span of windows ending
        at or before it (``_span_records``), so it is a function of the data alone: the same
        whatever the split, the order of merges or when seals came. It only rises (a window still
        open may get more records), and a key kept at a level is kept at every lower one, so
        thinning again never needs a row dropped before.
        """
        if self.thin_by is None or not self.state_bytes or not self._records:
            return
        before = self._levels
        horizon = self.horizon if self.horizon is not None else min(self._records)
        breaks = [(window, level) for window, level in before if window < horizon]
        densest = self._densest_closed
        for window, held in self._span_records(horizon, max(self._records) + 1):  # the open windows
            densest = max(densest, held)
            level = self.level_for(densest)
            if level > (breaks[-1][1] if breaks else 0):
                breaks.append((window, level))
        self._levels = _max_levels(before, breaks)
        if not self._levels:
            return
        changed = self._levels != self._thinned_levels
        for band, parts in self._bands.items():  # parts thinned at these levels already are left alone
            self._bands[band] = [(tag, data if tag is not None and not changed else self._thinned(data))
                                 for tag, data in parts]
        self._thinned_levels = list(self._levels)

    def _thinned(self, data: Tables) -> Tables:
        """``data`` with only the rows ``kept_keys`` keeps in the tables that hold ``thin_by``.

        The same rows as filtering by ``kept_keys``, but as NumPy on each table's columns: a
        Polars query runs on Polars' thread pool, where the workers' queries wait for each other
        (10M lines, every rule: 342 filters took 0.18 s of waiting and work).
        """
        thinned = {}
        for name, frame in data.items():
            if self.thin_by not in frame.columns or not frame.height:
                thinned[name] = frame
                continue
            keep = self._kept_rows(frame[self.thin_by], frame["window"].to_numpy())
            thinned[name] = frame if keep.all() else rows_of(frame, keep)
        return thinned

    def _kept_rows(self, keys: pl.Series, windows: np.ndarray) -> np.ndarray:
        """Whether each row's key is kept at its window's level (``kept_keys``, as a mask)."""
        digest = (keys if self.thin_hashed else keys.hash(seed=THIN_SEED)).to_numpy()
        limits = np.right_shift(np.uint64(2**64 - 1), self.levels_at(windows).astype(np.uint64))
        return digest <= limits

    def _span_records(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """For each window ``lo <= w < hi`` with records: the records of the ``span`` windows ending at it.

        (A window without records holds no more than the last one with records before it.)
        """
        span = self.retention // self.width + self.close_step + 1
        windows = sorted(self._records)
        out, held, first = [], 0, 0
        for window in windows:
            held += self._records[window]
            while windows[first] <= window - span:
                held -= self._records[windows[first]]
                first += 1
            if lo <= window < hi:
                out.append((window, held))
        return out

    def _close_records(self, lo: int | None, hi: int) -> None:
        """Windows ``lo <= w < hi`` closed: their spans' records count for good; older counts go."""
        if lo is not None:
            for _, held in self._span_records(lo, hi):
                self._densest_closed = max(self._densest_closed, held)
        span = self.retention // self.width + self.close_step + 1
        for window in [w for w in self._records if w < hi - span]:
            del self._records[window]
            self._row_sketches.pop(window, None)

    def _count_rows(self, frame: pl.DataFrame) -> None:
        """Add a batch's rows of ``thin_rows`` to their windows' sketches; ``_records`` holds each window's estimate.

        A window's sketch sees the rows whose key hash has its top ``ROW_SAMPLE_BITS`` bits zero;
        the next 8 pick the register, and the bits below them (but the lowest, which
        duplicate-events' record hashes use as a flag) its rank.
        """
        if not frame.height:
            return
        digest = frame[self.thin_by]
        digest = (digest if self.thin_hashed else digest.hash(seed=THIN_SEED)).to_numpy()
        sampled = np.flatnonzero(digest < np.uint64(1 << (64 - ROW_SAMPLE_BITS)))
        if not len(sampled):
            return
        digest, windows = digest[sampled], frame["window"].to_numpy()[sampled]
        found, at = np.unique(windows, return_inverse=True)
        low = 64 - ROW_SAMPLE_BITS - 8  # the bits below the sample's and the register's
        bucket = (digest >> np.uint64(low)).astype(np.intp)
        _, length = np.frexp(((digest & np.uint64((1 << low) - 1)) >> np.uint64(1)).astype(np.float64))
        registers = np.zeros((len(found), ROW_REGISTERS), dtype=np.uint8)
        np.maximum.at(registers, (at, bucket), (low - length).astype(np.uint8))  # exact: the bits are under 2^53
        self._add_sketches(found.tolist(), registers)

    def _add_sketches(self, windows: list[int], registers: np.ndarray) -> None:
        """Merge sketches (a row of ``registers`` per window) into the state's; re-estimate those windows."""
        for at, window in enumerate(windows):
            mine = self._row_sketches.get(window)
            if mine is not None:
                registers[at] = np.maximum(mine, registers[at])
        for window, row, estimate in zip(windows, registers, _row_estimates(registers), strict=True):
            self._row_sketches[window] = row
            self._records[window] = estimate * self.bytes_per_record

    def long_key_bytes(self, data: Tables) -> dict[int, int]:
        """Per window, the bytes a batch's records add beyond ``bytes_per_record`` (none by default)."""
        return {}

    def level_for(self, held: int) -> int:
        """How many halvings keep ``held`` bytes of rows within ``state_bytes``."""
        level = 0
        while held > self.state_bytes << level and level < MAX_LEVEL:
            level += 1
        return level

    def kept_keys(self) -> pl.Expr:
        """The rows a window's level keeps: the top ``level`` bits of the key's hash are zero."""
        column = pl.col(self.thin_by)
        digest = column if self.thin_hashed else column.hash(seed=THIN_SEED)
        limit = pl.lit(2**64 - 1, pl.UInt64)
        for window, level in self._levels:
            top = pl.lit((1 << (64 - level)) - 1, pl.UInt64)
            limit = pl.when(pl.col("window") >= window).then(top).otherwise(limit)
        return digest <= limit

    def levels_at(self, windows: np.ndarray) -> np.ndarray:
        """The thinning level of each window (0: every key kept)."""
        starts = np.array([start for start, _ in self._levels], dtype=np.int64)
        steps = np.array([0] + [step for _, step in self._levels], dtype=np.int64)
        return steps[np.searchsorted(starts, windows, "right")]  # levels rise with the window

    def degraded(self) -> str | None:
        if not self._levels:
            return self.runs_degraded()
        window, level = self._levels[-1]
        thinned = (f"windows denser than its share of limits.memory_mb holds: {self.thin_noun} thinned to 1 in "
                   f"{2 ** level} (by a hash of the key, the same in every run) from {iso(window * self.width)}; "
                   f"the other {self.thin_noun} are not judged there")
        dropped = self.runs_degraded()
        return thinned if dropped is None else f"{thinned}; {dropped}"

    # -- closed runs ------------------------------------------------------------------------

    def kept_runs(self) -> int | None:
        """How many finished runs the state keeps (``RUN_SHARE`` of its share), or None: all of them."""
        return None if not self.state_bytes else max(1, int(self.state_bytes * RUN_SHARE) // RUN_BYTES)

    def _bound_runs(self) -> None:
        kept = self.kept_runs()
        if kept is not None:
            dropped, unkept = closed_runs.bound(self.runs, self.horizon, self.max_gap, kept, self.min_score)
            self.runs_dropped += dropped
            self.unkept += unkept

    def runs_degraded(self) -> str | None:
        """What ``degraded`` says of finished runs not kept (see ``plugins.runs``), or None."""
        if not self.runs_dropped:
            return None
        return (f"more finished incidents than its share of limits.memory_mb holds: the {self.kept_runs()} highest "
                f"ranked kept, {self.runs_dropped} others dropped ({self.unkept} of them listable, counted as "
                f"found and suppressed)")

    def _drop_late(self, tag: int | None, data: Tables, horizon: int | None) -> Tables:
        """Rows for windows the state had already closed when they came in are late: count and drop them."""
        if horizon is None or tag == horizon:
            return data
        if all(data[n].is_empty() or data[n]["window"].min() >= horizon for n, spec in self.tables.items()
               if spec.windowed):
            return data  # the usual case: nothing came for a closed window
        window = pl.col("window")
        name, column = self.events
        fresh = window >= tag if tag is not None else pl.lit(True)
        self.late += int(data[name].filter(fresh & (window < horizon))[column].sum())
        return _windows_from(self.tables, data, horizon)

    #: Windows are closed this many at a time (the horizon moves in steps of it): the state holds
    #: up to ``close_step - 1`` windows more than ``retention``.
    close_step: int = 1

    def _target_horizon(self) -> int | None:
        if len(self.newest) < self.watermark_rank:
            return None
        return (self.newest[-1] - self.retention) // self.width // self.close_step * self.close_step

    def _horizon_us(self) -> int | None:
        return None if self.horizon is None else self.horizon * self.width

    def _late_anomaly(self) -> dict[str, Any]:
        return self.anomaly(
            key="late_events",
            severity="low",
            count=self.late,
            observed=self.late,
            threshold=0,
            detail={
                "reason": "records for windows already closed (older than the watermark minus retention)",
                "closed_before": iso(self._horizon_us()),
                "retention_seconds": self.retention // 1_000_000,
            },
        )

    def window_bounds(self, window: int) -> tuple[int, int]:
        """Start and end (exclusive) of a window, in microseconds."""
        return window * self.width, (window + 1) * self.width


def _row_estimates(registers: np.ndarray) -> list[int]:
    """The distinct rows each sketch (a row of ``registers``) saw: HyperLogLog with its small-range
    correction, scaled by the sample."""
    m = ROW_REGISTERS
    estimates = _ROW_ALPHA * m * m / _POWERS[registers].sum(axis=1)
    zeros = np.count_nonzero(registers == 0, axis=1)
    small = (estimates <= 2.5 * m) & (zeros > 0)
    estimates[small] = m * np.log(m / zeros[small])
    return [int(round(e)) << ROW_SAMPLE_BITS for e in estimates.tolist()]


#: A batch whose windows span more bands than this is kept whole until sealed (``WindowedDetector.update``).
SPLIT_BANDS = 16


def _bands_spanned(frame: pl.DataFrame, band: int) -> int:
    """How many bands the windows of ``frame`` (a batch's table of every window with records) reach over."""
    if not frame.height:
        return 0
    windows = frame["window"].to_numpy()  # NumPy, not Polars: no wait on its thread pool
    return int(windows.max()) // band - int(windows.min()) // band + 1


def _bands(frame: pl.DataFrame, width: int) -> list[tuple[int, pl.DataFrame]]:
    """``frame``'s rows by band of ``width`` windows: slices when ordered by window, as tallies are."""
    windows = frame["window"]
    first, last = windows.min() // width, windows.max() // width
    if first == last:  # the usual case: a batch's records span less than a band
        return [(first, frame)]
    if windows.is_sorted():
        bands = range(first, last + 1) if last - first < 64 else sorted({w // width for w in windows.unique()})
        # Found by bisection in Python: a dozen reads of a value each, where search_sorted is a query.
        starts = [bisect.bisect_left(windows, band * width) for band in bands]
        ends = [*starts[1:], frame.height]
        return [(band, frame.slice(lo, hi - lo)) for band, lo, hi in zip(bands, starts, ends, strict=True) if hi > lo]
    parts = frame.with_columns(_band=pl.col("window") // width).partition_by("_band", as_dict=True, include_key=False)
    return [(band, part) for (band, *_), part in parts.items()]


def first_windows(counts: pl.DataFrame, key: str) -> pl.DataFrame:
    """Each key's first window in a batch's counts: a few dozen rows, read in Python rather than grouped."""
    first: dict[Any, int] = {}
    for value, window in zip(counts[key].to_list(), counts["window"].to_list(), strict=True):
        if value not in first or window < first[value]:
            first[value] = window
    return pl.DataFrame({key: list(first), "first_window": list(first.values())},
                        schema={key: counts.schema[key], "first_window": pl.Int64()})


def in_range(lo: int | None, hi: int | None) -> pl.Expr:
    """Rows whose ``window`` is in ``[lo, hi)``; ``None`` leaves that side open."""
    expr = pl.lit(True)
    if lo is not None:
        expr = expr & (pl.col("window") >= lo)
    if hi is not None:
        expr = expr & (pl.col("window") < hi)
    return expr

