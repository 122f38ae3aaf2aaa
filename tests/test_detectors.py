"""Detector rule types as a whole: merge and pickle laws, eviction, config errors, CLI runs and planted anomalies."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from plugins.duplicates import DuplicateEvent
from plugins.error_spike import ErrorSpike
from plugins.flatline import Flatline
from plugins.frequency import Frequency
from plugins.timestamps import TimestampCheck
from plugins.unknown_status import UnknownStatus
from tests.conftest import REPO, Workspace, load_bench
from tests.detector_data import background, batches, evaluate, mixed, random_sizes, rec, scrambled, strip_samples

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


# -- merge, pickle and eviction -------------------------------------------------------------------


@pytest.mark.parametrize("kind", DETECTORS)
def test_random_splits_pickles_and_merge_orders_give_the_same_result(kind):
    lines = mixed()
    expected = evaluate(DETECTORS[kind](), batches(lines))
    assert expected, "the data must give this detector something to find"
    for seed in range(6):
        rng = random.Random(seed)
        parts = batches(lines, sizes=random_sizes(len(lines), rng, rng.randint(2, 12)))
        assert scrambled(DETECTORS[kind](), parts, rng) == expected, f"seed {seed}"


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
    assert watermark - oldest <= state.retention // state.width + state.lookback + 1
    assert state.late == 0


def test_records_for_closed_windows_are_counted_as_late():
    lines = mixed()
    rule = Frequency("busy", retention="10m")
    state = rule.empty()
    for batch in batches(lines, sizes=random_sizes(len(lines), random.Random(1), 20)):
        state.merge(_updated(rule, batch))
    before = state.result().value
    state.merge(_updated(rule, batches([rec(41, user="spammer", message="very late")])[0]))
    after = state.result().value
    late = [a for a in after if a["key"] == "late_events"]
    assert [a for a in after if a["key"] != "late_events"] == before
    assert late and late[0]["count"] == 1 and late[0]["severity"] == "low"


@pytest.mark.parametrize("kind", ["error_spike", "frequency", "duplicate_event", "flatline"])
def test_a_backlog_older_than_the_watermark_does_not_pile_up(kind):
    # A watcher that has seen recent records is then given old ones (a backfill, or a late host):
    # the watermark stays put, and every old record is late. Sealing as the engine does between
    # merges must drop them as they come, not keep them until the watermark moves.
    template = DETECTORS[kind]()
    rule = type(template)("x", **{**template.params, "retention": "10m"})
    state = rule.empty()
    for batch in batches(background(range(600, 660))):  # minutes 600-659 set the watermark
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
    assert state.late == len(old) if kind in ("frequency", "duplicate_event") else state.late > 0


def _updated(rule, batch):
    partial = rule.empty()
    partial.update(batch)
    return partial


# -- configuration errors -----------------------------------------------------------------------


BAD_RULES = """\
- {name: bad-unknown, type: unknown_status, allowed: SUCCESS}
- {name: bad-clock, type: timestamp, max_future: 5 minutes}
- {name: bad-spike, type: error_spike, spike_height: 0.5}
- {name: bad-spike-key, type: error_spike, spike_heigth: 3}
- {name: bad-busy, type: frequency, num_events: 0}
- {name: bad-busy-none, type: frequency, num_events: null, max_share: null}
- {name: bad-dupes, type: duplicate_event, retention: forever}
- {name: bad-quiet, type: flatline, fraction: 2}
"""
BAD_MESSAGES = [
    "rules/bad.yaml: rule 'bad-unknown': allowed: expected list, got 'SUCCESS'",
    "rules/bad.yaml: rule 'bad-clock': max_future: expected integer or string >= 1 matching ^[1-9][0-9]*[smhd]$, "
    "got '5 minutes'",
    "rules/bad.yaml: rule 'bad-spike': spike_height: expected number >= 1, got 0.5",
    "rules/bad.yaml: rule 'bad-spike-key': unknown field 'spike_heigth' (did you mean 'spike_height'?)",
    "rules/bad.yaml: rule 'bad-busy': num_events: expected integer or nothing >= 1, got 0",
    "rules/bad.yaml: rule 'bad-busy-none': num_events, max_share: expected at least one of them set, got both null",
    "rules/bad.yaml: rule 'bad-dupes': retention: expected integer or string >= 1 matching ^[1-9][0-9]*[smhd]$, "
    "got 'forever'",
    "rules/bad.yaml: rule 'bad-quiet': fraction: expected number or nothing > 0 <= 1, got 2",
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
    duplicate = next(i for i, line in enumerate(lines) if line.endswith("paid order 1"))
    cuts = [duplicate + 1] + [next(i for i, line in enumerate(lines) if line.startswith(rec(m)[:16]))
                              for m in (45, 75, 105)]
    return [lines[a:b] for a, b in zip([0, *cuts], [*cuts, len(lines)])]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    """The default rules on ``mixed()``: as one file, as 5 rotated files, and as 3 files then 2 more."""
    lines = mixed()
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
    assert split["samples"] == ["part1.txt:" + split["samples"][0].split(":")[1], "part2.txt:1"]


@pytest.mark.parametrize("kind", DETECTORS)
def test_a_restart_between_files_loses_nothing_and_updates_in_place(runs, kind):
    assert strip_samples(by_type(runs["restarted"], kind)) == strip_samples(by_type(runs["one"], kind))


def test_anomalies_of_the_first_run_keep_their_ids_when_more_data_arrives(runs):
    first = {a["id"]: a for a in runs["first"] if a["window_start"]}
    final = {a["id"]: a for a in runs["restarted"]}
    kept = [i for i in first if i in final]
    assert kept, "some windowed anomaly must be found before the restart"
    assert len(final) == len(runs["restarted"])  # no id listed twice
    spike = [a for a in runs["restarted"] if a["type"] == "error_spike"]
    assert [a["count"] for a in spike] == [50]


# -- planted anomalies ---------------------------------------------------------------------------


def _quality_module():
    return load_bench("anomaly_quality")


def test_default_rules_find_every_planted_anomaly_in_a_generated_log(workspace):
    log = workspace.data / "generated.txt"
    subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), "--lines", "200000", "--seed", "7",
                    "--out", str(log), "--manifest", str(workspace.root / "manifest.json")], check=True)
    manifest = json.loads((workspace.root / "manifest.json").read_text(encoding="utf-8"))
    assert {p["kind"] for p in manifest["anomalies"]} == set(_quality_module().FINDERS)
    workspace.run("-q", check=True, timeout=60)
    found = anomalies(workspace)
    quality = _quality_module()
    report = quality.evaluate(manifest, found, quality.sample_lines(log, found))
    assert report["missed"] == []
    assert all(found == total for found, total in report["recall"].values())


def test_watch_mode_finds_every_planted_anomaly_with_windows_spanning_files(workspace, tmp_path):
    """Three parts of a generated log dropped one by one into a watched folder: same as one batch run."""
    from tests.test_watch import Watcher, assert_same_as_batch

    log = tmp_path / "generated.txt"
    subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), "--lines", "150000", "--seed", "11",
                    "--out", str(log), "--manifest", str(tmp_path / "manifest.json"), "--long-every", "0"],
                   check=True)
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    data = log.read_bytes()
    assert data.endswith(b"\n")
    lines = [line + b"\n" for line in data[:-1].split(b"\n")]  # not splitlines: \r alone is no line end
    cuts = [0, len(lines) // 3, 2 * len(lines) // 3, len(lines)]  # every window near a cut spans two files
    with Watcher(workspace) as watcher:
        watcher.wait_started()
        for part, (start, end) in enumerate(zip(cuts, cuts[1:])):
            temp = workspace.data / f".part{part}.tmp"
            temp.write_bytes(b"".join(lines[start:end]))
            temp.rename(workspace.data / f"part{part}.txt")
            watcher.wait_for_lines(end)
        assert watcher.stop() == 0
    def in_whole_log(sample: str) -> str:  # "part1.txt:5" -> the line's number in the log cut in three
        name, _, line = sample.rpartition(":")
        return f"{log.name}:{cuts[int(name[4])] + int(line)}"

    found = [{**a, "samples": [in_whole_log(s) for s in a["samples"]]} for a in anomalies(workspace)]
    quality = _quality_module()
    report = quality.evaluate(manifest, found, quality.sample_lines(log, found))
    assert report["missed"] == []
    assert all(hit == total for hit, total in report["recall"].values())
    assert_same_as_batch(workspace, tmp_path / "batch")
