"""``runpipeline test-rule`` (a rule tried on sample lines) and ``runpipeline test`` (declared rule tests)."""

from __future__ import annotations

import json
import shutil

import pytest

from core.ruletest import matches
from tests.conftest import REPO

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
