"""Check bench/generate.py: exact size, determinism, and a manifest that matches the file (per bench/reference.py)."""

import json
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import load_bench

ROOT = Path(__file__).resolve().parents[1]
gen, ref = load_bench("generate"), load_bench("reference")


def run(tmp_path, *args, name="log.txt"):
    """Run the generator with args; return (file bytes, manifest)."""
    out = tmp_path / name
    gen.main(["--out", str(out), *args])
    return out.read_bytes(), json.loads(Path(str(out) + ".manifest.json").read_text())


def records(data):
    """Every record of a generated file, through the reference classifier."""
    pieces = data.split(b"\n")
    pieces = pieces[:-1] if pieces[-1] == b"" else pieces
    return [value for kind, value in map(ref.classify, pieces) if kind == "record"]


def when(text):
    """A manifest UTC ISO timestamp as a datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A 20,000-line day with anomalies and 5% oddities."""
    return run(tmp_path_factory.mktemp("gen"), "--lines", "20000", "--days", "1", "--bad-rate", "0.05",
               "--long-every", "7000", "--seed", "3")


def test_exact_line_count(sample):
    data, manifest = sample
    assert data.count(b"\n") == manifest["lines"] == 20000 and data.endswith(b"\n")


def test_same_arguments_same_bytes(tmp_path):
    first, _ = run(tmp_path, "--lines", "3000", "--days", "1", name="a.txt")
    second, _ = run(tmp_path, "--lines", "3000", "--days", "1", name="b.txt")
    assert first == second


def test_no_final_newline(tmp_path):
    data, _ = run(tmp_path, "--lines", "3000", "--days", "1", "--no-final-newline")
    assert not data.endswith(b"\n") and data.count(b"\n") == 2999


def test_clean_mode_has_only_records(tmp_path):
    data, manifest = run(tmp_path, "--lines", "5000", "--days", "1", "--no-bad", "--no-anomalies")
    assert len(records(data)) == 5000 and manifest["anomalies"] == [] and manifest["oddities"] == {}


def test_every_oddity_kind_appears_with_enough_bad_lines(sample):
    assert set(sample[1]["oddities"]) == set(gen.ODDITIES)


def test_long_lines_are_too_long(sample):
    data, manifest = sample
    too_long = [raw for raw in data.split(b"\n") if ref.classify(raw) == ("malformed", "too_long")]
    assert len(too_long) == manifest["long_lines"] == 3


@pytest.mark.parametrize("kind", sorted(gen.ODDITIES))
def test_oddity_class(kind):
    clean = "2025-07-22T12:34:56Z SUCCESS PaymentService user12345 Payment of 25.79 USD authorized"
    made = gen.ODDITIES[kind][1](gen.random.Random(0), 1753187696, clean.split(" ", 4))
    expected = kind.split("_")[0] if kind.startswith(("blank", "record")) else "malformed"
    assert ref.classify(made.encode("utf-8", "surrogateescape"))[0] == expected


def test_manifest_matches_file(sample):
    data, manifest = sample
    recs = records(data)
    for entry in manifest["anomalies"]:
        start, end, key = when(entry["start"]), when(entry["end"]), entry["key"]
        if entry["kind"] == "spamming_user":
            got = sum(1 for r in recs if r[3] == key and start <= r[0] < end)
            assert got == entry["counts"]["records"]
        elif entry["kind"] == "failure_spike":
            got = sum(1 for r in recs if r[2] == key and r[1] in ("FAILURE", "ERROR") and start <= r[0] < end)
            assert got >= entry["counts"]["failure_error_planted"]
        elif entry["kind"] == "unknown_status":
            assert sum(1 for r in recs if r[1] == key) == entry["counts"]["records"]
        elif entry["kind"] == "silent_service":
            assert not [r for r in recs if r[2] == key and start <= r[0] < end]
            assert [r for r in recs if r[2] == key and r[0] >= end]  # it comes back
        elif entry["kind"] == "duplicate_event":
            assert data.split(b"\n").count(key.encode()) == entry["counts"]["occurrences"]
    planted = {entry["kind"]: entry["counts"] for entry in manifest["anomalies"]}
    assert sum(1 for r in recs if r[0].year == 1970) == planted["epoch_timestamp"]["records"]
    assert sum(1 for r in recs if r[0].year > 2026) == planted["future_timestamp"]["records"]


def test_only_planted_duplicates(sample):
    data, manifest = sample
    repeated = {rec for rec, n in Counter(records(data)).items() if n > 1}
    planted = [e for e in manifest["anomalies"] if e["kind"] == "duplicate_event"]
    assert len(repeated) == len(planted) >= 3


def test_seen_users_sets_the_population_for_that_many_distinct_users(tmp_path):
    data, manifest = run(tmp_path, "--lines", "60000", "--days", "1", "--seen-users", "30000")
    seen = len({r[3] for r in records(data)})
    assert manifest["distinct_users_population"] > 30000 and abs(seen / 30000 - 1) < 0.03


def test_a_fraction_of_a_day_holds_the_lines_and_the_anomalies(tmp_path):
    data, manifest = run(tmp_path, "--lines", "30000", "--days", "0.25")
    assert data.count(b"\n") == 30000 and manifest["span"]["end"] == "2025-07-21T06:00:00Z"
    start, end = when(manifest["span"]["start"]), when(manifest["span"]["end"])
    windows = [e for e in manifest["anomalies"] if e["kind"] not in ("future_timestamp", "epoch_timestamp")]
    assert len(windows) >= 5 and all(start <= when(e["start"]) <= when(e["end"]) <= end for e in windows)
    assert all(start <= r[0] < end for r in records(data) if r[0].year == 2025)


def test_message_bytes_lengthens_messages_only(tmp_path):
    plain, _ = run(tmp_path, "--lines", "20000", "--days", "1", "--no-bad", name="a.txt")
    long, manifest = run(tmp_path, "--lines", "20000", "--days", "1", "--no-bad", "--message-bytes", "240",
                         name="b.txt")
    assert [r[:4] for r in records(plain)] == [r[:4] for r in records(long)]
    assert 220 < sum(len(r[4]) for r in records(long)) / 20000 < 260 and manifest["args"]["message_bytes"] == 240


def test_manifest_args_leave_out_later_options_at_their_defaults(sample):
    assert not {"seen_users", "user_tail", "message_bytes"} & set(sample[1]["args"])
