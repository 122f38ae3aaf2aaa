"""Detector rule types as a whole: merge and pickle laws, eviction, config errors, CLI runs and planted anomalies."""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import safestate
from plugins.duplicates import DuplicateEvent
from plugins.error_spike import ErrorSpike
from plugins.flatline import Flatline
from plugins.frequency import Frequency
from plugins.timestamps import TimestampCheck
from plugins.unknown_status import UnknownStatus
from tests.conftest import REPO, Workspace, load_bench
from tests.detector_data import (BASE, at, background, batches, daily_cycle, evaluate, in_time_order, mixed,
                                 random_sizes, rec, scrambled, strip_samples, synthetic)

#: Each detector with parameters that keep every window of ``mixed()`` (spanning 2 h) in state.
DETECTORS = {
    "unknown_status": lambda: UnknownStatus("unknown"),
    "timestamp": lambda: TimestampCheck("clock", max_lateness="10m", now="2026-01-01T00:00:00Z"),
    "error_spike": lambda: ErrorSpike("spike", retention="1d"),
    "frequency": lambda: Frequency("busy", retention="1d"),
    "duplicate_event": lambda: DuplicateEvent("dupes", retention="1d"),
    "flatline": lambda: Flatline("quiet", retention="1d"),
}
DEFAULT_NAMES = {
    "unknown_status": "unknown-statuses", "timestamp": "implausible-timestamps", "error_spike": "error-spikes",
    "frequency": "busy-users", "duplicate_event": "duplicate-events", "flatline": "silent-services",
}


def anomalies(workspace: Workspace) -> list[dict[str, Any]]:
    return json.loads((workspace.output / "anomalies.json").read_text(encoding="utf-8"))["anomalies"]


def by_type(found: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [a for a in found if a["type"] == kind]


# -- data: two quiet days, then a day with one of everything ---------------------------------------

DAY = 1440  # minutes
#: The day of the planted anomalies: two whole days of steady traffic come before it.
D = 2 * DAY


def steady(minutes: int, per_minute: int = 10, fail_every: int = 20,
           services: tuple[str, ...] = ("PaymentService", "NotificationService")) -> list[str]:
    """``minutes`` of steady traffic from BASE (vectorised): ``per_minute`` records a minute, evenly spaced,
    alternating over ``services``; record ``i`` of a minute is a FAILURE when ``i % fail_every == 0``. Every
    message (``op <n>``) carries an id and is unique, so none is a duplicate."""
    n = minutes * per_minute
    i = np.arange(n)
    minute, slot = i // per_minute, i % per_minute
    us = minute * 60_000_000 + slot * (60_000_000 // per_minute)
    base = np.datetime64(BASE.replace(tzinfo=None), "us")
    stamps = np.datetime_as_string(base + us.astype("timedelta64[us]"), unit="us")
    status = np.where(slot % fail_every == 0, "FAILURE", "SUCCESS")
    service = np.array(services)[slot % len(services)]
    user = np.char.add("user", ((minute * 7 + slot) % 10).astype(str))
    return [f"{t}Z {s} {v} {u} op {k}" for t, s, v, u, k in zip(stamps, status, service, user, i)]


def planted() -> list[str]:
    """Two days of steady traffic (the seasonal models' warm-up), then on the third, from minute ``D``:

    - minutes 40-49: ``spammer`` sends 320 records (frequency);
    - minutes 70-79: 120 ERROR records on top of 10 failures (error_spike);
    - minutes 100-119: NotificationService is silent, two windows (flatline);
    - three PENDING records (unknown_status); an epoch, a future and an unparseable timestamp;
    - ``paid order 1001`` written twice at minute 30.5, ``paid order 1002`` three times at 60.5 (duplicate_event).
    """
    lines = [line for line in steady(D + 180)
             if not ("NotificationService" in line and at(D + 100)[:19] <= line[:19] < at(D + 120)[:19])]
    lines += [rec(D + 40 + i / 32, user="spammer", message=f"request {i}") for i in range(320)]
    lines += [rec(D + 70 + i / 12, "ERROR", user=f"user{i % 10}", message=f"timeout {i}") for i in range(SPIKE)]
    lines += [rec(D + m, "PENDING", "FraudService", "user3") for m in (5, 50, 90)]
    lines += [rec(D + 30.5, message="paid order 1001")] * 2
    lines += [rec(D + 60.5, "INFO", user="user2", message="paid order 1002")] * 3
    lines.sort(key=_stamp)
    lines.insert(200, "1970-01-01T00:00:00Z INFO SettlementService user4 imported")
    lines.insert(400, "2099-01-01T00:00:00Z SUCCESS LedgerService user5 scheduled")
    lines.insert(600, "2025-02-30T00:00:00Z SUCCESS LedgerService user5 scheduled")
    return lines


#: ERROR records planted in one window, on top of its 10 background failures.
SPIKE = 120


def _stamp(line: str) -> str:
    """A line's timestamp in a form that sorts as text (``at`` leaves out zero microseconds)."""
    stamp = line.split(" ", 1)[0].rstrip("Z")
    return stamp if "." in stamp else stamp + ".000000"


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return planted()


# -- merge, pickle and eviction -------------------------------------------------------------------


@pytest.mark.parametrize("kind", DETECTORS)
def test_random_splits_pickles_and_merge_orders_give_the_same_result(kind, lines):
    expected = evaluate(DETECTORS[kind](), batches(lines))
    assert expected, "the data must give this detector something to find"
    for seed in range(6):
        rng = random.Random(seed)
        parts = batches(lines, sizes=random_sizes(len(lines), rng, rng.randint(2, 12)))
        assert scrambled(DETECTORS[kind](), parts, rng) == expected, f"seed {seed}"


def _bursty_days() -> list[str]:
    """Three days of PaymentService traffic with a daily cycle and bursty (gamma-Poisson) counts, and a
    steadier WalletService: the noise the seasonal models' dispersion is for."""
    rng = np.random.default_rng(5)
    counts = rng.poisson(daily_cycle(3, 20, 60) * rng.gamma(4, 0.25, 432))
    counts[396:408] = 0  # two hours without a record on the last day
    return in_time_order(synthetic(rng, counts, failures=rng.binomial(counts, 0.05)),
                         synthetic(rng, rng.poisson(daily_cycle(3, 10, 30)), service="WalletService"))


def test_sealing_between_merges_in_read_order_gives_the_result_of_one_read():
    """The engine may seal between merges; what a window is judged with must not depend on where seals fell.
    (Judged a day at a time from wherever the last seal stopped, this read once gave one flatline incident
    and sealed after each of 30 batches three, with other scores.)"""
    lines = _bursty_days()
    rule = Flatline("quiet", retention="1d")
    once = evaluate(rule, batches(lines))
    assert once, "the data must give flatline something to find"
    sealed = rule.empty()
    for batch in batches(lines, sizes=random_sizes(len(lines), random.Random(1), 30)):
        sealed.merge(_updated(rule, batch))
        sealed.seal()
    assert sealed.result().value == once


@pytest.mark.parametrize("make", [lambda: Flatline("quiet", retention="1d"), lambda: ErrorSpike("spike", by="service")])
def test_reading_results_between_merges_changes_nothing(make):
    """A read judges the open windows without keeping anything (watch mode reads after every commit):
    reads after every merge and seal leave the same state, and the same last read, as none."""
    lines = _bursty_days()
    rule = make()
    read, unread = rule.empty(), rule.empty()
    reads = []
    for batch in batches(lines, sizes=random_sizes(len(lines), random.Random(2), 30)):
        for state in (read, unread):
            state.merge(_updated(rule, batch))
            state.seal()
        reads.append(read.result().value)
        assert read.result().value == reads[-1]
    assert unread.result().value == reads[-1]
    assert {k: (h.first, h.counts.tolist(), h.flags.tolist()) for k, h in read.history.items()} == {
        k: (h.first, h.counts.tolist(), h.flags.tolist()) for k, h in unread.history.items()}


@pytest.mark.parametrize("kind", ["error_spike", "frequency", "duplicate_event", "flatline"])
def test_in_order_eviction_keeps_results_exact_and_state_small(kind):
    lines = mixed()
    parts = batches(lines, sizes=random_sizes(len(lines), random.Random(3), 40))
    kept_all = DETECTORS[kind]()
    evicting = type(kept_all)("x", **{**kept_all.params, "retention": "10m"})
    assert evaluate(evicting, parts) == evaluate(kept_all, parts)
    state = evicting.empty()
    for batch in parts:
        state.merge(_updated(evicting, batch))
    state.result()
    oldest = min(
        table["window"].min() for [(_, tables)] in state._bands.values() for name, table in tables.items()
        if state.tables[name].windowed and table.height
    )
    watermark = state.newest[-1] // state.width  # the 100th newest record's window
    assert watermark - oldest <= state.retention // state.width + state.lookback + state.close_step
    assert state.late == 0


def test_records_for_closed_windows_are_counted_as_late():
    lines = mixed()
    rule = Frequency("busy", retention="10m")
    state = rule.empty()
    for batch in batches(lines, sizes=random_sizes(len(lines), random.Random(1), 20)):
        state.merge(_updated(rule, batch))
    before = state.result().value
    # The retention is at least the 6 windows of history and one more: 70 minutes behind the watermark.
    assert state.result().detail["closed_before"] == "2025-07-21T00:40:00Z"
    state.merge(_updated(rule, batches([rec(31, user="spammer", message="very late")])[0]))
    after = state.result().value
    late = [a for a in after if a["key"] == "late_events"]
    assert [a for a in after if a["key"] != "late_events"] == before
    assert late and late[0]["count"] == 1 and late[0]["severity"] == "low"


@pytest.mark.parametrize("kind", ["error_spike", "frequency", "duplicate_event", "flatline"])
def test_a_backlog_older_than_the_watermark_does_not_pile_up(kind):
    # A watcher that has seen recent records is then given old ones (a backfill, or a late host):
    # the watermark stays put, and every old record is late. Sealing as the engine does between
    # merges must drop them as they come, not keep them until the watermark moves. The watermark
    # is more than a day ahead: error_spike and flatline keep a day whatever their retention.
    template = DETECTORS[kind]()
    rule = type(template)("x", **{**template.params, "retention": "10m"})
    state = rule.empty()
    for batch in batches(background(range(2000, 2060))):  # minutes 2000-2059 set the watermark
        state.merge(_updated(rule, batch))
    state.seal()
    old = background(range(0, 240))  # four hours, all closed long ago
    for number, batch in enumerate(batches(old, sizes=[480] * (len(old) // 480)), 1):
        state.merge(_updated(rule, batch))
        if number % 2 == 0:
            state.seal()
        held = sum(table.height for parts in state._bands.values() for _, tables in parts
                   for name, table in tables.items() if state.tables[name].windowed and table["window"].max() < 500)
        assert held <= 2 * 480, f"{held} rows of closed windows kept after {number} batches"
    state.seal()
    assert state.late == len(old)


def test_the_daily_rules_keep_a_day_of_windows_whatever_their_retention():
    # Their horizon (see tests/test_order.py): also for a state saved before there was a floor.
    day, seventy_minutes = 86_400_000_000, 70 * 60_000_000
    for rule in (ErrorSpike("spike", retention="10m"), Flatline("quiet", retention="10m")):
        assert rule.retention == day
        rule.retention = 600_000_000
        known = safestate.classes([type(rule)])
        assert safestate.loads(safestate.dumps(rule, known), known).retention == day
    assert Frequency("busy", retention="10m").retention == seventy_minutes  # its 6 windows of history and one


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_busy_users_verdicts_follow_the_rule_on_any_table(data):
    # Frequency.verdicts judges a seal's windows with NumPy and one Polars query: this checks it
    # against the rule written out row by row, on tables a seal can hold and some it rarely does
    # (windows out of order, a window without its total, thinned windows, one-off values).
    n = data.draw(st.integers(2, 4), label="history_windows")
    rule = Frequency("busy", min_count=5, ratio=2, z=1.5, history_windows=n, retention="1d")
    rule._levels = data.draw(st.sampled_from([[], [(4, 1)], [(2, 1), (6, 3)]]), label="levels")
    keys = ["u1", "u2", "u3", "a-much-longer-user-name"]
    cells = data.draw(st.dictionaries(st.tuples(st.sampled_from(keys), st.integers(0, 9)), st.integers(1, 60),
                                      min_size=1, max_size=30), label="counts")
    rows = sorted(cells.items(), key=lambda kv: kv[0][1])
    if data.draw(st.booleans(), label="out of window order"):
        rows = data.draw(st.permutations(rows))
    counts = pl.DataFrame([(k, w, c, 0, 0) for (k, w), c in rows], orient="row",
                          schema=rule.tables["counts"].schema)
    windows = sorted({w for _, w in cells})
    missing = data.draw(st.sets(st.sampled_from(windows), max_size=1), label="windows without a total")
    totals = pl.DataFrame({"window": [w for w in windows if w not in missing],
                           "total": [sum(c for (_, w2), c in cells.items() if w2 == w) + data.draw(
                               st.integers(0, 50)) for w in windows if w not in missing]})
    start = data.draw(st.integers(-2, 4), label="first window")
    lo, hi = data.draw(st.integers(0, 5), label="lo"), data.draw(st.integers(5, 10), label="hi")
    tables = {"counts": counts, "totals": totals, "samples": rule.tables["samples"].empty(),
              "start": pl.DataFrame({"key": ["all"], "first_window": [start]}, schema=rule.tables["start"].schema)}
    found = {(a["key"], a["_w"]): a for a in rule.verdicts(tables, lo, hi)}

    total_of = dict(zip(totals["window"].to_list(), totals["total"].to_list(), strict=True))
    expected = {}
    for (key, window), count in cells.items():
        if not lo <= window < hi or count < 5 or window - n < start:
            continue
        past = [c for (k, w), c in cells.items() if k == key and window - n <= w < window]
        own = (sum(past) - max(past)) / (n - 1) if past else 0.0
        level = max([step for at, step in rule._levels if window >= at] or [0])
        active = sum(1 for (_, w) in cells if w == window) * 2 ** level
        population = total_of[window] / active if window in total_of else None
        mean = max(own, population or 0.0, 0.5)
        z = math.copysign(math.sqrt(max(0.0, 2 * (count * math.log(count / mean) - (count - mean)))), count - mean)
        if z >= 1.5 and count >= 2 * mean:
            expected[(key, window)] = (count, round(mean, 3), round(own, 3),
                                       None if population is None else round(population, 3))
    assert {k: (a["count"], a["expected"], a["detail"]["own_level"], a["detail"]["population_level"])
            for k, a in found.items()} == expected


def _updated(rule, batch):
    partial = rule.empty()
    partial.update(batch)
    return partial


# -- configuration errors -----------------------------------------------------------------------


BAD_RULES = """\
- {name: bad-unknown, type: unknown_status, allowed: SUCCESS}
- {name: bad-clock, type: timestamp, max_future: 5 minutes}
- {name: bad-spike, type: error_spike, ratio: 0.5}
- {name: bad-spike-key, type: error_spike, spike_tipe: up}
- {name: bad-busy, type: frequency, min_count: 0}
- {name: bad-busy-history, type: frequency, history_windows: 1}
- {name: bad-dupes, type: duplicate_event, retention: forever}
- {name: bad-quiet, type: flatline, z: 0}
"""
BAD_MESSAGES = [
    "rules/bad.yaml: rule 'bad-unknown': allowed: expected list, got 'SUCCESS'",
    "rules/bad.yaml: rule 'bad-clock': max_future: expected a duration: a whole number and its unit, "
    "s, m, h or d (90s, 10m, 1h, 1d), got '5 minutes'",
    "rules/bad.yaml: rule 'bad-spike': ratio: expected number >= 1, got 0.5",
    "rules/bad.yaml: rule 'bad-spike-key': unknown field 'spike_tipe' (did you mean 'spike_type'?)",
    "rules/bad.yaml: rule 'bad-busy': min_count: expected integer >= 1, got 0",
    "rules/bad.yaml: rule 'bad-busy-history': history_windows: expected integer >= 2 <= 1000, got 1",
    "rules/bad.yaml: rule 'bad-dupes': retention: expected a duration: a whole number and its unit, "
    "s, m, h or d (90s, 10m, 1h, 1d), got 'forever'",
    "rules/bad.yaml: rule 'bad-quiet': z: expected number > 0, got 0",
]


def test_bad_parameters_of_every_detector_are_config_errors(workspace):
    workspace.rules_file("bad.yaml", BAD_RULES)
    result = workspace.run("--check")
    assert result.returncode == 2, result.stderr
    for message in BAD_MESSAGES:
        assert message in result.stderr, f"missing: {message}\n{result.stderr}"


def test_shipped_detector_rules_are_enabled_and_valid(workspace):
    result = workspace.run("--check")
    assert result.returncode == 0, result.stderr
    for name in DEFAULT_NAMES.values():
        assert name in result.stdout


# -- real runs: windows across files, restarts ---------------------------------------------------


def _workspace(root: Path) -> Workspace:
    shutil.copy(REPO / "settings.yaml", root / "settings.yaml")
    shutil.copytree(REPO / "rules", root / "rules")
    (root / "data").mkdir()
    return Workspace(root)


def _rotated(lines: list[str]) -> list[list[str]]:
    """``lines`` cut into 5 files so that every planted window is split between two of them."""
    duplicate = next(i for i, line in enumerate(lines) if line.endswith("paid order 1001"))
    cuts = [duplicate + 1] + [next(i for i, line in enumerate(lines) if line.startswith(rec(D + m)[:16]))
                              for m in (45, 75, 105)]
    return [lines[a:b] for a, b in zip([0, *cuts], [*cuts, len(lines)])]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    """The default rules on ``planted()``: as one file, as 5 rotated files, and as 3 files then 2 more."""
    lines = planted()
    one = _workspace(tmp_path_factory.mktemp("one"))
    one.write("all.txt", "\n".join(lines) + "\n")
    one.run("-q", check=True)
    parts = _rotated(lines)
    rotated = _workspace(tmp_path_factory.mktemp("rotated"))
    restarted = _workspace(tmp_path_factory.mktemp("restarted"))
    for i, part in enumerate(parts, start=1):
        rotated.write(f"part{i}.txt", "\n".join(part) + "\n")
    rotated.run("-q", check=True)
    for i, part in enumerate(parts[:3], start=1):
        restarted.write(f"part{i}.txt", "\n".join(part) + "\n")
    restarted.run("-q", check=True)
    first = anomalies(restarted)
    for i, part in enumerate(parts[3:], start=4):
        restarted.write(f"part{i}.txt", "\n".join(part) + "\n")
    restarted.run("-q", check=True)
    return {"one": anomalies(one), "rotated": anomalies(rotated), "first": first, "restarted": anomalies(restarted)}


@pytest.mark.parametrize("kind", DETECTORS)
def test_a_window_split_between_two_files_gives_the_single_file_result(runs, kind):
    single, rotated = by_type(runs["one"], kind), by_type(runs["rotated"], kind)
    assert single, "the data must give this detector something to find"
    assert strip_samples(rotated) == strip_samples(single)


def test_samples_of_a_duplicate_split_between_files_name_both_files(runs):
    [split] = [a for a in by_type(runs["rotated"], "duplicate_event") if a["count"] == 2]
    locations = [s["location"] for s in split["samples"]]
    assert locations == ["part1.txt:" + locations[0].split(":")[1], "part2.txt:1"]
    assert [s["text"].split(" ", 4)[-1] for s in split["samples"]] == ["paid order 1001"] * 2


@pytest.mark.parametrize("kind", DETECTORS)
def test_a_restart_between_files_loses_nothing_and_updates_in_place(runs, kind):
    assert strip_samples(by_type(runs["restarted"], kind)) == strip_samples(by_type(runs["one"], kind))


def test_a_silence_of_two_windows_is_one_incident(runs):
    [drop] = [a for a in by_type(runs["one"], "flatline") if a["kind"] == "drop"]
    assert drop["id"] == f"silent-services:NotificationService@{at(D + 100)}"
    assert (drop["windows"], drop["window_start"], drop["window_end"]) == (2, at(D + 100), at(D + 120))
    assert (drop["observed"], drop["count"], drop["samples"]) == (0, 0, [])


def test_anomalies_of_the_first_run_keep_their_ids_when_more_data_arrives(runs):
    first = {a["id"]: a for a in runs["first"] if a["window_start"]}
    final = {a["id"]: a for a in runs["restarted"]}
    kept = [i for i in first if i in final]
    assert kept, "some windowed anomaly must be found before the restart"
    assert len(final) == len(runs["restarted"])  # no id listed twice
    spike = [a for a in runs["restarted"] if a["type"] == "error_spike"]
    # by: service: PaymentService's spike is its own incident, not also one of all records together
    assert sorted((a["key"], a["count"]) for a in spike) == [("PaymentService", SPIKE + 10)]


# -- planted anomalies ---------------------------------------------------------------------------


def _quality_module():
    return load_bench("anomaly_quality")


def _generate(folder: Path, *args: str) -> tuple[Path, dict[str, Any]]:
    log = folder / "generated.txt"
    subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), *args, "--out", str(log),
                    "--manifest", str(folder / "manifest.json")], check=True)
    return log, json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The default rules over ``generate.py --lines 200000 --seed 7``: the quality report and the incidents."""
    workspace = _workspace(tmp_path_factory.mktemp("generated"))
    log, manifest = _generate(workspace.data, "--lines", "200000", "--seed", "7")
    assert {p["kind"] for p in manifest["anomalies"]} == set(_quality_module().FINDERS)
    workspace.run("-q", check=True, timeout=60)
    found = anomalies(workspace)
    quality = _quality_module()
    return quality.evaluate(manifest, found, quality.sample_lines(log, found)), found


def test_default_rules_find_every_planted_anomaly_in_a_generated_log(generated):
    report, _ = generated
    assert report["missed"] == []
    assert all(found == total for found, total in report["recall"].values())


def test_no_incident_is_listed_twice_in_a_generated_log(generated):
    _, found = generated
    assert len({a["id"] for a in found}) == len(found)


def _first_line_from(lines: list[bytes], minute: str) -> int:
    """The index of the first line stamped in ``minute`` (``2025-07-21T10:18``) UTC (not with an offset)."""
    return next(i for i, line in enumerate(lines) if line.startswith(minute.encode()) and b"Z " in line[16:28])


@pytest.fixture(scope="module")
def watched(tmp_path_factory) -> dict[str, Any]:
    """Three parts of a generated log dropped one by one into a watched folder, cut inside the planted
    busy user and inside the planted silence; anomalies.json after each part, the quality report, and
    whether a batch run over the same three files made the same outputs."""
    from tests.test_watch import Watcher, assert_same_as_batch

    tmp_path = tmp_path_factory.mktemp("watched")
    (tmp_path / "workspace").mkdir()
    workspace = _workspace(tmp_path / "workspace")
    log, manifest = _generate(tmp_path, "--lines", "150000", "--seed", "11", "--long-every", "0")
    data = log.read_bytes()
    assert data.endswith(b"\n")
    lines = [line + b"\n" for line in data[:-1].split(b"\n")]  # not splitlines: \r alone is no line end
    planted = {p["kind"]: p for p in manifest["anomalies"]}
    # Three quarters into the silence: an incident is listed once its combined score reaches min_score
    # (four silent windows are not enough), and then grows as the next file extends it.
    middles = [_middle(planted["spamming_user"]), _middle(planted["silent_service"], 0.75)]
    cuts = [0, *(_first_line_from(lines, m) for m in middles), len(lines)]
    snapshots = []
    with Watcher(workspace) as watcher:
        watcher.wait_started()
        for part, (start, end) in enumerate(zip(cuts, cuts[1:])):
            temp = workspace.data / f".part{part}.tmp"
            temp.write_bytes(b"".join(lines[start:end]))
            temp.rename(workspace.data / f"part{part}.txt")
            watcher.wait_for_lines(end)
            snapshots.append(anomalies(workspace))
        assert watcher.stop() == 0

    def in_whole_log(sample: dict[str, Any]) -> dict[str, Any]:  # "part1.txt:5" -> its line in the whole log
        name, _, line = sample["location"].rpartition(":")
        return {**sample, "location": f"{log.name}:{cuts[int(name[4])] + int(line)}"}

    found = [{**a, "samples": [in_whole_log(s) for s in a["samples"]]} for a in snapshots[-1]]
    quality = _quality_module()
    report = quality.evaluate(manifest, found, quality.sample_lines(log, found))
    batch_error = None
    try:
        assert_same_as_batch(workspace, tmp_path / "batch")
    except AssertionError as error:
        batch_error = str(error)
    return {"snapshots": snapshots, "report": report, "batch_error": batch_error, "middles": middles}


def _middle(planted: dict[str, Any], fraction: float = 0.5) -> str:
    """The minute ``fraction`` into a planted interval, as an ISO prefix (``2025-07-21T10:18``)."""
    from datetime import datetime

    start, end = (datetime.fromisoformat(planted[k].replace("Z", "+00:00")) for k in ("start", "end"))
    return (start + (end - start) * fraction).strftime("%Y-%m-%dT%H:%M")


def test_watch_mode_gives_the_batch_result(watched):
    assert watched["batch_error"] is None, watched["batch_error"]


def test_watch_mode_incidents_growing_across_files_keep_their_ids(watched):
    """An incident cut by a file boundary keeps its id as the next file extends it, and is listed once."""
    *earlier, final = watched["snapshots"]
    assert len({a["id"] for a in final}) == len(final)
    final_by_id = {a["id"]: a for a in final}
    for snapshot, (rule, key), middle in zip(earlier, [("busy-users", "user28666"),
                                                         ("silent-services", "NotificationService")],
                                             watched["middles"]):
        [before] = [a for a in snapshot if a["rule"] == rule and a["key"] == key]
        assert before["window_start"] < middle + ":00Z", before  # the incident had begun before the cut ...
        after = final_by_id[before["id"]]  # ... and it is the same incident once the next file came
        assert [a["id"] for a in final].count(before["id"]) == 1
        assert after["window_end"] > before["window_end"] or after["count"] > before["count"], (before, after)
        assert after["window_end"] > middle + ":00Z"


def test_watch_mode_finds_every_planted_anomaly_with_windows_spanning_files(watched):
    """Three parts of a generated log dropped one by one into a watched folder: every planted anomaly found."""
    report = watched["report"]
    assert report["missed"] == []
    assert all(hit == total for hit, total in report["recall"].values())



def test_sorted_median_and_quantile_are_numpys_to_the_bit() -> None:
    # The seasonal model reads its residuals' spread with these instead of np.median / np.quantile
    # on each row's values: the same numbers in the same dtype, for odd and even lengths, ties, a
    # lone value, and rows padded with NaN (sorted last) to the width of the longest.
    from plugins.seasonal import TAIL, sorted_median, sorted_quantile

    rng = np.random.default_rng(7)
    for dtype in (np.float32, np.float64):
        rows = [values.astype(dtype) for n in [*range(1, 40), 1008]
                for values in (rng.standard_t(3, n), rng.integers(-3, 4, n).astype(float))]
        width = max(len(row) for row in rows)
        padded = np.full((len(rows), width), np.nan, dtype=dtype)
        for i, row in enumerate(rows):
            padded[i, :len(row)] = row
        ordered, count = np.sort(padded, axis=1), np.array([len(row) for row in rows])
        checks = [(sorted_median(ordered, count), [np.median(row) for row in rows])]
        checks += [(sorted_quantile(ordered, count, q), [np.quantile(row, q) for row in rows]) for q in (TAIL, 0.5, 0.25)]
        for got, want in checks:
            assert got.dtype == want[0].dtype
            assert [float(g) for g in got] == [float(w) for w in want]

@pytest.mark.parametrize("rate", [False, True])
def test_keys_judged_together_get_the_verdicts_each_gets_alone(rate):
    # Alike keys (histories over the same windows) are stacked and judged in one pass per day: each
    # key's verdicts, expectations, scores and kept history must be what judging it alone gives,
    # bit for bit, whatever the other keys hold (quiet, bursty, gaps, a key without history).
    from plugins.seasonal import Model, judge, judge_many

    rng = np.random.default_rng(11)
    model = Model(600_000_000, rate=rate)
    day = model.day

    def series(level: float, days: int) -> tuple[np.ndarray, np.ndarray]:
        totals = rng.poisson(level * (1.5 + np.sin(np.arange(days * day) * 2 * np.pi / day))).astype(float)
        counts = rng.binomial(totals.astype(int), 0.05).astype(float) if rate else totals.copy()
        counts[rng.integers(0, len(counts), 5)] *= 6  # a few bursts
        return counts, totals

    keys = []
    for level in (0.0, 0.5, 3.0, 40.0, 40.0, 200.0):
        counts, totals = series(level, 22)  # three weeks: the weekly model competes with the daily one
        if level == 3.0:
            counts[day * 4: day * 5], totals[day * 4: day * 5] = 0, 0  # a silent day
        keys.append((counts, totals))

    def run(together: bool) -> list:
        histories: list = [None] * len(keys)
        found = []
        for lo, hi in ((0, 8 * day), (8 * day, 21 * day + 37), (21 * day + 37, 22 * day)):  # seals, then a read
            commit = hi < 22 * day
            batch = [(histories[i], lo, c[lo:hi], t[lo:hi]) for i, (c, t) in enumerate(keys)]
            if not together:
                done = [judge(*entry, model, commit=commit) for entry in batch]
            else:
                done = judge_many(batch, model, commit=commit)
            if commit:
                histories = [history for history, _ in done]
            found.append([(j.first, j.flagged.tolist(), j.expected.tolist(), j.z.tolist()) for _, j in done])
        found.append([(h.first, h.flags.tolist(), np.nan_to_num(h.residuals, nan=-9).tolist()) for h in histories])
        return found

    alone = run(False)
    assert any(any(flags) for step in alone[:3] for _, flags, _, _ in step), "something must be flagged"
    assert run(True) == alone


@pytest.mark.parametrize("rate", [False, True])
def test_keys_starting_at_different_windows_judged_together_get_what_each_gets_alone(rate):
    # Keys whose histories start at different windows, keys first seen in the middle of a call,
    # and a key judged from past its history's end (a gap of zeros) share one stack: each row reads
    # nothing before its own first window and keeps what it held before its first window judged.
    # A log sparse over years (every key a few records at its own time) had judged each key alone.
    from plugins.seasonal import Model, judge, judge_many

    rng = np.random.default_rng(23)
    model = Model(600_000_000, rate=rate)
    day, size = model.day, 22 * model.day
    offsets = [0, 37, 3 * day + 5, 9 * day + 100, 15 * day + 1, 21 * day + 40]
    keys = []
    for k, offset in enumerate(offsets):
        totals = rng.poisson((5.0 + 30 * k) * (1.5 + np.sin(np.arange(size) * 2 * np.pi / day))).astype(float)
        counts = rng.binomial(totals.astype(int), 0.05).astype(float) if rate else totals.copy()
        counts[rng.integers(offset, size, 6)] *= 6  # a few bursts
        counts[:offset], totals[:offset] = 0, 0
        keys.append((counts, totals))
    steps = ((0, 8 * day), (8 * day, 21 * day + 37), (21 * day + 37, 22 * day))  # seals, then a read

    def run(together: bool) -> list:
        histories: list = [None] * len(keys)
        found = []
        for step, (lo, hi) in enumerate(steps):
            commit = hi < size
            members, batch = [], []
            for k, (counts, totals) in enumerate(keys):
                first = lo if histories[k] is not None else max(lo, offsets[k])
                if k == 1 and step == 1:
                    first += 50  # judged from 50 windows past its history's end
                if first < hi:
                    members.append(k)
                    batch.append((histories[k], first, counts[first:hi], totals[first:hi]))
            done = judge_many(batch, model, commit=commit) if together else [judge(*e, model, commit=commit)
                                                                            for e in batch]
            if commit:
                for k, (history, _) in zip(members, done, strict=True):
                    histories[k] = history
            found.append([(k, j.first, j.flagged.tolist(), j.expected.tolist(), j.z.tolist())
                          for k, (_, j) in zip(members, done, strict=True)])
        found.append([(h.first, h.counts.tolist(), h.flags.tolist(), np.nan_to_num(h.residuals, nan=-9).tolist(),
                       h.expected.tolist()) for h in histories if h is not None])
        return found

    alone = run(False)
    assert any(any(flags) for step in alone[:3] for _, _, flags, _, _ in step), "something must be flagged"
    assert run(True) == alone


@pytest.mark.parametrize("rate", [False, True])
def test_a_history_keeps_what_judging_reads_and_no_more(rate):
    # Five weeks of one key judged in one call, or seal by seal at random points with the history
    # kept in between (its residuals and expectations only for the last windows, its counts as
    # integers): the same verdicts, bit for bit. And what the key keeps stays bounded by the windows
    # judging reads, however long it runs.
    from plugins.seasonal import EXPECTED_KEPT, ROWS, Model, history_bytes, judge

    rng = np.random.default_rng(5)
    model = Model(600_000_000, rate=rate)
    day, size = model.day, 37 * model.day
    totals = rng.poisson(30 * (1.5 + np.sin(np.arange(size) * 2 * np.pi / day))).astype(float)
    counts = rng.binomial(totals.astype(int), 0.05).astype(float) if rate else totals.copy()
    counts[rng.integers(0, size, 12)] *= 5
    counts[20 * day: 20 * day + 30] = 0  # an outage: the slow scale's sums see it
    _, whole = judge(None, 0, counts, totals, model, commit=True)
    history, found, lo = None, [], 0
    for hi in [*sorted(rng.choice(np.arange(1, size), 60, replace=False).tolist()), size]:
        history, judged = judge(history, lo, counts[lo:hi], totals[lo:hi], model, commit=True)
        assert judged.first == lo
        found.append(judged)
        lo = hi
    for name in ("flagged", "expected", "z"):
        assert np.concatenate([getattr(j, name) for j in found]).tolist() == getattr(whole, name).tolist(), name
    assert whole.flagged.sum() >= 3, "something must be flagged"
    assert (history.first, history.end) == (size - model.keep, size)
    assert history.counts.dtype == np.uint32 and len(history.totals) == (model.keep if rate else 0)
    assert history.residuals.shape == (ROWS, model.residuals_kept) and len(history.expected) == EXPECTED_KEPT
    bound = model.keep * (9 if rate else 5) + model.residuals_kept * ROWS * 4 + EXPECTED_KEPT * 8
    assert history_bytes(history) <= bound
    with pytest.raises(ValueError, match="judged again"):
        judge(history, size - 1, counts[-1:], totals[-1:], model, commit=True)


def test_a_history_keeps_counts_past_four_bytes_exactly():
    # A window of more than 2^32 records (one key, a flood of lines with one timestamp) must not
    # wrap: the history keeps such counts as 8-byte floats, and judging on reads them back whole.
    from plugins.seasonal import Model, judge

    model = Model(600_000_000)
    counts = np.full(3 * model.day, 1000.0)
    counts[2 * model.day + 5] = 5_000_000_000.0
    history, _ = judge(None, 0, counts[: 2 * model.day], counts[: 2 * model.day], model, commit=True)
    assert history.counts.dtype == np.uint32
    history, judged = judge(history, 2 * model.day, counts[2 * model.day:], counts[2 * model.day:], model,
                            commit=True)
    assert history.counts.dtype == np.float64 and history.counts[-model.day + 5] == 5_000_000_000.0
    assert judged.flagged[5] and judged.observed[5] == 5_000_000_000.0
    history, judged = judge(history, 3 * model.day, counts[:10], counts[:10], model, commit=True)
    assert history.counts[-model.day - 10 + 5] == 5_000_000_000.0 and not judged.flagged.any()
