"""``duplicate_event``: the same payment event (timestamp, status, service, user, message) recorded more than once.

Every record is compared, exactly and across batches, files and restarts, within ``retention``.
What a repeat means depends on the line:

- A line whose message carries an identifier or an amount (``id_pattern``: by default a word with
  three digits or more, such as ``ord-8f3a2c`` or ``12.34``) is not repeated by chance: an order is
  not paid twice in the same second. Every repeat of one is reported.
- A line without one (``User login successful``) repeats by chance as soon as a user is busy and
  stamps have whole seconds. Such repeats are judged at the rate they are observed: one is reported
  (at low severity for two copies) only where they are *rare*, with at most ``LOOSE_OTHERS`` others
  in the whole log within a day either side. In a log where they happen all the time (a busy user,
  in whatever service), none is. ``ids_only: false`` reports every repeat, as earlier versions did.

Each record is reduced to a 64-bit hash of its five fields, the ``record_hash`` column the
compiled scan makes as it reads the line (``core/_scan.c``). The state keeps, per hash, how many
copies were seen and the ``SAMPLE_LIMIT`` smallest (file, line) locations, for every record whose
timestamp is within ``retention`` of the watermark (about 40 bytes per record). Copies are always
in the same window, because the timestamp is part of what is compared; a copy that arrives after
its window was evicted is counted as late instead. Within retention the check is exact up to hash
collisions: two different records share a 64-bit hash with probability about n^2 / 2^65 for n
records in retention (under 1e-6 for 6 million).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from core import hookimpl
from core.columns import constant, rows_of
from core.counts import repeated_rows
from core.tally import Weights
from plugins.detection import DURATION, INSTANT, SAMPLE_LIMIT, file_column, params_schema, sample_locations
from plugins.windows import FLAG_BYTES, MAX_FUTURE, MIN_TIME, Table, Tables, WindowedDetector, window_rows

if TYPE_CHECKING:
    from core.parse import Batch
    from core.tally import Tally

_FIELDS = ("ts", "status", "service", "user", "message")
#: A word with three digits or more (an order or payment id, a card's last digits, an amount). The
#: compiled scan answers it for every record as it hashes the line (``carries_id`` in core/_scan.c,
#: where a word is a run without ASCII whitespace).
ID_PATTERN = r"[0-9][^\s]*[0-9][^\s]*[0-9]"
#: The score of one duplicated event: an incident of k of them scores 10 x sqrt(k) (medium, high at 4).
DUPLICATE_SCORE = 10.0
#: The key of every duplicate incident: consecutive duplicates are one incident, whatever the record.
KEY = "events"
#: The score of a rare repeat of an id-less line, per copy beyond the first (low for two copies).
LOOSE_SCORE = 5.0
#: A repeat of an id-less line is rare with at most this many others within a day either side.
LOOSE_OTHERS = 3
#: Eviction granularity; the anomaly's window is the duplicated instant itself.
_BUCKET = "1m"
_DAY = 86_400_000_000
_NOT_LOWEST = pl.lit(0xFFFF_FFFF_FFFF_FFFE, pl.UInt64)


class Copies(Table):
    """Rows (hash, us, window, n, file, line): ``n`` copies stand behind each hash's first row.

    Folding keeps, for each hash seen more than once, its ``SAMPLE_LIMIT`` smallest locations and
    puts the total number of copies on the first of them; singletons (nearly every record) pass
    through untouched, so folding costs one sort of the hashes and a rank of the few duplicates.
    """

    def fold(self, frame: pl.DataFrame) -> pl.DataFrame:
        # Nearly always no hash repeats: found in one compiled pass (core.counts.repeated_rows).
        hashes = frame["hash"].to_numpy()
        rows = repeated_rows(hashes)
        if not len(rows):
            return frame
        # Where some repeat (a busy user's chance repeats: about 1% of a heavy-tailed log's
        # records), only their locations and counts are gathered (a whole-row gather costs more
        # than the rest of the fold), sorted and ranked, and the table keeps its row order (by
        # window, as a batch's is: what a band split reads fastest).
        digests = hashes[rows]
        files = frame["file"][rows].cast(pl.String).to_numpy()  # indexing, not gather (a query)
        order = np.lexsort((frame["line"].to_numpy()[rows], files, digests))
        rows, digests = rows[order], digests[order]
        starts = np.flatnonzero(np.r_[True, digests[1:] != digests[:-1]])
        group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(rows)]))
        rank = np.arange(len(rows)) - starts[group]
        copies = frame["n"].to_numpy().copy()
        totals = np.add.reduceat(copies[rows].astype(np.int64), starts)
        copies[rows] = np.where(rank == 0, totals[group], 0)
        frame = frame.clone()  # the same columns: only "n" is replaced (with_columns is a query)
        frame.replace_column(frame.get_column_index("n"), pl.Series("n", copies, dtype=pl.UInt32))
        if rank.max() < SAMPLE_LIMIT:  # the usual case: no hash has more copies than are kept
            return frame
        keep = np.ones(frame.height, dtype=bool)
        keep[rows] = rank < SAMPLE_LIMIT
        return rows_of(frame, keep)


class DuplicateEvent(WindowedDetector):
    """Flag every (timestamp, status, service, user, message) seen more than once, with where each copy is."""

    #: The message is part of the event, but only through the record's hash: the scan hashes it
    #: as it reads the line, which costs less than building the message column. Only an
    #: ``id_pattern`` other than the default needs the message itself (see ``setup``).
    columns = ("ts", "record_hash", "file", "line")

    type_name = "duplicate_event"
    many_files = True  # samples are placed by each record's file (``plugins.detection.file_column``)
    description = "The same event (all five fields equal) logged more than once."
    default_severity = "medium"
    # Earlier saved forms: 4 counted records, not bytes; 3 records per window, not distinct ones; 2 no thinning.
    state_version = 6  # 5 kept every closed flag
    params_schema = params_schema({
        "ids_only": {"type": "boolean"},
        "id_pattern": {"type": "string", "minLength": 1, "format": "regex"},
        "max_gap": {"type": "integer", "minimum": 0, "maximum": 1000},
        "retention": DURATION, "min_time": INSTANT, "max_future": DURATION,
    })
    tables = {
        "copies": Copies(
            {"hash": pl.UInt64(), "us": pl.Int64(), "window": pl.Int64(), "n": pl.UInt32(),
             "file": pl.Categorical(), "line": pl.Int64()},
            keys=("hash",), keeps_order=True,
        ),
        "totals": Table({"window": pl.Int64(), "total": pl.Int64()}, keys=("window",), sums=("total",),
                        tallied=Weights(counts="total")),
    }
    events = ("totals", "total")
    #: One row per record: small bands keep each fold small (a 6-hour band of a busy log is millions of rows).
    band_us = 30 * 60 * 1_000_000
    #: The tally only counts records per window and finds the newest times (it has no keys, so
    #: it groups nothing): the copies table is the batch's own columns (``batch_tables``), which
    #: costs less than a hash table with a group per record (10M lines: 4.8 -> 2.4 ms a chunk).
    tally_tables = ("totals",)
    sample_limit = 0
    #: Beyond its share of the memory, the records compared are thinned by their hash (see
    #: ``WindowedDetector._thin``): a duplicate is found if its hash is among those kept.
    thin_by = "hash"
    thin_hashed = True
    #: Copies of a record fold into its row: a line logged a million times is one record held,
    #: so it is counted once (before, as a million, it thinned the window and was missed 3 times in 4).
    thin_rows = "copies"
    bytes_per_record = 40  # the row of a record: hash, time, window, copies, file and line
    thin_noun = "records"

    def setup(
        self,
        ids_only: bool = True,
        id_pattern: str = ID_PATTERN,
        max_gap: int = 10,
        retention: int | str = "1h",
        min_time: str = MIN_TIME,
        max_future: int | str = MAX_FUTURE,
        severity: str = "medium",
        **incident_params: Any,
    ) -> None:
        self.ids_only = ids_only
        self.id_pattern = id_pattern
        if id_pattern != ID_PATTERN:
            self.columns = ("ts", "message", "record_hash", "file", "line")
        self.max_gap = max_gap
        self.init_windows(_BUCKET, retention, 0, min_time, max_future)
        #: Repeated id-less lines judged so far: hash -> [instant, copies, sample locations].
        self.loose: dict[int, list[Any]] = {}
        #: Repeats of id-less lines of busy days, counted but no longer kept one by one.
        self.loose_overflow: dict[int, int] = {}

    def update(self, batch: Batch) -> None:
        # Whether the line carries an id rides in the hash's lowest bit: copies agree on it (their
        # messages are equal), and the state needs no column more per record. The compiled scan
        # sets it for the default pattern; another pattern needs the message and a regex.
        batch = batch.timed()  # a copy is placed in event time, a stray clock's years away
        if self.id_pattern != ID_PATTERN:
            carries = pl.col("message").str.contains(self.id_pattern).cast(pl.UInt64)
            marked = ((pl.col("record_hash") & _NOT_LOWEST) | carries).alias("record_hash")
            batch = replace(batch, frame=batch.frame.with_columns(marked))
        super().update(batch)

    def merge(self, other: WindowedDetector) -> None:
        super().merge(other)
        for digest, group in other.loose.items():  # only sealed states have any
            self.loose.setdefault(digest, group)
        for day, n in other.loose_overflow.items():
            self.loose_overflow[day] = max(self.loose_overflow.get(day, 0), n)

    def seal(self) -> None:
        super().seal()
        if not self.newest or self.horizon is None:
            return
        # Repeats are judged against a day either side: older ones can no longer change a verdict.
        oldest = self.newest[0] - 3 * _DAY
        self.loose = {digest: group for digest, group in self.loose.items() if group[0] >= oldest}
        self.loose_overflow = {day: n for day, n in self.loose_overflow.items() if day >= oldest // _DAY - 1}
        # A day with more repeats than any verdict tolerates is only counted: its closed repeats
        # (no later record can reach them) need not be kept one by one.
        closed = self.horizon * self.width
        for day, n in self._loose_days().items():
            if n > LOOSE_OTHERS + 1:
                gone = [d for d, g in self.loose.items() if g[0] // _DAY == day and g[0] < closed]
                for digest in gone:
                    del self.loose[digest]
                self.loose_overflow[day] = self.loose_overflow.get(day, 0) + len(gone)

    def extra_size(self) -> int:
        # A kept repeat: its list, instant, count and up to SAMPLE_LIMIT locations.
        return FLAG_BYTES * len(self.loose) + 100 * len(self.loose_overflow)

    def _loose_days(self) -> dict[int, int]:
        """Repeats of id-less lines per epoch day: those kept one by one and those only counted."""
        days = dict(self.loose_overflow)
        for at, _, _ in self.loose.values():
            days[at // _DAY] = days.get(at // _DAY, 0) + 1
        return days

    def extra_flags(self) -> list[dict[str, Any]]:
        """Rare repeats of id-less lines (see the module docstring), as flagged instants."""
        days = self._loose_days()
        flags = []
        for digest, (at, n, where) in sorted(self.loose.items(), key=lambda item: (item[1][0], item[0])):
            day = at // _DAY
            others = sum(days.get(d, 0) for d in (day - 1, day, day + 1)) - 1
            if others > LOOSE_OTHERS:
                continue
            flags.append(self.anomaly(
                key=KEY, kind="duplicate", score=LOOSE_SCORE * (n - 1), window=(at, at), count=n, observed=n,
                expected=1, samples=where, first_seen=at, last_seen=at, _w=at // self.width,
                detail={"copies": n, "record_hash": f"{digest & ~1:016x}", "compared_fields": list(_FIELDS),
                        "carries_id": False,
                        "why": f"{others} other repeats of lines without an id within a day either side: "
                               "too few to be chance"},
            ))
        return flags

    def describe(self, incident: dict[str, Any]) -> None:
        """The duplicated record's fields, from its first sample line."""
        text = next((s["text"] for s in incident["samples"] if s.get("text")), None)
        if text is not None:
            incident["subject"] = dict(zip(_FIELDS, text.split(" ", 4), strict=False))

    def state_weight(self) -> float:
        return 2.0  # a row per record held: more than most

    def batch_tables(self, batch: Batch, found: Tally) -> Tables:
        totals = found.totals.frame(window="window", total="count")
        # Built from the batch's columns and NumPy, not a Polars query: a query runs on Polars'
        # thread pool, where both workers' queries wait for each other (1.4 ms a batch in a run
        # of 10M lines against 0.3 ms alone; this takes 0.2 ms).
        frame = batch.frame
        columns = ["ts", "record_hash", "line"] + (["file"] if batch.files else [])
        frame = pl.DataFrame([frame[name] for name in columns])
        us = frame["ts"].cast(pl.Int64)  # a cast, not to_physical (a query)
        if totals["total"].sum() < frame.height:  # records outside the plausible range are not compared
            times = us.to_numpy()
            frame = rows_of(frame, (times >= self.min_time) & (times <= found.hi))
            us = frame["ts"].cast(pl.Int64)
        if not frame.height:
            return {"copies": self.tables["copies"].empty(), "totals": totals}
        copies = pl.DataFrame([
            frame["record_hash"].alias("hash"), us.alias("us"),
            pl.Series("window", np.floor_divide(us.to_numpy(), self.width)),
            constant(1, frame.height, pl.UInt32()).alias("n"), file_column(batch, frame).alias("file"),
            frame["line"],
        ])
        # One row per record is a folded table while no record repeats in the batch; where some do
        # (a busy user's chance repeats: about 1% of a heavy-tailed log's records), only their rows
        # are folded (see Copies.fold).
        return {"copies": self.tables["copies"].fold(copies), "totals": totals}

    def verdicts(self, data: Tables, lo: int | None, hi: int | None) -> list[dict[str, Any]]:
        # A record's copies share its time, so all of them are in the windows judged. Folded, each
        # hash's copies are counted on its first row (see Copies).
        copies = window_rows(data["copies"], lo, hi)
        repeated = np.flatnonzero(copies["n"].to_numpy() > 1)  # NumPy, not a Polars query: nearly always none
        if not len(repeated):
            return []
        rows = sorted(zip(*(copies[name].to_numpy()[repeated].tolist() for name in ("hash", "n", "us", "window")),
                          strict=True), key=lambda row: (row[2], row[0]))
        # A repeat of an id-less line on a day with more of them than a verdict tolerates is never
        # reported (``extra_flags``), and the count only grows: it is kept without its locations.
        days = self._loose_days()
        for digest, _, us, _ in rows:
            if self.ids_only and not digest & 1 and digest not in self.loose:
                days[us // _DAY] = days.get(us // _DAY, 0) + 1
        located = [digest for digest, _, us, _ in rows
                   if digest & 1 or not self.ids_only or days[us // _DAY] <= LOOSE_OTHERS + 1]
        wanted = rows_of(copies, np.isin(copies["hash"].to_numpy(), np.array(located, dtype=np.uint64)))
        samples = sample_locations(wanted, ["hash"]) if located else {}
        flags = []
        for digest, n, us, window in rows:
            carries = bool(digest & 1)
            if carries or not self.ids_only:
                flags.append(self._flag(digest, n, us, window, samples.get((digest,), []), carries))
            else:  # judged with the day either side, when results are read (``extra_flags``)
                self.loose[digest] = [us, n, samples.get((digest,), [])]
        return flags

    def _flag(self, digest: int, n: int, us: int, window: int, samples: list[str], carries: bool) -> dict[str, Any]:
        return self.anomaly(
            key=KEY,
            kind="duplicate",
            # Not a chance repeat (see the module docstring): every duplicated event weighs the same.
            score=DUPLICATE_SCORE,
            window=(us, us),
            count=n,
            observed=n,
            expected=1,
            samples=samples,
            first_seen=us,
            last_seen=us,
            _w=window,
            detail={"copies": n, "record_hash": f"{digest & ~1:016x}", "compared_fields": list(_FIELDS),
                    "carries_id": carries},
        )


@hookimpl
def register_rule_types(register: Any) -> None:
    register(DuplicateEvent)
