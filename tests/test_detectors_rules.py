"""Each detector rule type on small hand-made logs: positive, negative, the exact boundary, shuffled input."""

from __future__ import annotations

import random
from typing import Any

import pytest

from plugins.duplicates import DuplicateEvent
from plugins.error_spike import ErrorSpike
from plugins.flatline import Flatline
from plugins.frequency import Frequency
from plugins.timestamps import TimestampCheck
from plugins.unknown_status import OTHERS, UnknownStatus
from tests.detector_data import at, background, batches, evaluate, rec

NOW = "2026-01-01T00:00:00Z"


def run(rule, lines: list[str], chunk: int | None = None) -> list[dict[str, Any]]:
    if chunk is None:
        return evaluate(rule, batches(lines))
    sizes = [chunk] * (len(lines) // chunk) + ([len(lines) % chunk] if len(lines) % chunk else [])
    return evaluate(rule, batches(lines, sizes=sizes))


def keys(found: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(a["key"], a["window_start"], a["count"]) for a in found]


def same(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anomalies without their samples: shuffling moves lines, so it moves the locations samples point to."""
    return [{k: v for k, v in a.items() if k != "samples"} for a in found]


def shuffled(lines: list[str], seed: int) -> list[str]:
    copy = list(lines)
    random.Random(seed).shuffle(copy)
    return copy


# -- unknown_status -------------------------------------------------------------------------------


def test_unknown_status_reports_each_unknown_status_with_count_times_and_samples():
    lines = background(range(3)) + [rec(0.5, "PENDING"), rec(2.5, "PENDING"), rec(1, "CHARGEBACK")]
    found = run(UnknownStatus("u"), lines)
    assert [(a["key"], a["count"], a["first_seen"], a["last_seen"]) for a in found] == [
        ("CHARGEBACK", 1, at(1), at(1)),
        ("PENDING", 2, at(0.5), at(2.5)),
    ]
    assert found[1]["samples"] == ["a.txt:61", "a.txt:62"]
    assert found[1]["expected"] == "one of SUCCESS, FAILURE, INFO, WARN, ERROR"
    assert found[1]["window_start"] is None


def test_unknown_status_ignores_the_allowed_statuses():
    assert run(UnknownStatus("u"), background(range(3)) + [rec(1, s) for s in ("INFO", "WARN", "ERROR")]) == []


def test_unknown_status_boundary_is_exact_and_case_sensitive():
    rule = UnknownStatus("u", allowed=["SUCCESS", "FAILURE"])
    found = run(rule, [rec(1, "SUCCESS"), rec(2, "Success"), rec(3, "FAILURE"), rec(4, "INFO")])
    assert [a["key"] for a in found] == ["INFO", "Success"]


def test_unknown_status_caps_distinct_statuses_by_name_not_arrival():
    lines = [rec(i, f"S{i:02d}") for i in range(10)]
    for seed in range(3):
        found = run(UnknownStatus("u", allowed=["SUCCESS"], max_statuses=3), shuffled(lines, seed), chunk=2)
        assert [(a["key"], a["count"]) for a in found] == [("S00", 1), ("S01", 1), ("S02", 1), (OTHERS, 7)]


def test_unknown_status_shuffled_input_gives_the_same_anomalies():
    lines = background(range(5)) + [rec(m, "PENDING") for m in (0.3, 2.2, 4.1)]
    expected = same(run(UnknownStatus("u"), lines))
    assert expected[0]["count"] == 3
    for seed in range(3):
        assert same(run(UnknownStatus("u"), shuffled(lines, seed), chunk=17)) == expected


# -- timestamp -------------------------------------------------------------------------------------


def test_timestamp_flags_future_early_and_unparseable():
    lines = background(range(2)) + [
        "2031-01-01T00:00:00Z SUCCESS S u x",
        "1970-01-01T00:00:00.000Z SUCCESS S u x",
        "2025-02-30T00:00:00Z SUCCESS S u x",
        "2025-07-21T25:00:00Z SUCCESS S u x",
    ]
    found = {a["key"]: a for a in run(TimestampCheck("t", now=NOW), lines)}
    assert sorted(found) == ["before_min_time", "future", "unparseable"]
    assert (found["future"]["count"], found["future"]["observed"], found["future"]["samples"]) == (
        1, "2031-01-01T00:00:00Z", ["a.txt:41"])
    assert (found["before_min_time"]["count"], found["before_min_time"]["threshold"]) == (1, "2000-01-01T00:00:00Z")
    assert found["unparseable"]["count"] == 2


def test_timestamp_is_quiet_on_plausible_timestamps():
    assert run(TimestampCheck("t", now=NOW, max_lateness="1m"), background(range(5))) == []


def test_timestamp_boundaries_are_exact():
    rule = TimestampCheck("t", now=NOW, max_future="5m", min_time="2000-01-01", max_lateness="60s")
    lines = [
        "2026-01-01T00:05:00Z SUCCESS S u at-the-limit",
        "2026-01-01T00:05:00.000001Z SUCCESS S u one-microsecond-over",
        "2000-01-01T00:00:00Z SUCCESS S u at-min-time",
        "1999-12-31T23:59:59.999999Z SUCCESS S u one-microsecond-before",
    ]
    found = {a["key"]: a for a in run(TimestampCheck("t", now=NOW, max_future="5m", min_time="2000-01-01"), lines)}
    assert sorted(found) == ["before_min_time", "future"]
    assert (found["future"]["count"], found["future"]["samples"]) == (1, ["a.txt:2"])
    assert (found["before_min_time"]["count"], found["before_min_time"]["samples"]) == (1, ["a.txt:4"])
    # 60 s behind the newest earlier line is not late; 60.6 s is.
    [late] = run(rule, [rec(10), rec(9), rec(8.99)])
    assert (late["key"], late["count"], late["samples"], late["observed"]) == ("late", 1, ["a.txt:3"], 60.6)


def test_timestamp_lateness_is_judged_in_line_order_across_chunks_and_files():
    lines = [rec(m) for m in (0, 1, 2, 30, 3, 31, 4, 32)]  # 3 and 4 arrive after 30: late
    rule = TimestampCheck("t", now=NOW, max_lateness="10m")
    for chunk in (1, 2, 3, 8):
        [late] = run(rule, lines, chunk=chunk)
        assert (late["key"], late["count"], late["samples"]) == ("late", 2, ["a.txt:5", "a.txt:7"])
    # Another file starts afresh: its first line is not late against the first file.
    both = batches(lines) + batches([rec(1), rec(2)], path="b.txt")
    assert evaluate(rule, both)[0]["count"] == 2


def test_timestamp_shuffled_input_gives_the_same_future_and_early_counts():
    lines = background(range(3)) + ["2031-01-01T00:00:00Z SUCCESS S u x", "1970-01-01T00:00:00Z INFO S u x"] * 3
    expected = [(a["key"], a["count"], a["first_seen"]) for a in run(TimestampCheck("t", now=NOW), lines)]
    for seed in range(3):
        found = run(TimestampCheck("t", now=NOW), shuffled(lines, seed), chunk=13)
        assert [(a["key"], a["count"], a["first_seen"]) for a in found] == expected


# -- error_spike -----------------------------------------------------------------------------------


def spike_lines(extra: int, minute: int = 70) -> list[str]:
    """Two hours at 1 failure a minute (10 per window), plus ``extra`` errors in the window at ``minute``."""
    return background(range(120)) + [rec(minute + i / (extra + 1), "ERROR", user=f"u{i}") for i in range(extra)]


def test_error_spike_flags_a_burst_of_failures():
    [spike] = run(ErrorSpike("s"), spike_lines(40))
    assert (spike["key"], spike["window_start"], spike["window_end"]) == ("all", at(70), at(80))
    assert (spike["count"], spike["expected"], spike["threshold"]) == (50, 10.0, 30.0)
    assert spike["detail"]["triggered_by"] == ["count", "rate"]
    assert spike["samples"] == sorted(spike["samples"])[:5] and len(spike["samples"]) == 5


def test_error_spike_ignores_steady_failures_and_a_small_bump():
    assert run(ErrorSpike("s"), background(range(120))) == []
    assert run(ErrorSpike("s"), spike_lines(5)) == []


def test_error_spike_boundary_is_at_least_spike_height_times_baseline():
    # Count only: baseline 10 a window, spike_height 3 -> 30 failures flag, 29 do not.
    rule = ErrorSpike("s", measure="count")
    assert keys(run(rule, spike_lines(20))) == [("all", at(70), 30)]
    assert run(rule, spike_lines(19)) == []
    # min_count (ElastAlert's threshold_cur) is inclusive too.
    assert keys(run(ErrorSpike("s", measure="count", min_count=30), spike_lines(20))) == [("all", at(70), 30)]
    assert run(ErrorSpike("s", measure="count", min_count=31), spike_lines(20)) == []


def test_error_spike_waits_until_the_baseline_has_filled_once():
    # The spike is in the 5th window: fewer than 6 windows lie before it, as in ElastAlert.
    assert run(ErrorSpike("s"), spike_lines(40, minute=40)) == []
    assert keys(run(ErrorSpike("s", baseline_windows=4), spike_lines(40, minute=40))) == [("all", at(40), 50)]


def test_error_spike_rate_and_down_spikes():
    # The failure rate triples while the count does not: more traffic would hide it from a count.
    quiet = background(range(60)) + background(range(60, 70), per_minute=4, fail_every=2)
    [rate] = run(ErrorSpike("s", min_count=5), quiet)
    assert rate["detail"]["triggered_by"] == ["rate"] and rate["window_start"] == at(60)
    # A dip in failures, judged once the window is complete.
    dip = background(range(60)) + background(range(60, 80), fail_every=0)
    found = run(ErrorSpike("s", spike_type="down", min_count=0), dip)
    assert [a["window_start"] for a in found] == [at(60)] and found[0]["detail"]["direction"] == "down"


def test_error_spike_by_service_keys_each_service():
    found = run(ErrorSpike("s", by="service"), spike_lines(40))
    assert keys(found) == [("PaymentService", at(70), 50)]  # every background failure is PaymentService's


def test_error_spike_shuffled_input_gives_the_same_spike():
    lines = spike_lines(40)
    expected = run(ErrorSpike("s"), lines)
    for seed in range(3):
        assert same(run(ErrorSpike("s"), shuffled(lines, seed), chunk=500)) == same(expected)


# -- frequency -------------------------------------------------------------------------------------


def spam(count: int, minute: float = 40, user: str = "spammer") -> list[str]:
    return [rec(minute + i * 10 / count, user=user, message=f"request {i}") for i in range(count)]


def test_frequency_flags_a_user_with_too_many_records_in_a_window():
    [busy] = run(Frequency("f"), background(range(60)) + spam(400))
    assert (busy["key"], busy["window_start"], busy["window_end"], busy["count"]) == ("spammer", at(40), at(50), 400)
    assert (busy["observed"], busy["threshold"]) == (400, 300)
    assert busy["detail"]["triggered_by"] == ["count", "share"]


def test_frequency_ignores_ordinary_users():
    assert run(Frequency("f"), background(range(60), per_minute=60)) == []


def test_frequency_boundaries_are_inclusive():
    rule = Frequency("f", max_share=None)
    assert keys(run(rule, background(range(60)) + spam(300))) == [("spammer", at(40), 300)]
    assert run(rule, background(range(60)) + spam(299)) == []
    # Share: 50 of 250 records is exactly 20 %.
    share = Frequency("f", num_events=None, max_share=0.2, min_count=50)
    found = run(share, background(range(40, 50)) + spam(50))
    assert [(a["key"], a["observed"], a["detail"]["triggered_by"]) for a in found] == [("spammer", 0.2, ["share"])]
    assert run(share, background(range(40, 50)) + spam(49)) == []


def test_frequency_windows_are_epoch_aligned_buckets():
    # 400 records over 10 minutes from minute 45 fall 200 + 200 into two buckets.
    found = run(Frequency("f", num_events=200, max_share=None), background(range(60)) + spam(400, minute=45))
    assert keys(found) == [("spammer", at(40), 200), ("spammer", at(50), 200)]


def test_frequency_by_another_field():
    found = run(Frequency("f", field="service", num_events=100, max_share=None), background(range(20)))
    assert keys(found) == [("NotificationService", at(0), 100), ("NotificationService", at(10), 100),
                           ("PaymentService", at(0), 100), ("PaymentService", at(10), 100)]


def test_frequency_shuffled_input_gives_the_same_anomalies():
    lines = background(range(50)) + spam(400)
    expected = run(Frequency("f"), lines)
    for seed in range(3):
        assert same(run(Frequency("f"), shuffled(lines, seed), chunk=300)) == same(expected)


# -- duplicate_event --------------------------------------------------------------------------------


def test_duplicate_event_reports_copies_and_where_each_is():
    line = rec(7, message="paid order 42")
    lines = background(range(10))
    lines[20:20] = [line]
    lines[50:50] = [line]
    lines.append(line)
    [dup] = run(DuplicateEvent("d"), lines)
    assert (dup["count"], dup["samples"], dup["window_start"], dup["first_seen"]) == (
        3, ["a.txt:21", "a.txt:51", "a.txt:203"], at(7), at(7))


def test_duplicate_event_same_instant_in_another_zone_is_the_same_event():
    lines = [f"{at(3)} SUCCESS S u paid", f"{at(3, offset='+02:00')} SUCCESS S u paid"]
    assert [a["count"] for a in run(DuplicateEvent("d"), lines)] == [2]


def test_duplicate_event_is_quiet_when_any_field_differs():
    base = rec(3, message="paid")
    variants = [base, base.replace("SUCCESS", "FAILURE"), base.replace("PaymentService", "Wallet"),
                base.replace("user1", "user2"), base + ".", f"{at(3 + 1e-6 / 60)} SUCCESS PaymentService user1 paid"]
    assert run(DuplicateEvent("d"), background(range(5)) + variants) == []


def test_duplicate_event_boundary_two_copies_are_enough():
    found = run(DuplicateEvent("d"), [rec(1, message="x")] * 2 + [rec(2, message="y")])
    assert [(a["count"], a["observed"], a["threshold"]) for a in found] == [(2, 2, 1)]


def test_duplicate_event_samples_are_the_five_smallest_locations():
    lines = [rec(1, message="x")] * 7
    [dup] = run(DuplicateEvent("d"), shuffled(lines, 0), chunk=2)
    assert dup["count"] == 7 and dup["samples"] == [f"a.txt:{i}" for i in range(1, 6)]


def test_duplicate_event_shuffled_input_gives_the_same_anomalies():
    lines = background(range(30)) + [rec(7, message="paid")] * 2 + [rec(20, "INFO", message="sent")] * 3
    expected = same(run(DuplicateEvent("d"), lines))
    assert sorted(a["count"] for a in expected) == [2, 3]  # anomalies are ordered by hash
    for seed in range(3):
        assert same(run(DuplicateEvent("d"), shuffled(lines, seed), chunk=100)) == expected


# -- flatline ---------------------------------------------------------------------------------------


def quiet_lines(remaining: int, minutes: range = range(60, 70)) -> list[str]:
    """Two hours where NotificationService (10 a minute) keeps only ``remaining`` records in ``minutes``."""
    lines = [line for line in background(range(120))
             if not ("NotificationService" in line and minutes.start <= _minute_of(line) < minutes.stop)]
    return lines + [rec(minutes.start + i / 10, service="NotificationService", user="u9") for i in range(remaining)]


def _minute_of(line: str) -> float:
    return int(line[11:13]) * 60 + int(line[14:16]) + int(line[17:19]) / 60


def test_flatline_flags_a_silent_service():
    [quiet] = run(Flatline("q"), quiet_lines(0))
    assert (quiet["key"], quiet["window_start"], quiet["window_end"], quiet["count"]) == (
        "NotificationService", at(60), at(70), 0)
    assert (quiet["expected"], quiet["threshold"], quiet["samples"]) == (100.0, 10.0, [])


def test_flatline_ignores_steady_services_and_services_without_traffic_before():
    assert run(Flatline("q"), background(range(120))) == []
    # Quiet from the start: it never had traffic to lose.
    late_starter = background(range(120), services=("PaymentService",)) + [
        rec(m, service="NewService") for m in range(100, 120) for _ in range(30)]
    assert run(Flatline("q"), late_starter) == []


def test_flatline_boundary_is_strictly_below_the_fraction():
    # Baseline 100 a window, fraction 0.1: 9 records flag, 10 do not.
    assert keys(run(Flatline("q"), quiet_lines(9))) == [("NotificationService", at(60), 9)]
    assert run(Flatline("q"), quiet_lines(10)) == []
    # An absolute threshold, and min_baseline inclusive.
    assert keys(run(Flatline("q", threshold=50, fraction=None, min_baseline=100), quiet_lines(49))) == [
        ("NotificationService", at(60), 49)]
    assert run(Flatline("q", threshold=50, fraction=None, min_baseline=100.5), quiet_lines(0)) == []


def test_flatline_does_not_judge_the_window_still_filling_up():
    lines = background(range(70)) + [rec(70.5, service="PaymentService")]
    assert run(Flatline("q"), lines) == []


def test_flatline_shuffled_input_gives_the_same_anomalies():
    lines = quiet_lines(0, range(60, 80))
    expected = run(Flatline("q"), lines)
    assert [a["window_start"] for a in expected] == [at(60), at(70)]
    for seed in range(3):
        assert same(run(Flatline("q"), shuffled(lines, seed), chunk=400)) == same(expected)


@pytest.mark.parametrize("rule", [Flatline("q"), ErrorSpike("s"), Frequency("f"), DuplicateEvent("d")])
def test_windowed_detectors_ignore_implausible_timestamps(rule):
    # A record from 2099 must not open windows nor move the watermark; one from 1970 neither.
    lines = background(range(70)) + ["2099-01-01T00:00:00Z SUCCESS PaymentService u x"] * 150
    lines += ["1970-01-01T00:00:00Z FAILURE PaymentService u x"] * 150
    assert run(rule, lines) == run(rule, background(range(70)))
