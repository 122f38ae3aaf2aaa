"""What a window was expected to hold, and how surprising it was: seasonal, robust baselines with a noise model.

Each windowed detector keeps, per key, the series of its judged windows (``History``): counts, the
flags it raised and the residuals of each baseline model. A window is judged against:

- **daily**: the median of the same time of day (that window and its two neighbours) on each of
  the previous ``DAYS`` days, flagged windows left out; it needs one day of history;
- **weekly**: the same, at the same time of the week on the previous ``WEEKS`` weeks; it needs two;
- **recent**: while neither has history, the median of the ``RECENT`` windows just before.

When both seasonal models have history, the one whose residuals over the last week were smaller
wins, so traffic with a weekly shape is judged against last week and the rest against yesterday.

The noise model is Poisson for counts and binomial for failure rates, judged by the signed root
of the deviance (``deviance_z``): about a normal z-score, accurate in the far tail even at small
counts. Real traffic is burstier than Poisson, so each model's z is divided by the square root of
its *dispersion*: the squared spread of its own residuals over the last week (read at their 90th
percentile, see ``TAIL``), at least 1. A window is flagged only when it is both surprising (|z| >= ``z``) and large
enough to matter (a ratio to the expectation of at least ``ratio``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np
import polars as pl

from core import safestate
from plugins.windows import MAX_LEVEL, THIN_SEED, Tables, WindowedDetector, window_rows

#: Seasonal history kept per key: the same time of day on this many days, of the week on this many weeks.
DAYS = 7
WEEKS = 4
#: Windows before, when there is no seasonal history yet.
RECENT = 12
#: Residuals (windows) a model needs before its dispersion is trusted; until then it is not used.
MIN_RESIDUALS = 36
#: The neighbours of the same time of day that are pooled with it (one window each side).
SPREAD = (-1, 0, 1)
_MAD = 1.4826
#: The spread of a model's residuals is read at this quantile of their distance from the median,
#: scaled to a normal's (1.645 for 0.9): the same as a standard deviation for normal noise, and
#: larger where the series' surprises have a heavy tail, as real traffic's do (the median absolute
#: deviation alone, the 0.5 quantile, let bursty series raise twice as many incidents on NAB data).
TAIL = 0.9
TAIL_Z = 1.6449
#: Windows summed for the second, slower scale: a deviation too small to see in one window but
#: sustained over this many (a service gone quiet at night) is judged on their sum.
SLOW = 6
#: Residual rows kept per window: daily, weekly, recent, and the slow scale.
ROWS = 4
#: Expectations a key keeps: the slow scale's sum at a window reaches back ``SLOW - 1`` windows.
EXPECTED_KEPT = SLOW - 1
#: The key under which the records of keys thinned out are summed, where a key judges every
#: record (error-spikes' ``all``): never judged on its own. A field never holds a space or a NUL.
REST = "\x00 thinned"


class Judged(NamedTuple):
    """Windows ``first .. first + len - 1`` of a key, judged: what was seen and expected, and how surprising."""

    first: int
    observed: np.ndarray
    expected: np.ndarray
    z: np.ndarray
    flagged: np.ndarray


@safestate.register
@dataclass
class History:
    """One key's judged windows, from ``first`` to ``end``: what judging later windows reads of them.

    ``counts`` (and ``totals``, for rates only) and ``flags`` cover every window kept (``Model.keep``,
    four weeks): the seasonal models' lags reach that far back. Counts are whole numbers, kept as
    4-byte integers while they fit. ``residuals`` and ``expected`` cover only the last windows, as
    many as judging reads (``Model.residuals_kept``, ``EXPECTED_KEPT``): the dispersion's week before
    the day being judged, and the slow scale's sums. At nine days of 10-minute windows that is 23
    bytes a window for rates and 19 for counts, instead of the 49 of every array over every window.
    """

    first: int
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint32))
    totals: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint32))
    flags: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    residuals: np.ndarray = field(default_factory=lambda: np.zeros((ROWS, 0), dtype=np.float32))  # the last windows
    expected: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the last windows

    @property
    def end(self) -> int:
        return self.first + len(self.counts)


def history_bytes(history: History) -> int:
    """Bytes of one key's judged history."""
    arrays = (history.counts, history.totals, history.flags, history.residuals, history.expected)
    return sum(array.nbytes for array in arrays)


@safestate.register
@dataclass(frozen=True)
class Model:
    """How windows are judged: the window width (for the seasonal lags) and what counts as surprising."""

    width_us: int
    z: float = 4.0
    ratio: float = 1.5
    rate: bool = False  # judge failures / records (binomial) instead of records (Poisson)
    up: bool = True
    down: bool = True

    @property
    def day(self) -> int:
        return max(1, 86_400_000_000 // self.width_us)

    @property
    def keep(self) -> int:
        """Windows of history a key keeps: enough for the weekly model and a week of residuals."""
        return WEEKS * 7 * self.day + 2

    @property
    def residuals_kept(self) -> int:
        """Windows of residuals a key keeps: a model's dispersion is read over the week before the first
        window of the day judged, which begins up to a day before the history's end."""
        return 8 * self.day + 2


def deviance_z(observed: np.ndarray, expected: np.ndarray, trials: np.ndarray | None = None) -> np.ndarray:
    """Signed root of the Poisson (or, with ``trials``, binomial) deviance: a z-score for each count."""
    x = np.asarray(observed, dtype=float)
    e = np.maximum(np.asarray(expected, dtype=float), 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(x > 0, x * np.log(x / e), 0.0)
        if trials is None:
            dev = 2 * (term - (x - e))
        else:
            n = np.asarray(trials, dtype=float)
            rest, rest_e = n - x, np.maximum(n - e, 1e-9)
            dev = 2 * (term + np.where(rest > 0, rest * np.log(rest / rest_e), 0.0))
    return np.sign(x - e) * np.sqrt(np.maximum(dev, 0.0))


def judge(history: History | None, first: int, counts: np.ndarray, totals: np.ndarray, model: Model,
          *, commit: bool) -> tuple[History | None, Judged]:
    """Judge windows ``first ..`` of one key (``counts``, and ``totals`` for rates) after its ``history``.

    Windows are judged a day at a time, so that every seasonal baseline window is already
    judged (and its flag known) when it is used. With ``commit`` the history returned is a new
    one, with the windows judged; otherwise it is ``history`` as it was (windows still open are
    judged again later). ``first`` is at the history's end or after it (a gap is zeros).
    """
    return judge_many([(history, first, counts, totals)], model, commit=commit)[0]


def judge_many(series: list[tuple[History | None, int, np.ndarray, np.ndarray]], model: Model,
               *, commit: bool) -> list[tuple[History | None, Judged]]:
    """``judge`` for many keys: ``(history, first, counts, totals)`` each, judged as one per set of alike keys.

    Keys judged up to the same window (every key a seal or a read judges) are stacked and judged
    in one pass of numpy calls per day rather than one per key: the calls, not the arithmetic,
    are what a key's day costs (~1 ms). Each row keeps its own first window (``_Stack.starts``)
    and first window judged (``_Stack.live``), so a key's verdicts are what judging it alone
    gives, whatever windows the others start at: a log sparse over years, each key a few
    records at a different time, had judged every key alone, a year of days each.
    """
    alike: dict[int, list[int]] = {}
    for i, (history, first, counts, _) in enumerate(series):
        if history is not None and first < history.end:
            raise ValueError(f"windows from {first} judged again after a history up to {history.end}")
        alike.setdefault(first + len(counts), []).append(i)
    found: list[tuple[History | None, Judged]] = [None] * len(series)  # type: ignore[list-item]
    for end, members in alike.items():
        stack_first = min(series[i][0].first if series[i][0] is not None else series[i][1] for i in members)
        first = min(series[i][1] for i in members)
        stack = _Stack.of([series[i] for i in members], stack_first, first, end, model)
        lo, stop, day = first - stack_first, end - stack_first, model.day
        while lo < stop:
            # A day at a time, from the start of the epoch day: what a window is judged with
            # (flags, residuals) is what was known when its day began, so the verdicts do not
            # depend on where earlier calls stopped (seals may come at any point in a day).
            known = (stack_first + lo) // day * day - stack_first
            hi = min(known + day, stop)
            _judge_day(stack, lo, hi, known, model)
            lo = hi
        histories = stack.histories(model) if commit else [series[i][0] for i in members]
        for row, (i, history) in enumerate(zip(members, histories, strict=True)):
            found[i] = (history, stack.judged(row))
    return found


@dataclass
class _Stack:
    """The histories of keys with the same windows and the windows to judge, one row each (what ``_judge_day`` judges).

    Window ``i`` of ``counts``, ``totals`` and ``flags`` is the ``first + i``-th; ``residuals``,
    ``expected`` and ``scores`` cover only the windows from ``residuals_from`` and ``expected_from``
    on (indexes into the others), what judging reads of them and writes. A row's windows before
    its ``starts`` are not its (nothing is read there), and before its ``live`` are not judged
    (they keep what they held: its history, or nothing), as if it were judged alone.
    """

    first: int
    judged_from: int  # the first window judged (an index), of any row
    starts: np.ndarray  # (keys,): each row's first window (an index)
    live: np.ndarray  # (keys,): each row's first window judged (an index)
    counts: np.ndarray
    totals: np.ndarray  # (keys, 0) unless the model judges rates
    flags: np.ndarray
    residuals_from: int
    residuals: np.ndarray  # (keys, ROWS, windows from residuals_from)
    expected_from: int
    expected: np.ndarray
    scores: np.ndarray  # the z each window was judged with, from expected_from

    @classmethod
    def of(cls, series: list[tuple[History | None, int, np.ndarray, np.ndarray]], stack_first: int, first: int,
           end: int, model: Model) -> _Stack:
        keys, size, judged_from = len(series), end - stack_first, first - stack_first
        residuals_from = max(0, judged_from - model.residuals_kept)
        expected_from = max(0, judged_from - EXPECTED_KEPT)
        live = np.array([row_first - stack_first for _, row_first, _, _ in series], dtype=np.int64)
        starts = np.array([(h.first if h is not None else row_first) - stack_first for h, row_first, _, _ in series],
                          dtype=np.int64)
        stack = cls(stack_first, judged_from, starts, live,
                    np.zeros((keys, size)), np.zeros((keys, size if model.rate else 0)),
                    np.zeros((keys, size), dtype=bool), residuals_from,
                    np.full((keys, ROWS, size - residuals_from), np.nan, dtype=np.float32), expected_from,
                    np.zeros((keys, size - expected_from)), np.zeros((keys, size - expected_from)))
        for row, (history, _, counts, totals) in enumerate(series):
            stack.counts[row, live[row]:] = counts
            if model.rate:
                stack.totals[row, live[row]:] = totals
            if history is None:
                continue
            # The history's windows; a gap up to the row's first window judged stays zero.
            start, kept = starts[row], history.end - stack_first
            stack.counts[row, start:kept] = history.counts
            if model.rate:
                stack.totals[row, start:kept] = history.totals
            stack.flags[row, start:kept] = history.flags
            for array, since, tail in ((stack.residuals, residuals_from, history.residuals),
                                       (stack.expected, expected_from, history.expected)):
                take = min(tail.shape[-1], kept - since)
                if take > 0:
                    array[row, ..., kept - since - take:kept - since] = tail[..., tail.shape[-1] - take:]
        return stack

    def histories(self, model: Model) -> list[History]:
        """Each row as a key's history, its last ``Model.keep`` windows.

        Counts are whole numbers (sums of records), kept as 4-byte integers while every count of
        the stack fits one, as 8-byte floats otherwise.
        """
        size = self.counts.shape[1]
        cut = max(0, size - model.keep)
        fits = self.counts[:, cut:].max(initial=0) < 2**32 and self.totals[:, cut:].max(initial=0) < 2**32
        whole = np.uint32 if fits else np.float64
        no_totals = np.zeros(0, dtype=whole)
        found = []
        for row, start in enumerate(self.starts.tolist()):  # nothing before a row's own first window
            kept = max(cut, start)
            residuals = self.residuals[row, :, max(start, size - model.residuals_kept) - self.residuals_from:]
            expected = self.expected[row, max(start, size - EXPECTED_KEPT) - self.expected_from:]
            found.append(History(self.first + kept, self.counts[row, kept:].astype(whole),
                                 self.totals[row, kept:].astype(whole) if model.rate else no_totals,
                                 self.flags[row, kept:].copy(), residuals.copy(), expected.copy()))
        return found

    def judged(self, row: int) -> Judged:
        """What judging found in row ``row``, from its first window judged."""
        live = int(self.live[row])
        start = live - self.expected_from
        return Judged(self.first + live, self.counts[row, live:].copy(),
                      self.expected[row, start:].copy(), self.scores[row, start:].copy(),
                      self.flags[row, live:].copy())


def _judge_day(work: _Stack, lo: int, hi: int, known: int, model: Model) -> None:
    """Judge windows ``lo:hi`` of one day (indexes into ``work``); ``known`` is the day's first window."""
    expected, z, residuals, seasonal = _judge_span(work, lo, hi, known, model)
    e_lo, e_hi = lo - work.expected_from, hi - work.expected_from  # the windows in the arrays of the last windows
    r_lo, r_hi = lo - work.residuals_from, hi - work.residuals_from
    live = np.arange(lo, hi)[None, :] >= work.live[:, None]

    def judged(found: np.ndarray, held: np.ndarray) -> np.ndarray:
        """``found`` where a row's window is judged; what it held before its first judged (``_Stack``)."""
        return found if live.all() else np.where(live if found.ndim == 2 else live[:, None, :], found, held)

    expected = judged(expected, work.expected[:, e_lo:e_hi])
    work.expected[:, e_lo:e_hi] = expected
    sums, expected_sums = _window_sums(work.counts, lo, hi), _window_sums(work.expected, e_lo, e_hi)
    slow = judged(_slow(work, lo, hi, sums, expected_sums, model), work.residuals[:, 3, r_lo:r_hi])
    work.residuals[:, :3, r_lo:r_hi] = judged(residuals, work.residuals[:, :3, r_lo:r_hi])
    work.residuals[:, 3, r_lo:r_hi] = slow
    spread = _dispersion(work, known, 3, model.day)[0]
    slow_z = slow / np.sqrt(np.where(np.isnan(spread), 1.0, spread))[:, None]
    ratio = _ratio(work.counts[:, lo:hi], expected)
    slow_ratio = _ratio(sums, expected_sums)
    # The slow scale looks for sustained shortfalls only: a quiet service shows slowly at small
    # counts, while a surge large enough to matter shows in its own window. On it the sum must be
    # surprising, and the window itself as low as a drop must be: a normal window just after an
    # outage still has the outage in its sum.
    # Judged against the recent windows only (no seasonal history yet), a change must be twice as
    # large to matter: those windows know nothing of the daily cycle, such as an evening's fall.
    effect = np.where(seasonal, model.ratio, model.ratio * model.ratio)
    up = (z >= model.z) & (ratio >= effect)
    low = (z <= -model.z) | ((slow_z <= -model.z) & (slow_ratio <= 1 / effect))
    down = low & (ratio <= 1 / effect)
    work.flags[:, lo:hi] = judged((up & model.up) | (down & model.down), work.flags[:, lo:hi])
    # A window flagged on the slow scale scores what that scale saw.
    scores = np.where((slow_z < 0) & (np.abs(slow_z) > np.abs(z)), slow_z, z)
    work.scores[:, e_lo:e_hi] = judged(scores, work.scores[:, e_lo:e_hi])


def _nan_to(values: np.ndarray, value: float) -> np.ndarray:
    """``values`` with NaN replaced by ``value``: np.nan_to_num for arrays without infinities, a third of its cost."""
    return np.where(np.isnan(values), value, values)


def _ratio(observed: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return np.divide(observed, expected, out=np.where(observed > 0, np.inf, 1.0), where=expected > 0)


def _window_sums(values: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """For each window ``lo:hi`` (of each row), the sum of it and the ``SLOW - 1`` before it (none before 0).

    Summed directly, not as differences of a running total: a sum is the same however long the
    history before it is.
    """
    total = np.zeros((len(values), hi - lo))
    for back in range(SLOW):
        since = max(lo - back, 0)
        part = values[:, since:max(hi - back, 0)]
        if part.shape[1]:
            total[:, since + back - lo:] += _nan_to(part, 0.0)
    return total


def _slow(work: _Stack, lo: int, hi: int, observed: np.ndarray, expected: np.ndarray, model: Model) -> np.ndarray:
    """The raw z of each window's sum with the ``SLOW - 1`` before it (``observed``), against the sum of their
    expectations (``expected``)."""
    if model.rate:
        totals = _window_sums(work.totals, lo, hi)
        rate = np.minimum(np.divide(expected, totals, out=np.zeros(totals.shape), where=totals > 0), 1 - 1e-9)
        return np.where(totals > 0, deviance_z(observed, rate * totals, totals), 0.0)
    return np.where(expected > 0, deviance_z(observed, np.maximum(expected, 0.5)), 0.0)


def _judge_span(work: _Stack, lo: int, hi: int, known: int,
                model: Model) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Expectation, z, each model's raw residual, and whether a seasonal model judged, for windows ``lo:hi``.

    Flags and residuals count only before ``known``, the first window of their day.
    """
    at = np.arange(lo, hi)
    day = model.day
    recent, recent_spread = _recent(work, at, known, model)
    candidates = [
        _seasonal(work, at, known, day, DAYS, 1, model),
        _seasonal(work, at, known, 7 * day, WEEKS, 2, model),
        recent,
    ]
    keys = len(work.counts)
    residuals = np.full((keys, 3, hi - lo), np.nan, dtype=np.float32)  # the slow scale's row is filled later
    best_e, best_z = np.full((keys, hi - lo), np.nan), np.zeros((keys, hi - lo))
    best_fit = np.full((keys, hi - lo), np.inf)
    for index, expected in enumerate(candidates):
        raw = _z(work, at, expected, model)
        residuals[:, index] = np.where(np.isnan(expected), np.nan, raw)  # a model that could not judge has none
        spread, fit = _dispersion(work, known, index, day)
        usable = ~np.isnan(expected)
        if index < 2:  # a seasonal model is used once its residuals can be trusted
            usable &= ~np.isnan(spread)[:, None]
            better = usable & (fit[:, None] < best_fit)
            spread = spread[:, None]
        else:  # the fallback, only where no seasonal model could judge
            better = usable & np.isnan(best_e)
            spread = np.where(np.isnan(spread)[:, None], recent_spread, spread[:, None])
            fit = np.full(keys, np.inf)
        best_e = np.where(better, expected, best_e)
        best_z = np.where(better, raw / np.sqrt(spread), best_z)
        best_fit = np.where(better, fit[:, None], best_fit)
    judged = ~np.isnan(best_e)
    expected_counts = np.where(judged, _expected_count(work, at, best_e, model), 0.0)
    return expected_counts, np.where(judged, best_z, 0.0), residuals, np.isfinite(best_fit)


def _seasonal(work: _Stack, at: np.ndarray, known: int, period: int, periods: int, needed: int,
              model: Model) -> np.ndarray:
    """Median of the same windows (and neighbours) ``1..periods`` periods before; NaN with too little history."""
    lags = np.array([k * period - j for k in range(1, periods + 1) for j in SPREAD])
    index = at[:, None] - lags[None, :]
    values = _values_before(work, index, known, model)
    enough = np.sum(~np.isnan(values), axis=-1) >= needed * len(SPREAD)
    return np.where(enough, _nanmedian(values), np.nan)


def _recent(work: _Stack, at: np.ndarray, known: int, model: Model) -> tuple[np.ndarray, np.ndarray]:
    """Median of the ``RECENT`` windows before (NaN with fewer than half of them), and their own dispersion."""
    index = at[:, None] - np.arange(1, RECENT + 1)[None, :]
    values = _values_before(work, index, known, model)
    enough = np.sum(~np.isnan(values), axis=-1) >= RECENT // 2
    middle = np.where(enough, _nanmedian(values), np.nan)
    # Their spread around the median, in units of the noise model's at that level.
    if model.rate:
        seen = index[None] >= work.starts[:, None, None]
        records = (np.where(seen, work.totals[:, np.maximum(index, 0)], 0.0).sum(axis=-1)
                   / np.maximum(seen.sum(axis=-1), 1))
        scale = np.sqrt(np.maximum(middle * (1 - middle), 1e-9) / np.maximum(records, 1.0))
    else:
        scale = np.sqrt(np.maximum(middle, 0.5))
    deviation = _nanmedian(np.abs(values - middle[..., None])) * _MAD / scale
    return middle, np.maximum(1.0, _nan_to(deviation, 1.0) ** 2)


def _values_before(work: _Stack, index: np.ndarray, known: int, model: Model) -> np.ndarray:
    """The compared values at ``index`` (NaN before the row's history, or flagged before ``known``)."""
    valid = index[None] >= work.starts[:, None, None]
    safe = np.maximum(index, 0)
    valid = valid & ~(work.flags[:, safe] & (safe < known))  # a flag counts once its day is over
    values = _values(work, safe, model)
    return np.where(valid & ~np.isnan(values), values, np.nan)


def _nanmedian(values: np.ndarray) -> np.ndarray:
    """Medians along the last axis ignoring NaN; NaN where all are. A sort: numpy's nanmedian is ~20x slower here."""
    if not values.shape[-1]:
        return np.full(values.shape[:-1], np.nan)
    ordered = np.sort(values, axis=-1)  # NaN last
    valid = np.sum(~np.isnan(values), axis=-1)
    low, high = np.maximum((valid - 1) // 2, 0), np.maximum(valid // 2, 0)
    middle = (np.take_along_axis(ordered, low[..., None], -1)[..., 0]
              + np.take_along_axis(ordered, high[..., None], -1)[..., 0]) / 2
    return np.where(valid > 0, middle, np.nan)


def _values(work: _Stack, index: np.ndarray, model: Model) -> np.ndarray:
    """What is compared: the count, or the failure rate (NaN for a window without records)."""
    if not model.rate:
        return work.counts[:, index]
    totals = work.totals[:, index]
    return np.divide(work.counts[:, index], totals, out=np.full(totals.shape, np.nan), where=totals > 0)


def _expected_count(work: _Stack, at: np.ndarray, expected: np.ndarray, model: Model) -> np.ndarray:
    return expected * work.totals[:, at] if model.rate else expected


def _z(work: _Stack, at: np.ndarray, expected: np.ndarray, model: Model) -> np.ndarray:
    observed = work.counts[:, at]
    if model.rate:
        totals = work.totals[:, at]
        # A rate of 0 expected would make any failure infinitely surprising: floor it at half a
        # failure in the window's records.
        rate = np.where(np.isnan(expected), np.nan, np.maximum(expected, 0.5 / np.maximum(totals, 1)))
        rate = np.minimum(rate, 1 - 1e-9)
        z = deviance_z(observed, _nan_to(rate, 0.0) * totals, totals)
        return np.where(totals > 0, z, 0.0)
    # An expectation of 0 (a key that was quiet) is floored at half a record.
    return deviance_z(observed, np.maximum(_nan_to(expected, 0.0), 0.5))


def _dispersion(work: _Stack, known: int, index: int, day: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's dispersion (>= 1) and fit (median |residual|) of a model over the week before window ``known``.

    NaN for a row with fewer than ``MIN_RESIDUALS`` residuals there (the model is not used yet).
    """
    since = work.residuals_from
    past = work.residuals[:, index, max(0, known - 7 * day) - since:max(0, known) - since]
    count = np.sum(~np.isnan(past), axis=1)
    middle = sorted_median(np.sort(past, axis=1), count)
    spread = sorted_quantile(np.sort(np.abs(past - middle[:, None]), axis=1), count, TAIL).astype(np.float64) / TAIL_Z
    fit = sorted_median(np.sort(np.abs(past), axis=1), count).astype(np.float64)
    trusted = count >= MIN_RESIDUALS
    return np.where(trusted, np.maximum(1.0, spread * spread), np.nan), np.where(trusted, fit, np.nan)


# numpy's median and (linear) quantile, of each row of an array sorted already (NaN last, ``count``
# of each row not NaN), in its own dtype: the same numbers as np.median / np.quantile of each row's
# values, without their fixed cost (tests/test_detectors.py checks them against numpy).
@functools.lru_cache(maxsize=8)
def _whole_digests(keys: frozenset[str]) -> np.ndarray:
    """The hashes of keys never thinned, and of ``REST``."""
    return pl.Series(sorted(keys | {REST}), dtype=pl.String).hash(seed=THIN_SEED).to_numpy()


#: Keys' hashes (``THIN_SEED``) already made, shared by every state of the process: a batch's keys
#: (services, per window) are nearly always ones seen before, and a Polars ``hash`` is an
#: expression run for each batch (0.4 ms, and a wait on Polars' thread pool).
_HASHES: dict[str, int] = {}
_HASHES_KEPT = 65_536


def _key_hashes(keys: pl.Series) -> np.ndarray:
    """The distinct hashes of ``keys``, sorted."""
    if keys.len() > _HASHES_KEPT:
        return _distinct(keys.hash(seed=THIN_SEED).to_numpy())
    known = {name: _HASHES.get(name) for name in set(keys.to_list())}
    new = [name for name, digest in known.items() if digest is None]
    if new:
        made = dict(zip(new, pl.Series(new, dtype=pl.String).hash(seed=THIN_SEED).to_list(), strict=True))
        known.update(made)
        if len(_HASHES) + len(made) > _HASHES_KEPT:
            _HASHES.clear()
        _HASHES.update(made)
    return _distinct(np.fromiter(known.values(), dtype=np.uint64, count=len(known)))


def _distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values, sorted: ``np.unique``'s result without its first call's import of ``numpy.ma``
    (75 ms, under the GIL, in every run)."""
    ordered = np.sort(values)
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if len(ordered) else ordered


def _kept(hashes: np.ndarray, level: int) -> np.ndarray:
    """The key hashes thinning at ``level`` keeps: the top ``level`` bits zero."""
    return hashes[hashes <= _limit(level)]


def _limit(level: int) -> np.uint64:
    """The largest hash thinning at ``level`` keeps."""
    return np.right_shift(np.uint64(2**64 - 1), np.uint64(level))


def sorted_median(ordered: np.ndarray, count: np.ndarray) -> np.ndarray:
    low, high = np.maximum((count - 1) // 2, 0), np.maximum(count // 2, 0)
    a, b = (np.take_along_axis(ordered, i[:, None], 1)[:, 0] if ordered.shape[1] else np.zeros(len(i), ordered.dtype)
            for i in (low, high))
    return np.where(count % 2 == 1, b, (a + b) / ordered.dtype.type(2))


def sorted_quantile(ordered: np.ndarray, count: np.ndarray, q: float) -> np.ndarray:
    virtual = (count - 1) * q
    below = np.clip(np.floor(virtual).astype(np.intp), 0, None)
    above = np.minimum(below + 1, np.maximum(count - 1, 0))
    if not ordered.shape[1]:
        return np.zeros(len(count), ordered.dtype)
    low = np.take_along_axis(ordered, below[:, None], 1)[:, 0]
    high = np.take_along_axis(ordered, above[:, None], 1)[:, 0]
    gamma = virtual - np.floor(virtual)
    step = high - low
    dtype = ordered.dtype.type
    lerp = np.where(gamma >= 0.5, high - step * (1 - gamma).astype(dtype), low + step * gamma.astype(dtype))
    return np.where(virtual >= count - 1, np.take_along_axis(ordered, np.maximum(count - 1, 0)[:, None], 1)[:, 0],
                    lerp)


class SeasonalDetector(WindowedDetector):
    """A windowed detector that judges each key's window counts against ``plugins.seasonal``'s expectation.

    A subclass says how a batch is counted (``counts_table``) and how a flagged window reads
    (``flag``). Each seal judges the windows it closes in order and keeps them in ``history``;
    windows still open are judged again, on a copy, whenever results are read.
    """

    #: Flagged windows judged by the rate of ``failures`` in ``total`` (binomial) instead of ``total`` (Poisson).
    rate: ClassVar[bool] = False
    #: Judge windows only once complete (a later record seen): a drop cannot be judged before.
    complete_only: ClassVar[bool] = False
    #: Windows stay open a day at least, whatever ``retention`` says: a key's window is a row of a
    #: few numbers, and files up to a day apart (a late host, a day's files read out of order)
    #: must give the verdicts of one read in time order.
    least_retention: ClassVar[int] = 86_400_000_000
    #: A read judges the open windows (retention and a closing step: 1.25 days by default) in one
    #: call per key rather than one per band and key: a key's day costs the same either way, its
    #: call a fixed ~0.6 ms more (10M lines, 61 services: 0.20 -> 0.10 s for error-spikes).
    judged_at_once: ClassVar[int] = 8
    #: A longer stretch is judged in runs of at most as many bands as are judged at once: judging
    #: stacks each key's windows over the whole call, so its memory follows the windows of a call
    #: times its keys, not its rows (a run of a year's bands took 863 MB).
    judged_bands: ClassVar[int] = 8

    #: Bytes of one window's rows of a key in the window tables (a ``counts`` row, and a ``samples``
    #: table's rows where it has one), about: with the history, what a key costs (``key_bytes``).
    row_bytes: ClassVar[int] = 64
    #: Keys never thinned (error-spikes' ``all``).
    whole_keys: ClassVar[frozenset[str]] = frozenset()
    #: Whether the records of keys thinned out are kept, summed under ``REST``: for a key that
    #: judges every record (error-spikes' ``all``).
    keeps_rest: bool = False

    def init_model(self, z: float, ratio: float, up: bool, down: bool, min_score: float, max_gap: int) -> None:
        # As floats: a whole ``ratio: 5`` is an int, and its square, past 64 bits, stops NumPy.
        self.model = Model(self.width, z=float(z), ratio=float(ratio), rate=self.rate, up=up, down=down)
        # Windows are closed (and judged) a quarter of a day at a time: judging costs per call, not
        # per window, and a seal comes every few windows. Verdicts do not depend on where seals
        # fall (see ``judge``), so this changes only when, never what.
        self.close_step = max(1, self.model.day // 4)
        self.min_score = min_score
        self.max_gap = max_gap
        self.history: dict[str, History] = {}
        #: Key thinning (see ``admit``): the level (1 key in 2^level is judged), and the hashes of
        #: every key ever seen that the level keeps.
        self.key_level = 0
        self.keys_held = np.zeros(0, dtype=np.uint64)
        self.first_window: int | None = None  # the earliest window with records: how long a history can be

    def extra_size(self) -> int:
        return sum(history_bytes(series) for series in self.history.values()) + self.keys_held.nbytes

    def merge(self, other: WindowedDetector) -> None:
        assert isinstance(other, SeasonalDetector)
        if other.first_window is not None:
            self.first_window = min(other.first_window, self.first_window or other.first_window)
        level = max(self.key_level, other.key_level)
        self._hold(_distinct(np.concatenate([_kept(self.keys_held, level), _kept(other.keys_held, level)])), level)
        if other.key_level < self.key_level:
            # Its rows of keys I no longer keep, thinned before they join my parts: a band crowded
            # with parts is folded as they join, and rows folded in could not be told apart again.
            # A shallow copy, not copy.copy: that goes through __getstate__, which compacts a
            # checkpoint's state (folds every band, splits a batch spanning months into its bands).
            other, source = object.__new__(type(other)), other
            other.__dict__.update(source.__dict__)
            other._bands = {band: [(tag, self._thin_keys(data)) for tag, data in parts]
                            for band, parts in other._bands.items()}
            other._fresh = [self._thin_keys(data) for data in other._fresh]
        # Only a sealed state judges; of two that did, the one that judged further wins.
        mine, theirs = self.horizon, other.horizon
        super().merge(other)
        if theirs is not None and (mine is None or theirs > mine):
            self.history = dict(other.history)
        self._hold(self.keys_held, self.key_level)  # at the span the merge reached
        if self.key_level:
            self._thin_judged()

    # -- key thinning -------------------------------------------------------------------------

    def key_bytes(self) -> int:
        """Memory of one key at most: its history (``History``) and its rows of the open windows.

        A history reaches back four weeks (``Model.keep``) at most, and no further than the
        windows seen so far: a day of logs costs a day of history per key, not four weeks.
        """
        span = 1 if self.first_window is None or not self.newest else \
            max(1, self.newest[0] // self.width - self.first_window + 1)
        per_window = 4 + (4 if self.rate else 0) + 1  # counts, totals and flags
        history = min(span, self.model.keep) * per_window + ROWS * 4 * min(span, self.model.residuals_kept)
        open_windows = self.retention // self.width + self.close_step + 1
        return history + 8 * EXPECTED_KEPT + min(span, open_windows) * self.row_bytes

    def key_capacity(self) -> int | None:
        """How many keys the rule's share of ``limits.memory_mb`` holds (None: not bounded)."""
        return max(1, self.state_bytes // self.key_bytes()) if self.state_bytes else None

    def admit(self, data: Tables) -> Tables:
        """A batch's tables, with only the keys the thinning level keeps (after the batch raised it).

        A key costs a history as long as the windows seen (four weeks at most) whether it is seen
        once or always, so the state is bounded by the number of keys: the level is the fewest
        halvings after which the keys ever seen whose hash falls in the first 1 in 2^level fit the
        rule's share (``key_capacity``, at the span of event time seen). It is a function of the
        data alone (the set of keys and the span), so the same whatever the split, the order or the
        executor; it only rises, and each rise drops the rows, histories and verdicts of the keys
        it no longer keeps, so what is left is what the final level keeps. The keys kept are judged
        exactly as without thinning: a key's verdicts read its own windows only.
        """
        counts = data["counts"]
        if not counts.height:
            return data
        first = int(counts["window"].to_numpy().min())  # NumPy, not Polars: no wait on its thread pool
        self.first_window = first if self.first_window is None else min(first, self.first_window)
        digests = _key_hashes(counts["key"])
        for whole in _whole_digests(self.whole_keys).tolist():
            digests = digests[digests != whole]
        fresh = _kept(digests, self.key_level)
        self._hold(_distinct(np.concatenate([self.keys_held, fresh])), self.key_level)
        return self._thin_keys(data)

    def _hold(self, held: np.ndarray, level: int) -> None:
        """Hold the hashes ``held`` (kept at ``level``), raising the level until they fit; if it rose,
        thin the whole state to it."""
        capacity = self.key_capacity()
        while capacity is not None and held.size > capacity and level < MAX_LEVEL:
            level += 1
            held = _kept(held, level)
        self.keys_held = held
        if level <= self.key_level:
            return
        self.key_level = level
        for band, parts in self._bands.items():
            self._bands[band] = [(tag, self._thin_keys(data)) for tag, data in parts]
        self._fresh = [self._thin_keys(data) for data in self._fresh]
        self._thin_judged()

    def _kept_keys(self, keys: pl.Series) -> np.ndarray:
        """Whether each key is kept at the thinning level (as a mask)."""
        whole = keys.is_in(list(self.whole_keys | {REST})).to_numpy()
        return whole | (keys.hash(seed=THIN_SEED).to_numpy() <= _limit(self.key_level))

    def _thin_keys(self, data: Tables) -> Tables:
        """``data`` with the rows of keys the level drops left out, or summed under ``REST`` (``keeps_rest``)."""
        if not self.key_level:
            return data
        thinned = {}
        for name, frame in data.items():
            spec = self.tables[name]
            if not spec.windowed or not frame.height:
                thinned[name] = frame
                continue
            keep = self._kept_keys(frame["key"])
            if keep.all():
                thinned[name] = frame
            elif not self.keeps_rest:
                thinned[name] = frame.filter(pl.Series(keep))
            else:
                rest = frame.with_columns(key=pl.when(pl.Series(keep)).then(pl.col("key")).otherwise(pl.lit(REST)))
                thinned[name] = spec.conform(spec.fold(rest).sort("window", maintain_order=True))
        return thinned

    def _thin_judged(self) -> None:
        """Drop the histories and closed verdicts of keys the level no longer keeps."""
        if self.history:
            names = list(self.history)
            for name, keep in zip(names, self._kept_keys(pl.Series(names, dtype=pl.String)), strict=True):
                if not keep:
                    del self.history[name]
        if self.runs:
            names = list(self.runs)
            keep = self._kept_keys(pl.Series([str(key) for key, _ in names], dtype=pl.String))
            self.runs = {name: found for name, found, kept in zip(names, self.runs.values(), keep, strict=True) if kept}

    def degraded(self) -> str | None:
        if not self.key_level:
            return super().degraded()
        keys, dropped = self._keys_degraded(), self.runs_degraded()
        return keys if dropped is None else f"{keys}; {dropped}"

    def _keys_degraded(self) -> str:
        noun = self.key_noun()
        held = self.keys_held.size
        rest = f", the others only within key '{min(self.whole_keys)}'" if self.keeps_rest else ""
        return (f"more {noun} than its share of limits.memory_mb holds a four-week history for: {noun} thinned to "
                f"1 in {2 ** self.key_level} (by a hash of the key, the same in every run): {held} of about "
                f"{held << self.key_level} judged on their own{rest}")

    def key_noun(self) -> str:
        """What the keys are, for the summary (``degraded``)."""
        return "keys"

    def series(self, data: Tables, lo: int | None, hi: int | None) -> dict[str, tuple[int, np.ndarray, np.ndarray]]:
        """Per key, the windows to judge: ``(first, counts, totals)`` from the first not yet judged to ``hi``."""
        counts = window_rows(data["counts"], lo, hi)
        newest = self.newest[0] // self.width if self.newest else None
        if newest is None:
            return {}
        stop = newest if self.complete_only else newest + 1
        stop = stop if hi is None else min(hi, stop)
        found: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
        self._stale: set[str] = set()  # keys whose history is too old, on a read (which deletes nothing)
        # Each key's windows as numpy arrays: the rows sorted by key and cut where it changes (one
        # Polars query, where partitioning made one per key).
        rows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        if counts.height:
            frame = counts.select("key", "window", "count", "total").sort("key")
            starts = np.flatnonzero(frame["key"].is_first_distinct().to_numpy())
            windows, count, total = (frame[name].to_numpy() for name in ("window", "count", "total"))
            ends = [*starts[1:].tolist(), frame.height]
            for key, start, end in zip(frame["key"].gather(starts).to_list(), starts.tolist(), ends, strict=True):
                rows[key] = (windows[start:end], count[start:end], total[start:end])
        # A stray record years before the rest must not make every window since worth judging:
        # nothing older than the history a key keeps can change a verdict.
        floor = stop - self.model.keep
        rows.pop(REST, None)  # the records of keys thinned out: only ever judged within a whole key
        for key in set(rows) | set(self.history):
            past = self.history.get(key)
            if past is not None and past.end < floor:
                if self.provisional:  # a read leaves the state as it was
                    self._stale.add(key)
                else:
                    del self.history[key]  # too old to be a baseline: start again
                past = None
            if past is None and key not in rows:
                continue
            start = past.end if past is not None else int(rows[key][0].min())
            if lo is not None and past is None:
                start = max(start, lo)
            start = max(start, floor)
            if stop <= start:
                continue
            values = np.zeros(stop - start)
            totals = np.zeros(stop - start)
            if key in rows:
                windows, count, total = rows[key]
                inside = (windows >= start) & (windows < stop)
                np.add.at(values, windows[inside] - start, count[inside])
                np.add.at(totals, windows[inside] - start, total[inside])
            if past is not None and not values.any() and not past.counts.any():
                if not self.provisional:
                    del self.history[key]  # quiet for the whole history: nothing is expected of it any more
                continue
            found[key] = (start, values, totals)
        return found

    #: The fewest records a flagged rise must have (``min_count``): with rises only, the open
    #: windows of a key that never reaches it need no judging at a read.
    least_flagged: int = 0

    def verdicts(self, data: Tables, lo: int | None, hi: int | None) -> list[dict[str, Any]]:
        flags = []
        found = self.series(data, lo, hi)
        stale = self.__dict__.pop("_stale", set())  # not kept: a read's, for this call only
        keys = [key for key, (_, counts, _) in sorted(found.items())
                if not (self.provisional and not self.model.down and counts.max(initial=0) < self.least_flagged)]
        series = [(None if key in stale else self.history.get(key), *found[key]) for key in keys]
        for key, (history, judged) in zip(keys, judge_many(series, self.model, commit=not self.provisional),
                                          strict=True):
            if not self.provisional:
                self.history[key] = history
            totals = found[key][2]
            first = judged.first
            for at in np.nonzero(judged.flagged)[0]:
                flags.append((key, first + int(at), float(judged.observed[at]), float(judged.expected[at]),
                              float(judged.z[at]), float(totals[at])))
        return self.flags(data, flags)

    def flags(self, data: Tables, flagged: list[tuple[str, int, float, float, float, float]]) -> list[dict[str, Any]]:
        """Flagged windows as anomalies: ``(key, window, observed, expected, z, records)`` each."""
        raise NotImplementedError
