"""Check bench/traffic.py: the shape of the heavy profile, determinism, and planted anomalies the manifest lists."""

import json
import re
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import REPO

LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (SUCCESS|INFO|WARN|FAILURE|ERROR) [A-Za-z]+Service user\d{6} \S.*")


def run(tmp_path, *args, name="log.txt"):
    """Run the generator with args, as a script, as users run it; return (lines, manifest)."""
    out = tmp_path / name
    subprocess.run([sys.executable, str(REPO / "bench" / "traffic.py"), "--out", str(out), "--lines", "50000",
                    *args], check=True)
    lines = out.read_bytes().decode("utf-8").split("\n")
    assert lines[-1] == ""
    return lines[:-1], json.loads(Path(f"{out}.manifest.json").read_text())


def when(text):
    """A UTC ISO timestamp as a datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def heavy(tmp_path_factory):
    return run(tmp_path_factory.mktemp("heavy"), "--seed", "7")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return run(tmp_path_factory.mktemp("planted"), "--seed", "7", "--plant")


def test_every_line_is_a_record_in_time_order(heavy):
    lines, manifest = heavy
    assert len(lines) == manifest["lines"] == 50000
    assert [line for line in lines if not LINE.fullmatch(line)] == []
    stamps = [line[:20] for line in lines]
    assert stamps == sorted(stamps)


def test_top_user_holds_more_than_a_tenth(heavy):
    lines, manifest = heavy
    (_, top), = Counter(line.split(" ")[3] for line in lines).most_common(1)
    assert 0.1 < top / len(lines) < 0.16
    assert manifest["top_user_share"] == round(top / len(lines), 4)


def test_midday_has_about_six_times_the_night_traffic(heavy):
    hours = Counter(int(line[11:13]) for line in heavy[0])
    assert 4 < hours[12] / hours[0] < 8


def test_failure_rate_does_not_follow_the_volume(heavy):
    failing = Counter(int(line[11:13]) for line in heavy[0] if line.split(" ")[1] in ("FAILURE", "ERROR"))
    hours = Counter(int(line[11:13]) for line in heavy[0])
    assert 0.03 < failing[0] / hours[0] < 0.07 and 0.04 < failing[12] / hours[12] < 0.06


def test_no_anomaly_by_default(heavy):
    assert heavy[1]["anomalies"] == []


def test_same_seed_same_bytes(tmp_path):
    first, _ = run(tmp_path, "--seed", "3", "--plant", name="a.txt")
    second, _ = run(tmp_path, "--seed", "3", "--plant", name="b.txt")
    third, _ = run(tmp_path, "--seed", "4", "--plant", name="c.txt")
    assert first == second != third


def test_manifest_lists_every_planted_kind_in_days_two_and_three(planted):
    lines, manifest = planted
    kinds = Counter(entry["kind"] for entry in manifest["anomalies"])
    assert kinds == {"spamming_user": 1, "failure_spike": 1, "silent_service": 1, "duplicate_event": 4}
    spans = sorted((when(e["start"]), when(e["end"])) for e in manifest["anomalies"])
    assert spans[0][0] >= when(manifest["span"]["start"]) + timedelta(days=1)
    assert all(b[0] - a[1] >= timedelta(hours=2) for a, b in zip(spans, spans[1:]))
    assert len(lines) == manifest["lines"] == 50000


def test_planted_duplicates_appear_exactly_n_times_close_together(planted):
    lines, manifest = planted
    for entry in (e for e in manifest["anomalies"] if e["kind"] == "duplicate_event"):
        where = [i for i, line in enumerate(lines) if line == entry["key"]]
        assert len(where) == entry["counts"]["occurrences"] in (2, 3)
        assert where[-1] - where[0] <= 10 and re.search(r" ord-[0-9a-f]{6}\b", entry["key"])


def test_planted_burst_silence_and_spike_are_in_the_log(planted):
    lines, manifest = planted
    entry = {e["kind"]: e for e in manifest["anomalies"]}
    inside = lambda e: [line for line in lines if e["start"] <= line[:20] < e["end"]]  # noqa: E731
    spam = entry["spamming_user"]
    assert sum(line.split(" ")[3] == spam["key"] for line in inside(spam)) == 500
    assert sum(line.split(" ")[3] == spam["key"] for line in lines) < 510
    silent = entry["silent_service"]
    assert [line for line in inside(silent) if line.split(" ")[2] == silent["key"]] == []
    assert sum(line.split(" ")[2] == silent["key"] for line in lines) / len(lines) > 0.02
    spike = [line.split(" ")[1] for line in inside(entry["failure_spike"])]
    assert sum(status in ("FAILURE", "ERROR") for status in spike) / len(spike) > 0.15


def test_a_span_under_two_days_holds_every_planted_kind(tmp_path):
    lines, manifest = run(tmp_path, "--seed", "7", "--plant", "--days", "0.5")
    assert len(lines) == manifest["lines"] == 50000 and manifest["span"]["end"] == "2025-07-21T12:00:00Z"
    kinds = Counter(entry["kind"] for entry in manifest["anomalies"])
    assert kinds == {"spamming_user": 1, "failure_spike": 1, "silent_service": 1, "duplicate_event": 4}
    assert all("2025-07-21T06:00:00Z" <= e["start"] <= e["end"] <= manifest["span"]["end"]
               for e in manifest["anomalies"])
    assert max(line[:20] for line in lines) < manifest["span"]["end"]
