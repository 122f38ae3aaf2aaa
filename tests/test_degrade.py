"""Detector state beyond its share of limits.memory_mb thins in a documented way, the same whatever the split."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, Workspace, run_plugged, without_run

#: A dense log: 200k lines in about 20 minutes of event time (170 records a second), with
#: duplicated lines planted in it.
LINES, DAYS = 200_000, 0.015
#: A cap small enough that busy-users and duplicate-events cannot hold those windows whole.
SMALL_MB = 220


def generated(folder, days: float) -> bytes:
    path = folder / "app.log"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "generate.py"), "--lines", str(LINES), "--days", str(days),
         "--out", str(path), "--manifest", str(folder / "manifest.json"), "--seed", "3"],
        check=True, capture_output=True, timeout=120,
    )
    return path.read_bytes()


@pytest.fixture(scope="module")
def dense_log(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return generated(tmp_path_factory.mktemp("dense"), DAYS)


def shipped(root) -> Workspace:
    """A workspace of its own at ``root``, with the shipped rules and settings."""
    shutil.copytree(REPO / "rules", root / "rules")
    shutil.copy(REPO / "settings.yaml", root / "settings.yaml")
    return Workspace(root)


def counted(workspace: Workspace, log: bytes, settings: str) -> tuple[dict, dict]:
    workspace.write("dense.log", log)
    workspace.configure(settings)
    done = workspace.run("--reset")
    assert done.returncode == 0, done.stderr
    anomalies = json.loads((workspace.output / "anomalies.json").read_text(encoding="utf-8"))
    return workspace.summary(), anomalies


def test_dense_windows_thin_the_detectors_state_within_its_share_and_say_so(workspace, dense_log):
    summary, _ = counted(workspace, dense_log, f"limits: {{memory_mb: {SMALL_MB}}}\n")
    for rule in ("duplicate-events", "busy-users"):
        degraded = summary["rules"][rule]["degraded"]
        assert degraded is not None and "thinned to 1 in" in degraded, rule
        # The level is aimed at from the records the windows held, at the rows' own bytes; the state
        # measured after a seal also holds what came since the one before, not thinned yet, and
        # Polars' overheads: it stays within twice its share (README, "Configuration").
        state = summary["run"]["rule_state"][rule]
        assert state["peak_bytes"] <= 2 * state["limit_bytes"], rule
    assert summary["rules"]["error-spikes"]["degraded"] is None  # a state per service: small whatever the density


def test_the_console_summary_names_a_thinned_rule(workspace, dense_log):
    workspace.write("dense.log", dense_log)
    workspace.configure(f"limits: {{memory_mb: {SMALL_MB}}}\n")
    done = workspace.run("--reset")
    assert done.returncode == 0, done.stderr
    assert "duplicate-events: windows denser than its share of limits.memory_mb holds: records thinned to 1 in" \
        in done.stdout


def test_under_the_default_cap_a_log_of_usual_density_is_judged_whole(workspace, tmp_path):
    summary, _ = counted(workspace, generated(tmp_path, 1.0), "")  # 200k lines in a day
    assert all(rule["degraded"] is None for rule in summary["rules"].values())


def many_services(services: int, lines: int, burst_every: int = 4) -> str:
    """Four days of traffic over ``services``, with failures bursting on day 4 in 1 service of ``burst_every``."""
    out, state = [], 5
    for i in range(lines):
        at = i * 345_600 // lines
        day, sec = divmod(at, 86_400)
        service = i % services
        state = (state * 1_103_515_245 + 12_345) % 2**31  # a fixed sequence: the same log every run
        chance = state / 2**31
        burst = day == 3 and 30_000 <= sec < 33_000 and service % burst_every == 3
        status = "FAILURE" if (burst and chance < 0.9) or chance < 0.05 else "SUCCESS"
        out.append(f"2025-07-{22 + day:02d}T{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}Z {status} "
                   f"Svc{service:04d} user{i % 97} paid\n")
    return "".join(out)


@pytest.fixture(scope="module")
def services_log() -> str:
    return many_services(120, 1_200_000)


def incidents(anomalies: dict, rule: str) -> dict[str, tuple]:
    return {json.dumps(a["subject"], sort_keys=True): (a["window_start"], a["window_end"], a["score"], a["count"])
            for a in anomalies["anomalies"] if a["rule"] == rule}


def test_more_services_than_a_seasonal_share_holds_thin_to_the_same_verdicts_for_those_kept(tmp_path, services_log):
    # 120 services over four days, a burst of failures in 30 of them. Under a cap whose shares
    # are 1 MiB, a four-day history for each service does not fit: error-spikes and silent-services
    # judge 1 in 2^k services, and stay within their shares. (They had no degraded mode: 20,000
    # services took 43 s and 827 MB at a 500 MB cap.)
    results = {}
    for cap in (200, 4000):
        space = shipped(tmp_path / str(cap))
        rules = space.root / "rules" / "anomalies.yaml"  # every incident listed, not the 20 that rank first
        rules.write_text(rules.read_text(encoding="utf-8").replace("max_incidents: 20", "max_incidents: 1000"),
                         encoding="utf-8")
        results[cap] = counted(space, services_log.encode(), f"limits: {{memory_mb: {cap}}}\n")
    (small, small_anomalies), (big, big_anomalies) = results[200], results[4000]
    for rule in ("error-spikes", "silent-services"):
        degraded = small["rules"][rule]["degraded"]
        assert degraded is not None and "values of service thinned to 1 in" in degraded, rule
        state = small["run"]["rule_state"][rule]
        assert state["peak_bytes"] <= state["limit_bytes"], rule
        assert big["rules"][rule]["degraded"] is None
    assert "the others only within key 'all'" in small["rules"]["error-spikes"]["degraded"]
    thinned, whole = incidents(small_anomalies, "error-spikes"), incidents(big_anomalies, "error-spikes")
    assert len(whole) >= 30 and 0 < len(thinned) < len(whole)
    # A service kept is judged on its own windows alone: its incident is the one it has unthinned.
    assert all(whole[subject] == found for subject, found in thinned.items())
    for key in ("payment_statuses", "top_services", "top_users", "timeline", "peak_hours", "totals"):
        assert small[key] == big[key], key  # counting rules are exact either way


def test_the_records_of_services_thinned_out_still_count_in_key_all(tmp_path):
    # A burst spread thin over 1 service in 10: too few failures in each to flag it, enough in all.
    # With most services thinned out, key 'all' must still see every record and flag the burst.
    log = many_services(400, 1_200_000, burst_every=10).encode()
    found = {}
    for cap in (200, 4000):
        space = shipped(tmp_path / str(cap))
        summary, anomalies = counted(space, log, f"limits: {{memory_mb: {cap}}}\n")
        found[cap] = (summary["rules"]["error-spikes"]["degraded"], incidents(anomalies, "error-spikes"))
    (degraded, thinned), (_, whole) = found[200], found[4000]
    assert degraded is not None
    overall = json.dumps({"records": "all", "statuses": ["FAILURE", "ERROR"]}, sort_keys=True)
    assert overall in whole and thinned.get(overall) == whole[overall]


@pytest.mark.parametrize("split", [
    "chunk_bytes: 262144\nworkers: 1\n",
    "chunk_bytes: 1048576\nworkers: 2\nqueue_size: 3\n",
])
@pytest.mark.parametrize(("log", "memory_mb", "thinned"), [
    ("dense_log", SMALL_MB, "duplicate-events"),  # records thinned in dense windows
    ("services_log", 200, "error-spikes"),  # services thinned, their records summed into key all
])
def test_how_a_state_thins_does_not_depend_on_how_the_input_was_split(tmp_path, request, log, memory_mb, thinned,
                                                                      split):
    text = request.getfixturevalue(log)
    text = text.encode() if isinstance(text, str) else text
    results = []
    for name, settings in (("a", "chunk_bytes: 2097152\nworkers: 2\n"), ("b", split)):
        results.append(counted(shipped(tmp_path / name), text, f"limits: {{memory_mb: {memory_mb}}}\n{settings}"))
    (first, first_anomalies), (second, second_anomalies) = results
    assert first["rules"][thinned]["degraded"] is not None
    assert without_run(first) == without_run(second)
    assert first_anomalies["anomalies"] == second_anomalies["anomalies"]


def test_a_state_past_twice_its_share_is_warned_about_once(caplog):
    # A plugin's rule may have no degraded mode: its state past twice its share is said, once per process.
    from types import SimpleNamespace

    from core import Rule, output

    class Hoard(Rule):
        def state_size(self) -> int:
            return 5 * 2**20

    hoard, small = Hoard("hoard"), Hoard("small")  # names warned of once per process: unique to this test
    hoard.limit_state(2**20)
    small.limit_state(10 * 2**20)
    state = SimpleNamespace(rules={"hoard": hoard, "small": small})
    with caplog.at_level("WARNING"):
        first = output.state_memory(state)
        output.state_memory(state)
    assert first["hoard"] == {"bytes": 5 * 2**20, "peak_bytes": 5 * 2**20, "limit_bytes": 2**20}
    warned = [r.getMessage() for r in caplog.records if "its state reached" in r.getMessage()]
    assert len(warned) == 1 and "rule 'hoard'" in warned[0] and "5 times its 1.0 MB share" in warned[0]


@pytest.mark.parametrize("message", ["paid order ord-48213", "User login successful"])
def test_a_line_logged_a_million_times_is_one_record_held_and_its_duplicate_is_found(workspace, message):
    # A stuck retry loop: one line a million times in one second. Its copies fold into one row, so
    # the window is not thinned and the repeat is reported. Thinning counted records, not rows:
    # the window was thinned to 1 in 32 here, and this line was not among the records kept.
    line = f"2025-07-22T12:00:00Z FAILURE PaymentService user42 {message}\n"
    others = "".join(f"2025-07-22T12:{i // 60 % 60:02d}:{i % 60:02d}Z SUCCESS CartService user{i} ok\n"
                      for i in range(3000))
    workspace.write("loop.log", others + line * 1_000_000)
    workspace.configure("limits: {memory_mb: 200}\n")
    done = workspace.run("--reset")
    assert done.returncode == 0, done.stderr
    summary = workspace.summary()
    assert summary["rules"]["duplicate-events"]["degraded"] is None
    anomalies = json.loads((workspace.output / "anomalies.json").read_text(encoding="utf-8"))
    found = [a for a in anomalies["anomalies"] if a["rule"] == "duplicate-events"]
    assert [a["count"] for a in found] == [1_000_000]
    assert found[0]["subject"]["message"] == message


@pytest.mark.parametrize("rows", [20_000, 300_000, 2_000_000])
def test_a_windows_distinct_rows_are_estimated_closely_and_the_same_however_they_were_split(rows):
    # Thinning reads a window's distinct rows from a sketch of it: within the few per cent of a
    # HyperLogLog of 256 registers fed 1 row in 16, and a function of the set of rows alone.
    import numpy as np
    import polars as pl

    from plugins.duplicates import DuplicateEvent

    hashes = np.random.default_rng(rows).integers(0, 2**64 - 1, rows, dtype=np.uint64)
    frame = pl.DataFrame({"hash": np.concatenate([hashes, hashes[: rows // 3]]),  # a third of the rows twice
                          "window": np.full(rows + rows // 3, 7, dtype=np.int64)})
    whole = DuplicateEvent("whole")
    whole._count_rows(frame)
    assert abs(whole._records[7] / whole.bytes_per_record / rows - 1) < 0.25  # held as the rows' bytes
    merged = DuplicateEvent("merged")
    for part in (frame.slice(0, rows // 2), frame.slice(rows // 2, rows // 5), frame.slice(rows // 2 + rows // 5)):
        piece = DuplicateEvent("part")
        piece._count_rows(part)
        merged.merge(piece)
    assert merged._records == whole._records
    assert (merged._row_sketches[7] == whole._row_sketches[7]).all()


def test_a_log_sparse_over_years_is_judged_in_a_few_calls_with_its_duplicate_found(workspace, pm, monkeypatch):
    # 120,000 records, one every 13 minutes over three years: tens of thousands of half-hour bands.
    # A seal judged them one band at a time, each call passing over every band again: 1M such
    # records over ten years took minutes. Runs of bands are now judged together.
    from plugins.duplicates import DuplicateEvent

    start = 1_700_000_000
    lines = [f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(start + i * 780))} SUCCESS Svc{i % 7} u{i} "
             f"paid order ord-{i:06d}\n" for i in range(120_000)]
    lines.insert(60_000, lines[59_999])  # one duplicate, in the middle
    workspace.write("years.log", "".join(lines))
    workspace.configure("rules: [duplicate-events]\nchunk_bytes: 1048576\n")
    calls = []
    judge = DuplicateEvent.verdicts
    monkeypatch.setattr(DuplicateEvent, "verdicts", lambda self, *args: calls.append(1) or judge(self, *args))
    run_plugged(workspace.settings, pm, {})
    anomalies = json.loads((workspace.output / "anomalies.json").read_text(encoding="utf-8"))
    assert len(calls) < 200, len(calls)  # a call per band with records: about 60,000
    assert [a["count"] for a in anomalies["anomalies"] if a["rule"] == "duplicate-events"] == [2]


def test_a_batch_spanning_years_is_judged_from_its_tables_and_only_its_kept_windows_split(workspace, pm,
                                                                                          monkeypatch):
    # Every line a new user and service, 6,000 of them over a year: a 256 KiB chunk holds four
    # months, thousands of half-hour bands. A seal split every batch it was given into its
    # bands before judging (a band's tables cost ~2 KB of objects however few rows they hold:
    # 1M such lines over ten years peaked at 497 MB under the 500 MB cap). Only the windows a
    # seal keeps are split now; the rest are judged straight from the batch's tables, with the
    # same verdicts as when every batch was split at once.
    import plugins.windows as windows

    rng = random.Random(11)
    start = 1_600_000_000
    times = sorted(rng.randrange(0, 365 * 86_400) for _ in range(6_000))
    lines = [f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(start + at))} "
             f"{rng.choice(['SUCCESS', 'SUCCESS', 'ERROR'])} Svc{i} u{i} paid order ord-{i:06d}\n"
             for i, at in enumerate(times)]
    lines[3_001:3_001] = [lines[3_000]] * 3  # a duplicate, and a burst for the per-window rules
    workspace.write("years.log", "".join(lines))
    workspace.configure("chunk_bytes: 262144\n")
    widest = []
    split = windows.WindowedDetector._split
    monkeypatch.setattr(windows.WindowedDetector, "_split",
                        lambda self, data: widest.append(len(found := split(self, data))) or found)
    run_plugged(workspace.settings, pm, {})
    results = [(workspace.summary(), json.loads((workspace.output / "anomalies.json").read_text(encoding="utf-8")))]
    assert max(widest) < 200, max(widest)  # a seal's kept windows (a day and a quarter), not months of bands

    monkeypatch.setattr(windows, "SPLIT_BANDS", 10**9)  # every batch split into its bands as it comes
    widest.clear()
    run_plugged(workspace.settings, pm, {}, reset=True)
    results.append((workspace.summary(), json.loads((workspace.output / "anomalies.json").read_text(encoding="utf-8"))))
    assert max(widest) > 1000  # the check above would see the eager split
    assert without_run(results[0][0]) == without_run(results[1][0])
    assert results[0][1]["anomalies"] == results[1][1]["anomalies"]
    assert any(a["rule"] == "duplicate-events" for a in results[0][1]["anomalies"])


def test_long_user_names_weigh_in_how_busy_users_thins(workspace):
    # 6,000 users of 3 KB in an hour and a half: 18 MB of names against busy-users' 2 MB share at
    # this cap. Counted as records (48 bytes each) they fit, and its state held 7 times its share;
    # each record now also weighs its value's bytes past 12.
    lines = "".join(f"2025-07-22T12:{i // 100 % 60:02d}:{i % 60:02d}Z SUCCESS Svc u{i:05d}{'x' * 3000} paid\n"
                    .replace("T12:", f"T{12 + i // 6000:02d}:") for i in range(9000))
    workspace.write("long.log", lines)
    workspace.configure("limits: {memory_mb: 200}\n")
    done = workspace.run("--reset")
    assert done.returncode == 0, done.stderr
    summary = workspace.summary()
    assert "user values thinned to 1 in" in summary["rules"]["busy-users"]["degraded"]
    state = summary["run"]["rule_state"]["busy-users"]
    assert state["peak_bytes"] <= 2 * state["limit_bytes"]


def test_users_thinned_by_silent_users_give_the_same_verdicts_whatever_the_split(tmp_path):
    # 3,300 users (one in ten a name of 100 to 3,000 bytes) over 3 days, shuffled within 20-minute
    # blocks, judged per user by a flatline rule. Its level rises while a band holds many partial
    # states' parts; a merge that folded them kept the newcomer's rows of users no longer kept,
    # and 256 KiB chunks gave other incidents than 4 MiB ones (helper-24's review, reproduced).
    rng = random.Random(3)
    rows = []
    for i in range(648_000):
        at = 1_735_689_600 + i * 60 // 150 + rng.randint(0, 3)
        user = f"user{rng.randint(1, 400)}" if rng.random() < 0.9 else "u" + "x" * rng.randint(100, 3000)
        rows.append((at, f"{rng.choice(['SUCCESS'] * 6 + ['ERROR'])} PaymentService {user} paid"))
        if rng.random() < 0.3:  # a third of the lines twice, and a hot user's line 20 times every 5 minutes
            rows.append(rows[-1])
        if i % 751 == 0:
            rows += [(at, "FAILURE PaymentService user42 declined")] * 20
    blocks: dict[int, list] = {}
    for row in rows:
        blocks.setdefault(row[0] // 1200, []).append(row)
    text = []
    for block in sorted(blocks):
        rng.shuffle(blocks[block])
        text += [f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(at))} {rest}\n" for at, rest in blocks[block]]
    third = len(text) // 3
    files = ["".join(text[:third]), "".join(text[third:2 * third]), "".join(text[2 * third:])]
    results = []
    for name, settings in (("a", "chunk_bytes: 262144\nworkers: 1\n"), ("b", "chunk_bytes: 4194304\nworkers: 2\n")):
        space = shipped(tmp_path / name)
        (space.root / "rules" / "users.yaml").write_text(
            "- name: silent-users\n  type: flatline\n  field: user\n", encoding="utf-8")
        for number, part in enumerate(files[:2]):
            space.write(f"q{number}.log", part.encode())
        settings = f"limits: {{memory_mb: 200}}\nrules: [silent-users]\n{settings}"
        results.append(counted(space, files[2].encode(), settings))
    (first, first_anomalies), (second, second_anomalies) = results
    assert first["rules"]["silent-users"]["degraded"] is not None
    assert first_anomalies["anomalies"] == second_anomalies["anomalies"]
