"""Trying rules on sample lines, and tests of rules declared in YAML (``runpipeline test-rule``, ``runpipeline test``).

Both run the real pipeline, one rule at a time, in a temporary folder: the saved state and the
outputs of the configured folders are never touched. A rule test file is a list of tests:

    - name: a burst of failures on one service is an incident
      rule: error-spikes                # a rule defined in the rule files (enabled or not)
      background: {days: 3, seed: 1}    # optional: generated traffic (core/background.py) before the lines;
                                        # also start, per_day, and quiet: {service, from, hours} (an outage)
      settings: {limits: {memory_mb: 300}}  # optional: settings overrides for this test
      lines: |                          # optional: the test's own log lines
        2025-07-22T12:00:00Z ERROR PaymentService user1 declined
      bursts:                           # optional: a line repeated, its time moving on each time
        - {line: "2025-07-21T14:00:00Z ERROR PaymentService user{i} declined", times: 60, every: 10s}
      expect:
        output: {...}                   # a summary rule's value: matched as a subset
        incidents:                      # a detector's incidents: each must match one found
          - {key: PaymentService, kind: spike}

Subset matching: an expected mapping matches a found one that has at least its keys, each
matching; an expected list of mappings matches when each of them matches a different found item
(in any order); anything else must be equal. ``incidents: []`` expects none.
"""

from __future__ import annotations

import difflib
import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from core.background import background_lines, burst_lines, parse_start
from core.errors import ConfigError
from core.plugins import get_plugin_manager, rule_types
from core.ruleset import load_rules
from core.runner import RunReport, run_batch
from core.settings import DEFAULTS, load_settings

#: Where ``runpipeline test`` looks for rule tests, relative to the settings file's folder.
DEFAULT_TESTS = "tests/rules/*.yaml"
_TEST_KEYS = {"name", "rule", "lines", "bursts", "background", "settings", "expect"}
_EXPECT_KEYS = {"output", "incidents"}
_BACKGROUND_KEYS = {"days", "seed", "start", "per_day", "quiet"}
_BURST_KEYS = {"line", "times", "every"}
_SECONDS = re.compile(r"([1-9][0-9]*)([smh])")


def _seconds(text: str) -> int:
    number, unit = _SECONDS.fullmatch(text).groups()
    return int(number) * {"s": 1, "m": 60, "h": 3600}[unit]


@dataclass
class Outcome:
    """What one rule produced on some lines: its output (a summary rule) or its incidents (a detector)."""

    rule: str
    type: str
    key: str
    output: Any = None
    details: Any = None
    incidents: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        found = {"rule": self.rule, "type": self.type, "totals": self.totals}
        if self.incidents or self.output is None:
            found["incidents"] = self.incidents
        else:
            found["output"], found["details"] = self.output, self.details
        return found | ({"rule_errors": self.errors} if self.errors else {})


def run_rule(settings_path: str | Path, rule: str, files: dict[str, bytes],
             overrides: dict[str, Any] | None = None) -> Outcome:
    """Run the rule named ``rule`` alone over ``files`` (name -> bytes) in a temporary folder.

    The rule is validated as ``--check`` validates it: a bad one raises ``ConfigError``.
    """
    with tempfile.TemporaryDirectory(prefix="omp-rule-test-") as folder:
        data, output = Path(folder) / "data", Path(folder) / "output"
        data.mkdir()
        for name, content in files.items():
            (data / name).write_bytes(content)
        raw = yaml.safe_load(Path(settings_path).read_text(encoding="utf-8")) or {}
        merged = {key: _deep_merge(_deep_merge(DEFAULTS.get(key), raw.get(key)), value)
                  for key, value in (overrides or {}).items()}
        # Sample lines, in this process: never a Dask cluster the settings may name for runs.
        settings = load_settings(settings_path, {**merged, "rules": [rule], "data_dir": str(data),
                                                 "output_dir": str(output), "include": ["*"], "exclude": [],
                                                 "executor": {"type": "threads"}})
        pm = get_plugin_manager(settings.plugins, search_path=settings.source.parent)
        rules = load_rules(settings, rule_types(pm))
        report = run_batch(settings, pm, rules, reset=True)
    return _outcome(report, rules[0])


def _outcome(report: RunReport, rule: Any) -> Outcome:
    summary = report.summary
    outcome = Outcome(rule.name, rule.type_name, rule.key, errors=summary["rule_errors"],
                      totals={k: summary["totals"][k] for k in ("lines", "records", "malformed", "blank")})
    if rule.output == "anomalies":
        outcome.incidents = [i for i in report.anomalies["anomalies"] if i.get("rule") == rule.name]
    else:
        outcome.output = summary.get(rule.key)
        outcome.details = summary["details"].get(rule.key)
    return outcome


def _deep_merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{k: _deep_merge(base.get(k), v) for k, v in override.items()}}
    return override


def describe(outcome: Outcome) -> str:
    """What ``test-rule`` prints: the rule's output, or each incident with the lines that caused it."""
    lines = [f"{outcome.rule} ({outcome.type}) on {outcome.totals['lines']:,} lines, "
             f"{outcome.totals['records']:,} records, {outcome.totals['malformed']:,} malformed:"]
    for error in outcome.errors:
        lines.append(f"  rule error in {error['phase']}: {error['error']}")
    if outcome.incidents or outcome.output is None:
        if not outcome.incidents:
            lines.append("  no incidents")
        for incident in outcome.incidents:
            what = " ".join(str(part) for part in (incident["severity"], incident["kind"], incident["key"]) if part)
            if incident.get("window_start"):
                what += f" {incident['window_start']}..{incident.get('window_end')}"
            measures = [f"{name} {incident[name]}" for name in ("count", "observed", "expected", "score")
                        if incident.get(name) is not None]
            lines.append(f"  {what} ({', '.join(measures)})")
            for sample in incident.get("samples", []):
                lines.append(f"    {sample.get('location')}: {sample.get('text') or ''}")
    else:
        lines.append("  " + json.dumps(outcome.output, ensure_ascii=False))
        if outcome.details is not None:
            lines.append("  details: " + json.dumps(outcome.details, ensure_ascii=False)[:2000])
    return "\n".join(lines)


# -- declared tests -------------------------------------------------------------------------


@dataclass
class TestCase:
    source: str  # file and position, for messages
    name: str
    rule: str
    lines: str
    bursts: list[dict[str, Any]]
    background: dict[str, Any] | None
    settings: dict[str, Any]
    expect: dict[str, Any]


@dataclass
class TestResult:
    case: TestCase
    passed: bool
    seconds: float
    problems: list[str]
    found: Outcome | None = None


def load_tests(paths: list[Path]) -> list[TestCase]:
    """Every test in the files, in order; every problem in them is reported at once (``ConfigError``)."""
    cases, problems = [], []
    for path in paths:
        try:
            entries = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        if not isinstance(entries, list):
            problems.append(f"{path}: expected a list of tests, got {type(entries).__name__}")
            continue
        for index, entry in enumerate(entries, 1):
            where = f"{path}: test {index}"
            found = _check_entry(entry, where)
            if found:
                problems += found
                continue
            cases.append(TestCase(f"{path}:{index}", entry["name"], entry["rule"], entry.get("lines") or "",
                                  entry.get("bursts") or [], entry.get("background"), entry.get("settings") or {},
                                  entry["expect"]))
    if problems:
        raise ConfigError(problems)
    return cases


def _check_entry(entry: Any, where: str) -> list[str]:
    if not isinstance(entry, dict):
        return [f"{where}: expected a mapping with name, rule and expect"]
    problems = [f"{where}: unknown field '{k}'; known: {', '.join(sorted(_TEST_KEYS))}" for k in entry
                if k not in _TEST_KEYS]
    problems += [f"{where}: '{k}' is required" for k in ("name", "rule", "expect") if k not in entry]
    expect = entry.get("expect")
    if "expect" in entry and (not isinstance(expect, dict) or not expect or set(expect) - _EXPECT_KEYS):
        problems.append(f"{where}: expect: a mapping with 'output' or 'incidents'")
    background = entry.get("background")
    if background is not None and (not isinstance(background, dict) or set(background) - _BACKGROUND_KEYS):
        problems.append(f"{where}: background: a mapping of {', '.join(sorted(_BACKGROUND_KEYS))}")
    bursts = entry.get("bursts") or []
    if not isinstance(bursts, list) or not all(
        isinstance(b, dict) and set(b) <= _BURST_KEYS and isinstance(b.get("line"), str)
        and isinstance(b.get("times"), int) and _SECONDS.fullmatch(str(b.get("every", "1s"))) for b in bursts
    ):
        problems.append(f"{where}: bursts: a list of {{line, times, every}}: line with its first timestamp, "
                        "times a count, every a duration such as 10s or 1m")
    quiet = (background or {}).get("quiet") if isinstance(background, dict) else None
    if quiet is not None and not (isinstance(quiet, dict) and set(quiet) == {"service", "from", "hours"}):
        problems.append(f"{where}: background: quiet: a mapping of service, from and hours")
    if "lines" in entry and not isinstance(entry["lines"], str):
        problems.append(f"{where}: lines: the log lines, as one block of text (lines: |)")
    if "settings" in entry and not isinstance(entry["settings"], dict):
        problems.append(f"{where}: settings: a mapping of settings to override")
    return problems


def run_test(settings_path: str | Path, case: TestCase) -> TestResult:
    started = time.perf_counter()
    files: dict[str, bytes] = {}
    if case.background is not None:
        spec = case.background
        quiet = spec.get("quiet")
        if quiet is not None:
            begin = parse_start(str(quiet["from"]))
            quiet = (quiet["service"], begin, begin + timedelta(hours=float(quiet["hours"])))
        traffic = background_lines(parse_start(str(spec.get("start", "2025-07-19T00:00:00Z"))),
                                   float(spec.get("days", 3)), int(spec.get("per_day", 20_000)),
                                   int(spec.get("seed", 1)), quiet)
        files["0-background.log"] = "".join(line + "\n" for line in traffic).encode()
    if case.lines:
        files["1-lines.log"] = case.lines.encode()
    for n, burst in enumerate(case.bursts):
        repeated = burst_lines(burst["line"], burst["times"], _seconds(str(burst.get("every", "1s"))))
        files[f"2-burst-{n}.log"] = "".join(line + "\n" for line in repeated).encode()
    found = run_rule(settings_path, case.rule, files, case.settings)
    problems = [f"rule error in {e['phase']}: {e['error']}" for e in found.errors]
    if "output" in case.expect:
        problems += _compare("output", case.expect["output"], found.output)
    if "incidents" in case.expect:
        problems += _compare_incidents(case.expect["incidents"], found.incidents)
    return TestResult(case, not problems, time.perf_counter() - started, problems, found)


def matches(expected: Any, found: Any) -> bool:
    """Subset matching (see the module's docstring)."""
    if isinstance(expected, dict):
        return isinstance(found, dict) and all(k in found and matches(v, found[k]) for k, v in expected.items())
    if isinstance(expected, list) and expected and all(isinstance(e, dict) for e in expected):
        return isinstance(found, list) and _assign(expected, found) is not None
    return expected == found


def _assign(expected: list[Any], found: list[Any]) -> list[int] | None:
    """A distinct found item for each expected one (first fit, backtracking), or None."""
    chosen: list[int] = []

    def place(i: int) -> bool:
        if i == len(expected):
            return True
        for j, item in enumerate(found):
            if j not in chosen and matches(expected[i], item):
                chosen.append(j)
                if place(i + 1):
                    return True
                chosen.pop()
        return False

    return chosen if place(0) else None


def _compare(what: str, expected: Any, found: Any) -> list[str]:
    if matches(expected, found):
        return []
    return [f"{what} does not match:\n" + _diff(expected, _projected(expected, found), "found")]


def _compare_incidents(expected: list[dict[str, Any]], found: list[dict[str, Any]]) -> list[str]:
    if not expected:
        return [] if not found else [f"expected no incidents, found {len(found)}:\n"
                                     + "\n".join(f"    {_brief(i)}" for i in found)]
    problems = []
    for item in expected:
        if not any(matches(item, incident) for incident in found):
            closest = max(found, key=lambda i: _likeness(item, i), default=None)
            if closest is None:
                problems.append(f"expected an incident, found none:\n{_diff(item, None, 'found')}")
            else:
                problems.append(f"expected incident not found; the closest, {closest.get('id')}:\n"
                                + _diff(item, _projected(item, closest), "closest found"))
    if not problems and _assign(expected, found) is None:
        problems.append("two expected incidents match the same found one; found: "
                        + "; ".join(_brief(i) for i in found))
    return problems


def _likeness(expected: dict[str, Any], found: dict[str, Any]) -> int:
    return sum(1 for k, v in expected.items() if k in found and matches(v, found[k]))


def _projected(expected: Any, found: Any) -> Any:
    """``found`` cut to what ``expected`` names, so that the diff shows only what was asked for."""
    if isinstance(expected, dict) and isinstance(found, dict):
        return {k: _projected(v, found[k]) if k in found else "<missing>" for k, v in expected.items()}
    return found


def _diff(expected: Any, found: Any, label: str) -> str:
    left = json.dumps(expected, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    right = json.dumps(found, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    return "\n".join("    " + line for line in difflib.unified_diff(left, right, "expected", label, lineterm=""))


def _brief(incident: dict[str, Any]) -> str:
    return f"{incident.get('severity')} {incident.get('kind')} {incident.get('key')} ({incident.get('id')})"


def report_line(result: TestResult) -> str:
    head = f"{'PASS' if result.passed else 'FAIL'} {result.case.rule}: {result.case.name} ({result.seconds:.1f} s)"
    if result.passed:
        return head
    return "\n".join([head, f"  at {result.case.source}", *("  " + p for p in result.problems)])
