"""Rule parameters a run cannot use are configuration errors naming the rule file, rule and field, at --check too."""

from __future__ import annotations

import json

import pytest

from core import counts
from core.counts import KeyCounts
from core.fallback import _count as pure_count
from plugins.top import TopK

#: A few records of two days, enough for every rule type to have something to judge.
RECORDS = "".join(
    f"2025-07-{day}T{hour:02d}:{minute:02d}:00Z {status} PaymentService user{(hour + minute) % 7} "
    f"Payment of 12.50 for ORD-{minute}\n"
    for day in (21, 22) for hour in range(0, 24, 3) for minute in range(0, 60, 7)
    for status in ("SUCCESS", "FAILURE")
)


def rule_file(workspace, text: str) -> None:
    """Enable the one rule ``p`` of ``rules/params.yaml``, of ``text`` (its type and parameters)."""
    workspace.rules_file("params.yaml", f"- {{name: p, {text}}}\n")
    workspace.configure("rules: [p]\n")


def refused(workspace, capsys, message: str) -> None:
    """--check and a run both stop at the configuration, saying ``message``; nothing is written."""
    assert workspace.main("--check") == 2
    assert message in capsys.readouterr().err
    assert workspace.main() == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (workspace.output / "summary.json").exists()


def ran_cleanly(workspace, capsys) -> dict:
    """--check passes and the run exits 0 with no rule failed; the summary."""
    assert workspace.main("--check") == 0, capsys.readouterr().err
    assert workspace.main() == 0, capsys.readouterr().err
    summary = workspace.summary()
    assert summary["rule_errors"] == []
    return summary


@pytest.mark.parametrize("rule, message", [
    ("type: top_k, field: user, limit: 2.0", "limit: expected integer >= 1 <= 10000, written without a decimal point, "
                                             "got 2.0"),
    ("type: peak_hours, limit: 3.0", "limit: expected integer >= 1 <= 24, written without a decimal point, got 3.0"),
    ("type: error_spike, min_count: 10.0", "min_count: expected integer >= 0, written without a decimal point, "
                                           "got 10.0"),
    ("type: frequency, field: user, min_count: 100.0",
     "min_count: expected integer >= 1, written without a decimal point, got 100.0"),
    ("type: frequency, field: user, min_count: 1000000000000000000000",
     "min_count: expected integer >= 1 that fits in 64 bits (-2**63 to 2**63 - 1), got 1000000000000000000000"),
])
def test_a_whole_number_written_as_a_float_or_past_64_bits_is_refused(workspace, capsys, rule, message):
    rule_file(workspace, rule)
    refused(workspace, capsys, f"rules/params.yaml: rule 'p': {message}")


@pytest.mark.parametrize("value, shown", [(".nan", "nan"), (".inf", "inf"), ("-.inf", "-inf")])
@pytest.mark.parametrize("field, bound", [("z", "> 0"), ("ratio", ">= 1")])
def test_a_number_that_is_not_finite_is_refused(workspace, capsys, field, bound, value, shown):
    rule_file(workspace, f"type: error_spike, {field}: {value}")
    refused(workspace, capsys, f"rules/params.yaml: rule 'p': {field}: expected a finite number {bound}, got {shown}")


def test_a_whole_ratio_past_what_its_square_holds_in_64_bits_runs(workspace, capsys):
    workspace.write("a.log", RECORDS)
    rule_file(workspace, "type: error_spike, ratio: 9223372036854775807")
    ran_cleanly(workspace, capsys)


@pytest.mark.parametrize("pattern, why", [
    ("([", "unclosed character class"),
    (r"(?=abc)\d{3}", "look-around, including look-ahead and look-behind, is not supported"),
])
def test_an_id_pattern_polars_cannot_run_is_refused(workspace, capsys, pattern, why):
    rule_file(workspace, f"type: duplicate_event, id_pattern: '{pattern}'")
    refused(workspace, capsys, f"rules/params.yaml: rule 'p': id_pattern: expected a regular expression Polars can "
                               f"run ({why}), got {pattern!r}")


def test_an_id_pattern_polars_runs_is_taken(workspace, capsys):
    workspace.write("a.log", RECORDS * 2)
    rule_file(workspace, r"type: duplicate_event, id_pattern: 'ORD-\d+'")
    ran_cleanly(workspace, capsys)


@pytest.mark.parametrize("rule, field", [
    ("type: error_spike", "timeframe"),
    ("type: flatline, field: service", "timeframe"),
    ("type: frequency, field: user", "timeframe"),
    ("type: timeline", "every"),
    ("type: duplicate_event", "retention"),
    ("type: timestamp", "max_lateness"),
    ("type: error_spike", "realert"),
])
def test_a_duration_longer_than_ten_years_is_refused(workspace, capsys, rule, field):
    rule_file(workspace, f"{rule}, {field}: 99999999999d")
    refused(workspace, capsys, f"rules/params.yaml: rule 'p': {field}: expected a duration of at most 3650d "
                               "(ten years), got '99999999999d'")


def test_a_duration_that_is_no_duration_says_what_one_is_once(workspace, capsys):
    rule_file(workspace, "type: timestamp, max_lateness: 10x")
    assert workspace.main("--check") == 2
    err = capsys.readouterr().err
    assert ("rules/params.yaml: rule 'p': max_lateness: expected a duration: a whole number and its unit, s, m, h "
            "or d (90s, 10m, 1h, 1d), got '10x'") in err
    assert err.count("max_lateness") == 1


@pytest.mark.parametrize("rule", [
    "type: frequency, field: user, timeframe: 3650d, history_windows: 1000, min_time: '0001-01-01'",
    "type: error_spike, timeframe: 3650d, retention: 3650d, max_future: 3650d, realert: 3650d",
    "type: flatline, field: service, timeframe: 87600h, min_time: '0001-01-01'",
    "type: duplicate_event, retention: 315360000s, max_future: 5256000m",
    "type: timeline, every: 3650d, max_future: 3650d",
    "type: timestamp, max_future: 3650d, max_lateness: 3650d",
])
def test_the_longest_durations_run(workspace, capsys, rule):
    workspace.write("a.log", RECORDS)
    rule_file(workspace, rule)
    ran_cleanly(workspace, capsys)


@pytest.mark.parametrize("rule, field, value, why", [
    ("type: timeline", "min_time", "2025-02-30", "day is out of range for month"),
    ("type: timeline", "min_time", "0000-01-01", "year 0 is out of range"),
    ("type: error_spike", "min_time", "2025-13-01", "month must be in 1..12"),
    ("type: timestamp", "now", "2025-07-22T24:00:00Z", "hour must be in 0..23"),
])
@pytest.mark.parametrize("quote", ["'", ""])  # unquoted, YAML itself reads a date (and raised on 2025-02-30)
def test_a_date_that_does_not_exist_is_refused_naming_its_field(workspace, capsys, rule, field, value, why, quote):
    rule_file(workspace, f"{rule}, {field}: {quote}{value}{quote}")
    refused(workspace, capsys, f"rules/params.yaml: rule 'p': {field}: expected a date that exists, from year 0001 "
                               f"to 9999 ({why}), got '{value}'")


def test_a_date_written_without_quotes_is_taken_as_written(workspace, capsys):
    # YAML turns an unquoted 2025-07-22 into a date object, which the schema refused as not text.
    workspace.write("a.log", RECORDS)
    rule_file(workspace, "type: timestamp, min_time: 2025-07-22, now: 2025-07-23T00:00:00Z")
    summary = ran_cleanly(workspace, capsys)
    flagged = [a for a in json.loads((workspace.output / "anomalies.json").read_text())["anomalies"]
               if a["rule"] == "p"]
    assert flagged and all(a["first_seen"] < "2025-07-22" for a in flagged)  # the first day's records, before min_time
    assert summary["totals"]["records"] == RECORDS.count("\n")


@pytest.mark.parametrize("memory_mb", [64000, 200000, 1024**3])
def test_a_large_memory_cap_keeps_every_rule(workspace, capsys, memory_mb):
    workspace.write("a.log", RECORDS)
    workspace.configure(f"limits: {{memory_mb: {memory_mb}}}\n")
    summary = ran_cleanly(workspace, capsys)
    assert sorted(summary["top_users"]) == [f"user{i}" for i in range(7)]
    assert sorted(summary["top_services"]) == ["PaymentService"]
    assert summary["rules"]["top-users"]["degraded"] is None


def test_a_memory_cap_past_a_pebibyte_is_refused(workspace, capsys):
    workspace.configure(f"limits: {{memory_mb: {1024**3 + 1}}}\n")
    refused(workspace, capsys, "settings.yaml: limits.memory_mb: expected integer >= 64 <= 1073741824, got 1073741825")


@pytest.mark.parametrize("module", [counts._count, pure_count], ids=["compiled", "pure"])
def test_a_bound_past_what_a_table_holds_keeps_as_many_keys_as_it_can(monkeypatch, module):
    monkeypatch.setattr(counts, "_count", module)
    rule = TopK("top", field="user")
    rule.limit_state(64000 * 1024 * 1024)
    most = 0xFFFFFFFF // 4  # what core/_count.c takes
    assert rule.counts.capacity == most == KeyCounts.capacity_for(10**18)


def test_a_large_memory_cap_runs_on_the_stand_ins(workspace):
    workspace.write("a.log", RECORDS)
    workspace.configure("limits: {memory_mb: 200000}\n")
    result = workspace.run(env={"OMP_NO_COMPILED": "1"})
    assert result.returncode == 0, result.stderr
    summary = workspace.summary()
    assert summary["rule_errors"] == [] and "top_users" in summary and "top_services" in summary


def test_settings_take_whole_numbers_and_finite_numbers_only(workspace, capsys):
    workspace.configure("workers: 2.0\nchunk_bytes: 1048576.0\nwatch: {rescan_seconds: .nan}\n")
    assert workspace.main("--check") == 2
    err = capsys.readouterr().err
    assert "settings.yaml: workers: expected integer >= 0 <= 256, written without a decimal point, got 2.0" in err
    assert "settings.yaml: chunk_bytes: expected integer >= 1024 <= 1073741824, written without a decimal point" in err
    assert "settings.yaml: watch.rescan_seconds: expected a finite number >= 0.1, got nan" in err


def test_a_key_outside_ascii_identifiers_says_what_a_key_may_be(workspace, capsys):
    rule_file(workspace, "type: count_by, field: user, key: paiement_état")
    assert workspace.main("--check") == 2
    assert ("got 'paiement_état'; hint: an identifier here is ASCII letters, digits and '_', not starting with a "
            "digit") in capsys.readouterr().err


def test_a_key_with_a_trailing_newline_is_refused(workspace, capsys):
    rule_file(workspace, r'type: count_by, field: user, key: "users\n"')
    assert workspace.main("--check") == 2
    assert r"key: expected an identifier that is not one of" in capsys.readouterr().err


def test_two_rules_writing_one_key_are_named_with_their_files(workspace, capsys):
    workspace.rules_file("extra.yaml", "- {name: users-again, type: top_k, field: user, key: top_users}\n")
    workspace.rules_file("more.yaml", "- {name: p, type: timeline, every: 99999999999d}\n")
    workspace.configure("rules: [top-users, users-again, p]\n")
    assert workspace.main("--check") == 2
    err = capsys.readouterr().err
    assert ("rules/extra.yaml: rule 'users-again': key: 'top_users' is already written by rule 'top-users' "
            "(rules/summary.yaml); hint: set a different 'key:' on one of them") in err
    assert "rules/more.yaml: rule 'p': every:" in err  # reported together with the other problems
    assert "configuration error (2 problems)" in err


@pytest.mark.parametrize("rule", ["type: timestamp", "type: unknown_status"])
def test_every_detector_takes_the_incident_parameters(workspace, capsys, rule):
    workspace.write("a.log", RECORDS + "2025-07-22T10:00:00Z WEIRD S u m\n" * 3)
    rule_file(workspace, f"{rule}, max_incidents: 0, min_severity: critical, realert: 1h")
    ran_cleanly(workspace, capsys)
    anomalies = json.loads((workspace.output / "anomalies.json").read_text(encoding="utf-8"))
    assert anomalies["anomalies"] == []
