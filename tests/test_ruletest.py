"""``runpipeline test-rule`` (a rule tried on sample lines) and ``runpipeline test`` (declared rule tests)."""

from __future__ import annotations

import json
import os
import shutil

import jsonschema
import pytest

from core import ruletest
from core.cli import main
from core.errors import DataDirError
from core.ruletest import matches
from tests.conftest import REPO

SAMPLE = REPO / "data" / "example_input.txt"
#: A valid test, to run where what is under test is something else (the settings file).
A_TEST = "- {name: t, rule: payment-statuses, lines: '2025-07-22T10:00:00Z SUCCESS Pay u1', expect: {output: {}}}\n"

BROKEN = """\
- name: a count that is wrong on purpose
  rule: payment-statuses
  lines: |
    2025-07-22T10:00:00Z SUCCESS PaymentService user1 paid
  expect:
    output: {SUCCESS: 2}
- name: an incident that is not there
  rule: implausible-timestamps
  lines: |
    2099-07-22T10:00:00Z SUCCESS Payment user2 paid
  expect:
    incidents:
      - {key: future, severity: low}
"""


@pytest.fixture
def with_rule_tests(workspace):
    shutil.copytree(REPO / "tests" / "rules", workspace.root / "tests" / "rules")
    return workspace


def test_the_shipped_rule_tests_pass_through_the_real_command(with_rule_tests):
    result = with_rule_tests.run("test", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    enabled = {"payment-statuses", "top-services", "top-users", "event-timeline", "peak-hours", "unknown-statuses",
               "implausible-timestamps", "error-spikes", "busy-users", "duplicate-events", "silent-services"}
    assert {line.split()[1].rstrip(":") for line in lines if line.startswith("PASS")} == enabled  # one per rule
    assert lines[-1].endswith(" passed, 0 failed")
    assert not (with_rule_tests.output / "summary.json").exists()  # nothing of the real folders touched


def test_a_failing_rule_test_exits_1_with_a_diff_of_what_differs(with_rule_tests):
    broken = with_rule_tests.root / "broken.yaml"
    broken.write_text(BROKEN, encoding="utf-8")
    result = with_rule_tests.run("test", str(broken))
    assert result.returncode == 1
    out = result.stdout
    assert "FAIL payment-statuses: a count that is wrong on purpose" in out
    assert '-  "SUCCESS": 2\n' in out and '+  "SUCCESS": 1\n' in out
    assert "FAIL implausible-timestamps: an incident that is not there" in out
    assert "closest, implausible-timestamps:future" in out and '+  "severity": "high"' in out
    assert out.splitlines()[-1] == "2 tests: 0 passed, 2 failed"


def test_a_malformed_test_file_is_a_configuration_error_naming_the_test(with_rule_tests):
    bad = with_rule_tests.root / "bad.yaml"
    bad.write_text("- {name: x, rule: top-users, expect: {output: []}, line: oops}\n- {rule: top-users}\n",
                   encoding="utf-8")
    assert with_rule_tests.main("test", str(bad)) == 2


def _test_file(workspace, content: str | bytes):
    path = workspace.root / "mine.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize(("fields", "problem"), [
    ("expect: {incidents: 5}", "expect.incidents: expected list, got 5"),
    ("expect: {incidents: [BOGUS]}", "expect.incidents[0]: expected mapping, got 'BOGUS'"),
    ("expect: {incidents: {key: X}}", "expect.incidents: expected list, got {'key': 'X'}"),
    ("background: {days: x}, expect: {output: {}}", "background.days: expected number > 0 <= 366, got 'x'"),
    ("background: {days: .nan}, expect: {output: {}}", "background.days: expected a finite number > 0 <= 366, got nan"),
    ("background: {seed: abc}, expect: {output: {}}", "background.seed: expected integer, got 'abc'"),
    ("background: {start: yesterday}, expect: {output: {}}",
     "background.start: expected an ISO 8601 date or time such as 2025-07-21 or 2025-07-21T14:00:00Z, got 'yesterday'"),
    ("background: {quiet: {service: A, from: 2025-13-01, hours: 2}}, expect: {output: {}}",
     "background.quiet.from: expected an ISO 8601 date or time such as 2025-07-21 or 2025-07-21T14:00:00Z, "
     "got '2025-13-01' (month must be in 1..12)"),
    ("bursts: [{line: no timestamp, times: 3}], expect: {output: {}}",
     "bursts[0].line: expected a log line that starts with its timestamp"),
    ("bursts: [{line: 2025-02-30T00:00:00Z INFO S u m, times: 3}], expect: {output: {}}",
     "bursts[0].line: expected a log line that starts with its timestamp, such as '2025-07-21T14:00:00Z ERROR "
     "PaymentService user{i} declined', got '2025-02-30T00:00:00Z INFO S u m' (day is out of range for month)"),
    ("bursts: [{line: 9999-12-31T23:59:58Z INFO S u m, times: 5}], expect: {output: {}}",
     "bursts[0]: expected times and every that end before the year 10000, got 5 lines every 1s"),
    ("settings: {limits: 5}, expect: {output: {}}", "settings.limits: expected mapping, got 5"),
    ("settings: {data_dir: elsewhere}, expect: {output: {}}", "settings.data_dir: expected nothing: each test sets it"),
    # Lines to generate that would take minutes (they hung the run) are refused before any is made.
    ("bursts: [{line: 2025-07-22T10:00:00Z INFO S u m, times: 100000000}], expect: {output: {}}",
     "bursts[0].times: expected integer >= 1 <= 1000000, got 100000000"),
    ("background: {days: 100000}, expect: {output: {}}", "background.days: expected number > 0 <= 366, got 100000"),
    ("background: {days: 30, per_day: 50000}, expect: {output: {}}",
     "background, bursts: expected at most 1,000,000 lines generated a test, got about 1,500,000"),
])
def test_a_malformed_test_is_a_configuration_error_naming_its_file_test_and_field(workspace, capsys, fields,
                                                                                  problem):
    mine = _test_file(workspace, f"- {{name: t, rule: payment-statuses, {fields}}}\n")
    assert workspace.main("test", str(mine)) == 2
    err = capsys.readouterr().err
    assert "configuration error (1 problem)" in err and f"{mine}: test 1 't': {problem}" in err


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_a_test_file_that_is_not_utf8_is_a_configuration_error(workspace, capsys, encoding):
    mine = _test_file(workspace, "- {name: café, rule: payment-statuses, expect: {output: {}}}\n".encode(encoding))
    assert workspace.main("test", str(mine)) == 2
    assert f"{mine}: cannot read test file: expected UTF-8 text, got byte" in capsys.readouterr().err


def test_every_problem_of_the_test_files_is_reported_before_any_test_runs(workspace, capsys):
    mine = _test_file(workspace, "- {name: a, rule: payment-statuses, expect: {incidents: 5}}\n" + A_TEST
                      + "- {name: c, rule: payment-statuses, bursts: [{line: no timestamp, times: 3}], "
                      "expect: {output: {}}}\n- {rule: payment-statuses, expect: {}}\n")
    assert workspace.main("test", str(mine)) == 2
    out, err = capsys.readouterr()
    assert out == ""  # not even the valid test ran
    assert "(4 problems)" in err
    assert f"{mine}: test 1 'a': expect.incidents: expected list" in err
    assert f"{mine}: test 3 'c': bursts[0].line: expected a log line" in err
    assert f"{mine}: test 4: missing required field 'name'" in err and f"{mine}: test 4: expect: expected" in err


def test_a_test_whose_rule_or_settings_cannot_be_used_is_a_configuration_error_naming_it(workspace, capsys):
    mine = _test_file(workspace, "- {name: u, rule: payment-statuses, expect: {output: {}},"
                      " settings: {chunk_bytes: 2000, limits: {max_line_bytes: 4096}}}\n")
    assert workspace.main("test", str(mine)) == 2
    assert (f"{mine}: test 1 'u': settings.chunk_bytes: expected more than limits.max_line_bytes (4096), got 2000"
            in capsys.readouterr().err)  # the test's settings, not the settings file, are at fault
    mine.write_text("- {name: v, rule: eror-spikes, expect: {incidents: []}}\n", encoding="utf-8")
    assert workspace.main("test", str(mine)) == 2
    err = capsys.readouterr().err
    assert f"{mine}: test 1 'v': rule: unknown rule 'eror-spikes' (did you mean 'error-spikes'?)" in err


@pytest.mark.parametrize(("rule", "expect", "problem"), [
    # A summary rule never has incidents: "none" would always pass, and checked nothing.
    ("payment-statuses", "{incidents: []}",
     "expect.incidents: rule 'payment-statuses' is a summary rule (type count_by): it never finds incidents"),
    ("unknown-statuses", "{output: null}",
     "expect.output: rule 'unknown-statuses' is a detector (type unknown_status): it finds incidents"),
])
def test_expecting_what_the_rule_never_gives_is_a_configuration_error(workspace, capsys, rule, expect, problem):
    mine = _test_file(workspace, f"- {{name: w, rule: {rule}, lines: '2025-07-22T10:00:00Z SUCCESS Pay u1 paid', "
                      f"expect: {expect}}}\n")
    assert workspace.main("test", str(mine)) == 2
    assert f"{mine}: test 1 'w': {problem}" in capsys.readouterr().err


def test_dates_may_be_written_without_quotes(workspace, capsys):
    # YAML would make them dates, which the test file's schema (text) refused: they stay the text written.
    mine = _test_file(workspace, "- {name: d, rule: payment-statuses, expect: {output: {}}, background: {days: 0.05, "
                      "start: 2025-07-19, quiet: {service: PaymentService, from: 2025-07-19T00:10:00Z, hours: 0.5}}}\n")
    assert workspace.main("test", str(mine)) == 0
    assert capsys.readouterr().out.startswith("PASS payment-statuses: d")


def test_the_test_file_schema_is_valid_json_schema():
    # core.validation does not check it when the module loads (it is the project's own): this does.
    jsonschema.validators.validator_for(ruletest.TEST_SCHEMA).check_schema(ruletest.TEST_SCHEMA)


@pytest.mark.parametrize("command", ["test-rule", "test"])
@pytest.mark.parametrize(("content", "problem"), [
    ("rules: [a, b\n", "not valid YAML: line 2, column 1: expected ',' or ']'"),
    (None, "settings file not found"),
    ("a folder", "cannot read settings file"),
    (b"rules: [caf\xe9]\n", "cannot read settings file: 'utf-8' codec can't decode byte 0xe9"),
])
def test_a_settings_file_that_cannot_be_read_is_a_configuration_error(workspace, capsys, command, content, problem):
    settings = workspace.root / "bad.yaml"
    if content == "a folder":
        settings.mkdir()
    elif content is not None:
        settings.write_bytes(content if isinstance(content, bytes) else content.encode())
    args = [str(_test_file(workspace, A_TEST))] if command == "test" else ["payment-statuses", "--sample", str(SAMPLE)]
    assert main(["--settings", str(settings), command, *args]) == 2
    err = capsys.readouterr().err
    assert "runpipeline: configuration error (1 problem)" in err and f"  {settings}: {problem}" in err


def test_a_sample_is_a_regular_file_of_bounded_size(tmp_path, monkeypatch):
    # What test-rule --sample reads: /dev/zero never ends, and a FIFO waits for a writer.
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "named pipe"), ("/dev/zero", "device")):
        with pytest.raises(DataDirError, match=f"--sample: cannot read {path}: is a .*{kind}.*not a regular file"):
            ruletest.read_sample(path)
    small = tmp_path / "small.log"
    small.write_bytes(b"2025-07-22T10:00:00Z SUCCESS Pay u1 paid\n")
    assert ruletest.read_sample(small) == {"small.log": small.read_bytes()}
    monkeypatch.setattr(ruletest, "MAX_SAMPLE_BYTES", 10)
    with pytest.raises(DataDirError, match=f"--sample: {small}: expected at most 10 bytes of sample lines, got more"):
        ruletest.read_sample(small)


def test_test_rule_refuses_a_sample_that_is_a_named_pipe_at_once(workspace, capsys):
    os.mkfifo(workspace.root / "fifo.log")
    assert workspace.main("test-rule", "top-users", "--sample", str(workspace.root / "fifo.log")) == 2
    assert "is a named pipe (FIFO), not a regular file" in capsys.readouterr().err


def test_try_a_rule_on_the_shipped_sample_without_touching_the_state(workspace, capsys):
    sample = REPO / "data" / "example_input.txt"
    assert workspace.main("test-rule", "implausible-timestamps", "--sample", str(sample)) == 0
    out = capsys.readouterr().out
    assert "implausible-timestamps (timestamp) on 1,500 lines" in out
    assert "  high future (count 2, observed 2033-07-22T14:13:26Z, score 20.0)" in out
    assert "example_input.txt:" in out and "1970-01-01T00:00:00Z INFO SettlementService" in out  # the lines
    assert workspace.main("test-rule", "top-users", "--sample", str(sample), "--json") == 0
    found = json.loads(capsys.readouterr().out)
    assert found["type"] == "top_k" and len(found["output"]) == 10
    assert found["details"][found["output"][0]] >= found["details"][found["output"][-1]]
    assert not workspace.output.exists()


def test_a_rule_with_bad_parameters_is_refused_as_check_refuses_it(workspace, capsys):
    workspace.rules_file("extra.yaml", "- {name: bad-top, type: top_k, field: user, limit: 0}\n")
    sample = REPO / "data" / "example_input.txt"
    assert workspace.main("test-rule", "bad-top", "--sample", str(sample)) == 2
    tried = capsys.readouterr().err
    assert workspace.main("--check") == 2
    checked = capsys.readouterr().err
    problem = next(line for line in tried.splitlines() if "bad-top" in line)
    assert problem in checked and "limit" in problem
    assert workspace.main("test-rule", "no-such-rule", "--sample", str(sample)) == 2
    assert "no-such-rule" in capsys.readouterr().err


@pytest.mark.parametrize(("expected", "found", "result"), [
    ({"a": 1}, {"a": 1, "b": 2}, True),
    ({"a": 1, "c": 3}, {"a": 1, "b": 2}, False),
    ({"a": {"x": 1}}, {"a": {"x": 1, "y": 2}}, True),
    ([{"k": 1}, {"k": 2}], [{"k": 2, "z": 0}, {"k": 1}], True),  # any order
    ([{"k": 1}, {"k": 1}], [{"k": 1}], False),  # each expected item needs its own
    (["a", "b"], ["a", "b", "c"], False),  # plain lists are equal or not
    ([], [], True),
])
def test_subset_matching(expected, found, result):
    assert matches(expected, found) is result
