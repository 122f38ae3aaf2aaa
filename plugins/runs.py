"""Closed runs: a windowed detector's flags of closed windows, folded into one summary per run.

Flags of one key and kind at most ``gap`` windows apart are one incident (``plugins.incidents``).
A closed window's flag never changes, so a seal folds the flags it closes into *runs*: a ``Run``
keeps what ``incident`` reads of its flags (first and last window, their number, the exact sum of
their scores, the peak flag, the count, first and last seen, and the first ``KEPT_SAMPLES``
distinct samples in run order) and gives the same incident they would, whatever the seals in
between. A later flag within ``gap`` of a run's last window extends it. *Run order* is window
order; flags of one window (duplicate-events flags each repeated instant of its minute) keep the
order their seal judged them in, and a flag the rule keeps outside its tables (``extra_flags``)
comes after the closed ones of its window.

A run is *finished* once the horizon is more than ``gap`` windows past its last one: no closed
window can extend it. Runs count ``RUN_BYTES`` each against the rule's share of
``limits.memory_mb`` (``state_bytes``): beyond ``RUN_SHARE`` of it, only the ``kept_runs``
highest-ranked finished runs are kept (those below their kind's ``min_score`` first to go, then
by ``plugins.incidents.rank``, ties by key, start and kind: a total order, so the runs kept are
the same whatever the seals and merges in between). The dropped ones that would have been listed
are counted, so a result's ``found`` and ``suppressed`` stay true, and ``degraded`` says so.
Where a rule's ``extra_flags`` (duplicate-events' rare repeats of id-less lines) would have joined
a dropped run, that incident is not found.

Merging states: runs of two states that overlap (each state sealed the same windows on its own,
where a flag per window once kept the one with more evidence) are combined field by field with
max and min (the wider span, the larger number of windows, score sum and count, the higher peak,
the union of samples): deterministic, order-independent and idempotent, but no longer exact.
Runs that only touch (within ``gap``, no window in common) are joined exactly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from core import safestate
from plugins import incidents

#: Memory of one run's summary, about: its peak flag (``FLAG_BYTES``) and the rest of it.
RUN_BYTES = 4096
#: The part of a rule's share of ``limits.memory_mb`` its finished runs may take.
RUN_SHARE = 0.5
#: Distinct samples kept in run order: an incident shows its peak's (a flag has at most as many as
#: an incident shows), then the run's, ``incidents.SHOWN_SAMPLES`` in all.
KEPT_SAMPLES = 2 * incidents.SHOWN_SAMPLES


def _score(flag: dict[str, Any]) -> float:
    return flag.get("score") or 0.0


def _peak_order(flag: dict[str, Any]) -> tuple[float, int]:
    return (_score(flag), -flag["_w"])


@safestate.register
@dataclass
class Run:
    """Flags of one key and kind, consecutive within ``gap`` windows, summed up (see the module docstring)."""

    key: str
    kind: str
    first_w: int
    last_w: int
    window_start: str | None
    window_end: str | None
    windows: int
    total: Fraction
    peak: dict[str, Any]
    count: int
    first_seen: str | None
    last_seen: str | None
    #: (window, sample) of the first ``KEPT_SAMPLES`` distinct samples in run order.
    samples: list[tuple[int, str]]

    @classmethod
    def of(cls, flag: dict[str, Any]) -> Run:
        """A run of one flag."""
        last = flag.get("last_seen") or flag.get("first_seen")
        return cls(flag["key"], flag.get("kind", ""), flag["_w"], flag["_w"], flag["window_start"],
                   flag["window_end"], 1, Fraction(_score(flag)), flag, int(flag["count"]),
                   flag.get("first_seen") or None, last or None, _distinct([(flag["_w"], s) for s in flag["samples"]]))

    def then(self, later: Run) -> None:
        """Add ``later``, whose flags all come after this run's in run order."""
        self.last_w, self.window_end = later.last_w, later.window_end
        if _peak_order(later.peak) > _peak_order(self.peak):  # a tie keeps the earlier peak, as ``max`` does
            self.peak = later.peak
        self.samples = _distinct(self.samples + later.samples)
        self._add(later)

    def place(self, flag: dict[str, Any]) -> None:
        """Add a flag that comes after this run's flags of its window and before those of later ones."""
        if flag["_w"] >= self.last_w:
            self.then(Run.of(flag))
            return
        if _peak_order(flag) > _peak_order(self.peak):
            self.peak = flag
        before = [s for s in self.samples if s[0] <= flag["_w"]]
        after = [s for s in self.samples if s[0] > flag["_w"]]
        self.samples = _distinct(before + [(flag["_w"], s) for s in flag["samples"]] + after)
        self._add(Run.of(flag))

    def widen(self, other: Run) -> None:
        """Combine a run of another state that shares windows with this one (see the module docstring)."""
        if (other.first_w, other.window_start or "") < (self.first_w, self.window_start or ""):
            self.first_w, self.window_start = other.first_w, other.window_start
        if (other.last_w, other.window_end or "") > (self.last_w, self.window_end or ""):
            self.last_w, self.window_end = other.last_w, other.window_end
        self.windows, self.total = max(self.windows, other.windows), max(self.total, other.total)
        self.count = max(self.count, other.count)
        self.peak = max(self.peak, other.peak, key=lambda f: (*_peak_order(f), _text(f)))
        self.samples = _interleaved(self.samples, other.samples)
        self.first_seen = _least(self.first_seen, other.first_seen)
        self.last_seen = max(self.last_seen or "", other.last_seen or "") or None

    def _add(self, other: Run) -> None:
        self.windows += other.windows
        self.total += other.total
        self.count += other.count
        self.first_seen = _least(self.first_seen, other.first_seen)
        self.last_seen = max(self.last_seen or "", other.last_seen or "") or None

    @property
    def score(self) -> float:
        """The incident's score: Stouffer's combined z, of the exact sum (``math.fsum`` of the scores)."""
        return round(float(self.total) / math.sqrt(self.windows), 3)

    def finished(self, horizon: int | None, gap: int) -> bool:
        """Whether no window at or after ``horizon`` (the first one open) can extend it."""
        return horizon is not None and horizon - self.last_w > gap + 1

    def order(self) -> tuple[Any, ...]:
        """The order runs are kept in when their share is full: ``incidents.rank``, then the kind."""
        score = self.score
        return (-incidents.SEVERITIES.index(incidents.level(score)), -score, f"{self.key}@{self.window_start}",
                self.kind)

    def incident(self, newest: int | None, gap: int, subject: dict[str, Any]) -> dict[str, Any]:
        """The incident its flags make (``incidents.incident``)."""
        peak, score = self.peak, self.score
        samples = list(peak["samples"])
        samples += [s for _, s in self.samples if s not in samples]
        return incidents.made(self.key, self.kind, subject, score,
                              resolved=newest is not None and newest > self.last_w + gap,
                              span=(self.window_start, self.window_end), windows=self.windows, peak=peak,
                              count=self.count, samples=samples, seen=(self.first_seen, self.last_seen))

    def __getstate__(self) -> dict[str, Any]:
        # A Fraction is no value the safe format stores: its numerator and denominator are.
        return {**self.__dict__, "total": [self.total.numerator, self.total.denominator]}

    def __setstate__(self, state: dict[str, Any]) -> None:
        numerator, denominator = state["total"]
        self.__dict__.update({**state, "total": Fraction(numerator, denominator)})


def _distinct(samples: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The first ``KEPT_SAMPLES`` of ``samples`` whose sample has not come before."""
    seen: set[str] = set()
    kept = []
    for window, sample in samples:
        if sample not in seen:
            seen.add(sample)
            kept.append((window, sample))
            if len(kept) == KEPT_SAMPLES:
                break
    return kept


def _interleaved(a: list[tuple[int, str]], b: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Two runs' samples as one list by window, then by the earlier place either gives them: the same in
    either order, and ``a`` itself when ``b`` is ``a``."""
    at: dict[tuple[int, str], int] = {}
    for samples in (a, b):
        for place, sample in enumerate(samples):
            at[sample] = min(place, at.get(sample, place))
    return _distinct(sorted(at, key=lambda sample: (sample[0], at[sample], sample[1])))


def _text(value: Any) -> str:
    """A value as canonical text: ties between states' runs are broken by content, whatever the merge order."""
    return json.dumps(value, sort_keys=True, default=str)


def _least(a: str | None, b: str | None) -> str | None:
    return min(a, b) if a and b else a or b


Runs = dict[tuple[str, str], list["Run"]]


def extend(runs: Runs, flags: list[dict[str, Any]], gap: int) -> None:
    """Fold flags of windows later than every run's (a seal's, in the order it judged them) into ``runs``."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for flag in flags:
        by_key.setdefault((flag["key"], flag.get("kind", "")), []).append(flag)
    for key, found in by_key.items():
        found.sort(key=lambda f: f["_w"])  # stable: flags of one window keep their order
        kept = runs.setdefault(key, [])
        for flag in found:
            if kept and flag["_w"] - kept[-1].last_w <= gap + 1:
                kept[-1].then(Run.of(flag))
            else:
                kept.append(Run.of(flag))


def joined(runs: Runs, flags: list[dict[str, Any]], gap: int) -> list[Run]:
    """Every incident's run: ``runs`` (left as they are) with ``flags`` placed in them, as ``incidents.join``."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for flag in flags:
        by_key.setdefault((flag["key"], flag.get("kind", "")), []).append(flag)
    made: list[Run] = []
    for key in sorted(set(runs) | set(by_key)):
        # Closed runs first, then the flags, each in window order: a flag goes after the runs' flags of its window.
        pieces = [(run.first_w, 0, at, run) for at, run in enumerate(runs.get(key, []))]
        pieces += [(flag["_w"], 1, at, flag) for at, flag in enumerate(by_key.get(key, []))]
        pieces.sort(key=lambda piece: piece[:3])
        current: Run | None = None
        for first, _, _, piece in pieces:
            if current is not None and first - current.last_w <= gap + 1:
                if isinstance(piece, Run):
                    current.then(_copy(piece))
                else:
                    current.place(piece)
                continue
            if current is not None:
                made.append(current)
            current = _copy(piece) if isinstance(piece, Run) else Run.of(piece)
        if current is not None:
            made.append(current)
    return made


def _copy(run: Run) -> Run:
    return Run(**{**run.__dict__, "samples": list(run.samples)})


def merged(mine: list[Run], theirs: list[Run], gap: int) -> list[Run]:
    """The runs of one key and kind of two states, in window order (see the module docstring)."""
    pieces = sorted(mine + theirs, key=lambda r: (r.first_w, r.last_w, _text(r.__getstate__())))
    out: list[Run] = []
    for run in pieces:
        run = _copy(run)
        if out and run.first_w <= out[-1].last_w:
            out[-1].widen(run)
        elif out and run.first_w - out[-1].last_w <= gap + 1:
            out[-1].then(run)
        else:
            out.append(run)
    return out


def bound(runs: Runs, horizon: int | None, gap: int, kept: int,
          least: float | dict[str, float]) -> tuple[int, int]:
    """Keep at most ``kept`` finished runs, the highest ranked: how many were dropped, and how many of
    those reach ``least``, their kind's ``min_score`` (would have been incidents)."""
    finished = [run for found in runs.values() for run in found if run.finished(horizon, gap)]
    if len(finished) <= kept:
        return 0, 0

    def listed(run: Run) -> bool:
        return run.score >= (least.get(run.kind, 0.0) if isinstance(least, dict) else least)

    finished.sort(key=lambda run: (not listed(run), run.order()))
    dropped = {id(run) for run in finished[kept:]}
    for key, found in list(runs.items()):
        runs[key] = [run for run in found if id(run) not in dropped]
        if not runs[key]:
            del runs[key]
    return len(finished) - kept, sum(1 for run in finished[kept:] if listed(run))
