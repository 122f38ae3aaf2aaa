"""Precision and recall of the shipped detector rules on real labeled NAB series turned into payment logs.

    .venv/bin/python bench/nab.py                         # both groups, all 11 series
    .venv/bin/python bench/nab.py --group failures --series CRM --debug
    .venv/bin/python bench/nab.py --series taxi --series speed --keep /tmp/nab-runs --seed 7
    .venv/bin/python bench/nab.py --nab /path/to/nab      # default: <repo>/../shared/nab

The CLI runs under the same interpreter as this script, so use one with the project installed.

Follows the two mappings of <nab>/README.md. Every series is first made regular: its normal interval
is the median gap, and gaps are filled with evenly spaced points interpolated linearly between the
neighbours. A point covers the time up to the next point; its value is read per normal interval, so a
point that covers d seconds stands for v * d / step (d == step everywhere but around the odd gap).

- failures (realTweets/Twitter_volume_*, realAWSCloudwatch/elb_request_count_8c0756): scale
  s = max(1, mean(v) / 20), so ~20 FAILURE lines per interval on average. Over them, a background of
  SUCCESS lines of the same service, Poisson around 3 x the series' smooth daily profile (the mean of
  v / s by time of day over the whole series, then a circular moving average over ~1 hour).
- traffic (realKnownCause/nyc_taxi, realAWSCloudwatch/grok_asg_anomaly, realTraffic/*): scale
  s = max(1, mean(v) / 50): v / s SUCCESS lines per interval, the service's whole traffic.

Counts are rounded stochastically (floor, plus one with the probability of the fraction) with a
seeded generator, so every interval keeps its scaled value on average and a run is repeatable. Lines
are spread uniformly at random over their interval (1-second timestamps), written in time order, each
with a unique payment id and a user drawn from 10M, so that no other rule has anything to find.

Each log is run with the shipped settings.yaml and rules/ through the real CLI in a work folder.
Scoring: every incident of anomalies.json, whatever its rule, is an alarm placed at the midpoint of
its peak window (its own window when it has no peak). A labeled window is found when an alarm lies in
it; an alarm in no window is false, and so is every suppressed incident. A seasonal z-score on the
same scaled series gives a reference table. Exit code 0 when every target of the groups run is met.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from anomaly_quality import (
    shipped_workspace,  # bench/ is on the path of a script run from it
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_NAB = REPO.parent / "shared" / "nab"

GROUPS = {
    "failures": ("realTweets/Twitter_volume_AAPL", "realTweets/Twitter_volume_AMZN",
                 "realTweets/Twitter_volume_CRM", "realTweets/Twitter_volume_FB",
                 "realTweets/Twitter_volume_GOOG", "realTweets/Twitter_volume_IBM",
                 "realAWSCloudwatch/elb_request_count_8c0756"),
    "traffic": ("realKnownCause/nyc_taxi", "realAWSCloudwatch/grok_asg_anomaly",
                "realTraffic/speed_7578", "realTraffic/occupancy_t4013"),
}
#: Mean scaled value per interval each mapping aims at (s = max(1, mean(v) / this)).
MEAN_PER_INTERVAL = {"failures": 20.0, "traffic": 50.0}
#: (precision, recall) each group's pooled figures must reach.
TARGETS = {"failures": (0.5, 0.6), "traffic": (0.4, 0.5)}
BACKGROUND_FACTOR = 3.0      # SUCCESS lines per FAILURE line at normal times, by the daily profile
PROFILE_SECONDS = 3600       # width of the circular moving average over the daily profile
SERVICE = "PaymentService"
USERS = 10_000_000
DAY = 86400

# The reference: z of the day-over-day change against the spread of those changes over the 7 days
# before (at least 1 day of them). One threshold for every series, chosen once and not tuned per
# series: |z| >= 4 is rare under noise (~1 in 16,000 for a normal) yet plain for a real break.
Z_THRESHOLD = 4.0
Z_HISTORY_DAYS = 7


@dataclass(frozen=True)
class Series:
    """One NAB series made regular: point start times (epoch seconds), values, normal interval, labels."""

    name: str
    starts: np.ndarray
    values: np.ndarray
    step: int
    windows: tuple[tuple[float, float], ...]

    @property
    def durations(self) -> np.ndarray:
        """Seconds each point covers: up to the next point, one normal interval for the last."""
        return np.append(np.diff(self.starts), self.step)


@dataclass(frozen=True)
class Traffic:
    """The scaled per-interval counts a log is written from, and the series the baseline reads."""

    failures: np.ndarray
    successes: np.ndarray
    scale: float
    signal: np.ndarray

    @property
    def lines(self) -> int:
        return int(self.failures.sum() + self.successes.sum())


@dataclass
class Score:
    """A series' (or a pool's) labeled windows, what was found and the alarms raised."""

    lines: int = 0
    windows: int = 0
    found: int = 0
    alarms: int = 0
    true_alarms: int = 0
    seconds: float | None = None
    note: str = ""
    invalid: bool = False  # the CLI failed, or did not count every line written: the figures mean nothing

    @property
    def false_alarms(self) -> int:
        return self.alarms - self.true_alarms

    @property
    def precision(self) -> float | None:
        return self.true_alarms / self.alarms if self.alarms else None

    @property
    def recall(self) -> float | None:
        return self.found / self.windows if self.windows else None

    def add(self, other: Score) -> None:
        for name in ("lines", "windows", "found", "alarms", "true_alarms"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.seconds is not None:
            self.seconds = (self.seconds or 0.0) + other.seconds


@dataclass
class Alarms:
    """What one CLI run reported: the peak midpoint of each incident per rule, and suppressed counts."""

    peaks: dict[str, list[float | None]] = field(default_factory=dict)
    suppressed: dict[str, int] = field(default_factory=dict)
    records: int | None = None
    error: str = ""


# ---- reading the series -------------------------------------------------------------------------

def epoch(text: str) -> float:
    """Seconds since 1970 of an ISO instant; one without an offset (NAB's) is UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def load_series(nab: Path, name: str, labels: dict[str, list[list[str]]]) -> Series:
    """Read ``data/<name>.csv`` and its labeled windows; fill the gaps."""
    with open(nab / "data" / f"{name}.csv", newline="", encoding="utf-8") as handle:
        rows = [(epoch(row["timestamp"]), float(row["value"])) for row in csv.DictReader(handle)]
    times, values = (np.array(column) for column in zip(*rows))
    step = int(np.median(np.diff(times)))
    starts, filled = fill_gaps(times, values, step)
    windows = tuple((epoch(a), epoch(b)) for a, b in labels[f"{name}.csv"])
    return Series(name, starts, filled, step, windows)


def fill_gaps(times: np.ndarray, values: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Insert evenly spaced points, linearly interpolated, where a gap holds whole missing intervals."""
    gaps = np.diff(times)
    inserted = np.maximum(np.rint(gaps / step).astype(int) - 1, 0)
    fractions = [np.arange(1, k + 1) / (k + 1) for k in inserted]
    new = np.concatenate([t + f * g for t, f, g in zip(times, fractions, gaps)] + [np.empty(0)])
    starts = np.sort(np.concatenate([times, np.rint(new)]))
    return starts, np.interp(starts, times, values)


# ---- the two mappings ---------------------------------------------------------------------------

def stochastic_round(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Floor, plus one with the probability of the fraction: the mean is kept, the result repeatable."""
    low = np.floor(x)
    return (low + (rng.random(len(x)) < x - low)).astype(np.int64)


def scaled(series: Series, group: str) -> tuple[np.ndarray, float]:
    """The series' value per point in lines (before rounding), and the scale s it was divided by."""
    scale = max(1.0, float(series.values.mean()) / MEAN_PER_INTERVAL[group])
    return series.values / scale * series.durations / series.step, scale


def daily_profile(series: Series, x: np.ndarray) -> np.ndarray:
    """Each point's smooth daily level: mean of ``x`` by time of day, circular moving average over ~1 h."""
    bins = DAY // series.step
    slot = ((series.starts % DAY) * bins // DAY).astype(int)
    half = max(1, round(PROFILE_SECONDS / series.step / 2))
    sums, counts = (np.bincount(slot, weights=w, minlength=bins) for w in (x, np.ones(len(x))))
    kernel = np.ones(2 * half + 1)
    smooth = [np.convolve(np.concatenate([a[-half:], a, a[:half]]), kernel, "valid") for a in (sums, counts)]
    return (smooth[0] / np.maximum(smooth[1], 1))[slot]


def failures_traffic(series: Series, rng: np.random.Generator) -> Traffic:
    """FAILURE lines from the series over a Poisson SUCCESS background of 3 x its daily profile."""
    x, scale = scaled(series, "failures")
    failures = stochastic_round(x, rng)
    successes = rng.poisson(BACKGROUND_FACTOR * daily_profile(series, x))
    rate = failures / np.maximum(failures + successes, 1)
    return Traffic(failures, successes, scale, rate)


def traffic_traffic(series: Series, rng: np.random.Generator) -> Traffic:
    """SUCCESS lines from the series: the service's whole traffic."""
    x, scale = scaled(series, "traffic")
    successes = stochastic_round(x, rng)
    return Traffic(np.zeros(len(x), dtype=np.int64), successes, scale, successes.astype(float))


MAPPINGS = {"failures": failures_traffic, "traffic": traffic_traffic}


def render(series: Series, traffic: Traffic, rng: np.random.Generator) -> str:
    """The log text: every line at a uniform random second of its interval, in time order."""
    per_point = traffic.failures + traffic.successes
    point = np.repeat(np.arange(len(per_point)), per_point)
    rank = np.arange(len(point)) - np.repeat(np.cumsum(per_point) - per_point, per_point)
    failed = rank < traffic.failures[point]  # the first ones of each interval; shuffled by the sort below
    moment = series.starts[point] + rng.random(len(point)) * series.durations[point]
    order = np.argsort(moment, kind="stable")
    stamps = np.datetime_as_string(np.floor(moment[order]).astype("datetime64[s]"), unit="s").tolist()
    users = rng.integers(0, USERS, len(point)).tolist()
    failed = failed[order].tolist()
    return "".join(
        f"{stamp}Z FAILURE {SERVICE} u{user} Payment pay-{number:09d} declined\n" if bad else
        f"{stamp}Z SUCCESS {SERVICE} u{user} Payment pay-{number:09d} processed\n"
        for number, (stamp, user, bad) in enumerate(zip(stamps, users, failed), start=1))


# ---- running the CLI and reading what it found --------------------------------------------------

def run_cli(log: Path, workdir: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None, float, str]:
    """Run the shipped configuration on ``log`` (as bench/anomaly_quality.py does); time the CLI.

    Returns (anomalies, summary, seconds, error). Exit code 3 (a rule failed, outputs written) is
    scored with the failure reported; any other failure scores nothing.
    """
    env = shipped_workspace(log, workdir)
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "core.cli", "-q"], cwd=workdir, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - began
    last = (done.stderr.strip().splitlines() or [""])[-1]
    error = f"CLI exit {done.returncode}: {last[:300]}" if done.returncode else ""
    out = workdir / "output"
    if done.returncode not in (0, 3) or not (out / "anomalies.json").exists():
        return None, None, seconds, f"CLI FAILED: {error or 'no output/anomalies.json'}"
    return (json.loads((out / "anomalies.json").read_text(encoding="utf-8")),
            json.loads((out / "summary.json").read_text(encoding="utf-8")), seconds, error)


def peak_midpoint(incident: dict[str, Any]) -> float | None:
    """Where an incident is placed: the middle of its peak window (of its own window without a peak)."""
    where = incident.get("peak") or incident
    start, end = where.get("window_start"), where.get("window_end") or where.get("window_start")
    if not start:
        return None  # nowhere to place it: it can only be a false alarm
    first = epoch(start)
    return first + (epoch(end) - first) / 2


def read_alarms(document: dict[str, Any], summary: dict[str, Any]) -> Alarms:
    """Every incident's placement, by rule, and the suppressed counts (0 before the rules block)."""
    alarms = Alarms(records=summary.get("totals", {}).get("records"))
    for incident in document.get("anomalies", []):
        rule = incident.get("rule") or incident.get("type", "?")
        alarms.peaks.setdefault(rule, []).append(peak_midpoint(incident))
    for rule, block in (document.get("rules") or {}).items():
        alarms.suppressed[rule] = int(block.get("suppressed") or 0)
    errors = document.get("rule_errors") or []
    alarms.error = f"{len(errors)} rule error(s): {json.dumps(errors)[:300]}" if errors else ""
    return alarms


# ---- scoring ------------------------------------------------------------------------------------

def score(peaks: list[float | None], suppressed: int, windows: tuple[tuple[float, float], ...]) -> Score:
    """Found windows, alarms and true alarms of placed incidents (suppressed ones count as false)."""
    hits = [{i for i, (a, b) in enumerate(windows) if p is not None and a <= p <= b} for p in peaks]
    found = set().union(*hits) if hits else set()
    return Score(windows=len(windows), found=len(found), alarms=len(peaks) + suppressed,
                 true_alarms=sum(bool(h) for h in hits))


def in_window(peak: float | None, windows: tuple[tuple[float, float], ...]) -> bool:
    return peak is not None and any(a <= peak <= b for a, b in windows)


def seasonal_z(x: np.ndarray, per_day: int) -> np.ndarray:
    """z of each day-over-day change against the sample sd of those changes over the 7 days before."""
    change = np.zeros(len(x))
    change[per_day:] = x[per_day:] - x[:-per_day]
    sums = [np.concatenate([[0.0], np.cumsum(change ** p)]) for p in (0, 1, 2)]
    t = np.arange(len(x))
    low, high = np.maximum(per_day, t - Z_HISTORY_DAYS * per_day), t
    n = np.maximum(high - low, 0).astype(float)
    mean = (sums[1][high] - sums[1][low]) / np.maximum(n, 1)
    var = ((sums[2][high] - sums[2][low]) - n * mean ** 2) / np.maximum(n - 1, 1)
    sd = np.sqrt(np.maximum(var, 0))
    usable = (n >= per_day) & (sd > 0)
    return np.where(usable, change / np.where(usable, sd, 1), 0.0)


def baseline_peaks(series: Series, traffic: Traffic) -> list[float | None]:
    """One incident per run of consecutive |z| >= 4 intervals, placed at the middle of its max |z| one."""
    z = np.abs(seasonal_z(traffic.signal, round(DAY / series.step)))
    flagged = np.flatnonzero(z >= Z_THRESHOLD)
    runs = np.split(flagged, np.flatnonzero(np.diff(flagged) > 1) + 1) if len(flagged) else []
    peaks = [run[np.argmax(z[run])] for run in runs]
    return [float(series.starts[i] + series.durations[i] / 2) for i in peaks]


# ---- one series, end to end ---------------------------------------------------------------------

def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def debug_rows(series: Series, traffic: Traffic) -> None:
    """A few intervals as written, around the series' largest value and at its start."""
    top = int(np.argmax(series.values))
    print(f"  {series.name}: step {series.step}s, {len(series.starts)} intervals, scale s = {traffic.scale:.4g}")
    print(f"  {'interval':20s} {'seconds':>7s} {'value':>9s} {'failures':>8s} {'successes':>10s} {'signal':>8s}")
    for i in [*range(0, 4), *range(max(top - 2, 0), min(top + 3, len(series.starts)))]:
        print(f"  {iso(series.starts[i]):20s} {int(series.durations[i]):7d} {series.values[i]:9.2f} "
              f"{traffic.failures[i]:8d} {traffic.successes[i]:10d} {traffic.signal[i]:8.3f}")


def evaluate(series: Series, group: str, args: argparse.Namespace, workdir: Path) -> tuple[Score, Score, Alarms]:
    """Write the series' log, run the CLI on it and score it; score the z-score baseline too."""
    rng = np.random.default_rng([args.seed, *series.name.encode()])
    traffic = MAPPINGS[group](series, rng)
    if args.debug:
        debug_rows(series, traffic)
    log = workdir / f"{series.name.replace('/', '_')}.log"
    log.write_text(render(series, traffic, rng), encoding="utf-8")
    baseline = score(baseline_peaks(series, traffic), 0, series.windows)
    baseline.lines = traffic.lines
    (workdir / "run").mkdir()
    document, summary, seconds, error = run_cli(log, workdir / "run")
    alarms = read_alarms(document, summary) if document is not None else Alarms()
    alarms.error = "; ".join(e for e in (error, alarms.error) if e)
    peaks = [p for rule in alarms.peaks.values() for p in rule]
    result = score(peaks, sum(alarms.suppressed.values()), series.windows)
    result.lines, result.seconds, result.note = traffic.lines, seconds, alarms.error
    if document is not None and alarms.records != traffic.lines:
        result.note = f"MISMATCH: wrote {traffic.lines} lines, the CLI counted {alarms.records} records. " + result.note
    result.invalid = document is None or alarms.records != traffic.lines
    return result, baseline, alarms


# ---- printing -----------------------------------------------------------------------------------

def ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def table(title: str, rows: list[tuple[str, Score]], timed: bool) -> Score:
    """Print one table and its pooled row; return the pooled score."""
    print(f"\n{title}")
    head = f"  {'series':44s} {'lines':>10s} {'windows':>7s} {'found':>5s} {'alarms':>6s} {'false':>6s} " \
           f"{'precision':>9s} {'recall':>6s}" + (f" {'cli s':>6s}" if timed else "")
    print(head + "\n  " + "-" * (len(head) - 2))
    pooled = Score()
    for name, s in [*rows, ("POOLED", None)]:
        s = s or pooled
        line = f"  {name:44s} {s.lines:10,d} {s.windows:7d} {s.found:5d} {s.alarms:6d} {s.false_alarms:6d} " \
               f"{ratio(s.precision):>9s} {ratio(s.recall):>6s}"
        print(line + (f" {s.seconds or 0:6.1f}" if timed else ""))
        if name != "POOLED":
            pooled.add(s)
    for name, s in rows:
        if s.note:
            print(f"  ! {name}: {s.note}")
    if timed and not any(s.invalid for _, s in rows):
        print("  records counted by the CLI (summary.json totals.records) = lines written, for every series")
    return pooled


def rule_breakdown(runs: list[tuple[Series, Alarms]]) -> None:
    """Alarms per series and rule: listed incidents, how many lie in a labeled window, suppressed."""
    print("  alarms per rule (listed / in a labeled window / suppressed):")
    for series, alarms in runs:
        rules = sorted(set(alarms.peaks) | {r for r, n in alarms.suppressed.items() if n})
        parts = []
        for rule in rules:
            peaks = alarms.peaks.get(rule, [])
            true = sum(in_window(p, series.windows) for p in peaks)
            parts.append(f"{rule} {len(peaks)}/{true}/{alarms.suppressed.get(rule, 0)}")
        print(f"    {series.name:42s} {', '.join(parts) or 'none'}")


def verdict(group: str, pooled: Score, valid: bool) -> bool:
    """Print the group's targets and whether its pooled figures meet them (never when a run was invalid)."""
    want_p, want_r = TARGETS[group]
    met = valid and (pooled.precision or 0.0) >= want_p and (pooled.recall or 0.0) >= want_r
    why = "" if valid else " (a CLI run failed or miscounted its lines)"
    print(f"  {group}: precision {ratio(pooled.precision)} (target >= {want_p}), recall {ratio(pooled.recall)} "
          f"(target >= {want_r}): {'MET' if met else 'NOT MET'}{why}")
    return met


# ---- command line -------------------------------------------------------------------------------

def selected(group: str, patterns: list[str]) -> list[str]:
    return [name for name in GROUPS[group] if not patterns or any(p in name for p in patterns)]


@contextmanager
def work_folder(keep: Path | None, name: str) -> Iterator[Path]:
    """A fresh work folder for one series: under --keep (kept), else a temporary one."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="omp-nab-") as tmp:
            yield Path(tmp)
        return
    folder = keep / name.replace("/", "_")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    yield folder


def run_group(group: str, names: list[str], labels: dict[str, Any], args: argparse.Namespace) -> tuple[Score, bool]:
    """Evaluate a group's series and print its tables; return the pooled score and whether every run was valid."""
    results, baselines, runs = [], [], []
    for name in names:
        series = load_series(args.nab, name, labels)
        with work_folder(args.keep, name) as workdir:
            result, baseline, alarms = evaluate(series, group, args, workdir)
        results.append((name, result))
        baselines.append((name, baseline))
        runs.append((series, alarms))
    pooled = table(f"== {group} mapping: shipped rules through the CLI", results, timed=True)
    rule_breakdown(runs)
    table(f"== {group} mapping: seasonal z-score baseline (|z| >= {Z_THRESHOLD:g}, day-over-day change, "
          f"sd over the {Z_HISTORY_DAYS} days before)", baselines, timed=False)
    return pooled, not any(s.invalid for _, s in results)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nab", type=Path, default=DEFAULT_NAB, help=f"NAB subset folder (default {DEFAULT_NAB})")
    parser.add_argument("--group", choices=("failures", "traffic", "all"), default="all")
    parser.add_argument("--series", action="append", default=[], metavar="NAME",
                        help="run only series whose name contains NAME (repeatable)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep each series' log and work folder under DIR")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--debug", action="store_true", help="print a few intervals of each series as written")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    labels = json.loads((args.nab / "labels.json").read_text(encoding="utf-8"))
    groups = ("failures", "traffic") if args.group == "all" else (args.group,)
    chosen = {group: selected(group, args.series) for group in groups}
    chosen = {group: names for group, names in chosen.items() if names}
    if not chosen:
        print(f"no series matches {args.series}", file=sys.stderr)
        return 2
    pooled = {group: run_group(group, names, labels, args) for group, names in chosen.items()}
    print("\ntargets (pooled over the series run, shipped rules through the CLI):")
    met = [verdict(group, score, valid) for group, (score, valid) in pooled.items()]
    return 0 if all(met) else 1


if __name__ == "__main__":
    sys.exit(main())
