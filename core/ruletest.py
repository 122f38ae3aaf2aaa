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

Test files are checked whole before any test runs (``TEST_SCHEMA``, then the dates and the lines
to generate), and every problem is reported at once. What only the settings can tell (the rule is
defined and valid, the test's settings fit the file's, ``expect`` asks for what the rule gives)
stops the run at that test. Both are configuration errors (``ConfigError``) naming the test.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from core import redact
from core.background import background_lines, burst_lines, parse_start
from core.errors import ConfigError, DataDirError
from core.plugins import get_plugin_manager, rule_types
from core.ruleset import load_rules
from core.runner import RunReport, run_batch
from core.settings import SCHEMA as SETTINGS_SCHEMA
from core.settings import load_settings
from core.sources import open_regular
from core.validation import SchemaCheck, load_yaml

#: Where ``runpipeline test`` looks for rule tests, relative to the settings file's folder.
DEFAULT_TESTS = "tests/rules/*.yaml"
#: The most lines one test may generate (its background and bursts): about 5 s of generating them.
MAX_GENERATED_LINES = 1_000_000
#: The most ``test-rule --sample`` reads: the sample is held in memory whole, and copied once.
MAX_SAMPLE_BYTES = 256 * 1024**2
_SECONDS = re.compile(r"([1-9][0-9]*)([smh])")
#: What a test's ``background`` is when it does not say.
_BACKGROUND = {"days": 3, "per_day": 20_000, "seed": 1, "start": "2025-07-19T00:00:00Z"}
#: Settings each test sets itself: its rule alone, over its own lines, in a temporary folder, in this process.
_SET_BY_TEST = ("rules", "data_dir", "output_dir", "include", "exclude", "executor")
_STRICT = {"type": "object", "additionalProperties": False}  # a mapping of the fields it names
_TEXT = {"type": "string", "minLength": 1}
_INSTANT = {**_TEXT, "title": "an ISO 8601 date or time such as 2025-07-21 or 2025-07-21T14:00:00Z"}
_QUIET = {**_STRICT, "required": ["service", "from", "hours"], "properties": {
    "service": _TEXT, "from": _INSTANT, "hours": {"type": "number", "exclusiveMinimum": 0, "maximum": 366 * 24}}}
_BURST = {**_STRICT, "required": ["line", "times"], "properties": {
    "line": {"type": "string", "title": "a log line that starts with its timestamp"},
    "times": {"type": "integer", "minimum": 1, "maximum": MAX_GENERATED_LINES},
    "every": {"type": "string", "pattern": f"^{_SECONDS.pattern}$", "title": "a duration such as 10s, 5m or 1h"}}}
_SET_ITSELF = {"not": {}, "title": "nothing: each test sets it (its rule alone, over its lines, in a temporary folder)"}
#: One test of a rule test file; its dates and the lines it generates are checked after it (``_entry_problems``).
TEST_SCHEMA: dict[str, Any] = {
    **_STRICT,
    "title": "a mapping with name, rule and expect",
    "required": ["name", "rule", "expect"],
    "properties": {
        "name": _TEXT,
        "rule": _TEXT,
        "lines": {"type": "string", "title": "the log lines, as one block of text (lines: |)"},
        "bursts": {"type": "array", "items": _BURST},
        "background": {**_STRICT, "properties": {
            "days": {"type": "number", "exclusiveMinimum": 0, "maximum": 366},
            "seed": {"type": "integer"},
            "start": _INSTANT,
            "per_day": {"type": "integer", "minimum": 1, "maximum": MAX_GENERATED_LINES},
            "quiet": _QUIET}},
        "settings": {**_STRICT, "properties": {**SETTINGS_SCHEMA["properties"],
                                               **dict.fromkeys(_SET_BY_TEST, _SET_ITSELF)}},
        "expect": {**_STRICT, "minProperties": 1, "properties": {
            "output": {}, "incidents": {"type": "array", "items": {"type": "object"}}},
            "title": "a mapping with 'output' (a summary rule's value) or 'incidents' (a detector's)"},
    },
}
_CHECK = SchemaCheck(TEST_SCHEMA, shipped=True, written=True)  # finite numbers, whole integers


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
    #: Whether the rule is a detector (its findings are incidents) rather than a summary rule.
    detector: bool = False

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

    The settings file is read and checked as a run reads it, with ``overrides`` (a test's
    ``settings``) over it, and the rule is validated as ``--check`` validates it: a problem with
    any of them raises ``ConfigError``.
    """
    with tempfile.TemporaryDirectory(prefix="omp-rule-test-") as folder:
        data, output = Path(folder) / "data", Path(folder) / "output"
        data.mkdir()
        for name, content in files.items():
            (data / name).write_bytes(content)
        # A block of the test's settings (limits: {...}) goes over the file's value by value (load_settings).
        # Sample lines, in this process: never a Dask cluster the settings may name for runs.
        settings = load_settings(settings_path, {**(overrides or {}), "rules": [rule], "data_dir": str(data),
                                                 "output_dir": str(output), "include": ["*"], "exclude": [],
                                                 "executor": {"type": "threads"}})
        pm = get_plugin_manager(settings.plugins, search_path=settings.source.parent)
        rules = load_rules(settings, rule_types(pm))
        report = run_batch(settings, pm, rules, reset=True)
    return _outcome(report, rules[0])


def read_sample(path: str | Path) -> dict[str, bytes]:
    """``test-rule --sample``: the file's name and bytes, for ``run_rule``.

    Only a regular file of at most ``MAX_SAMPLE_BYTES`` is read, else ``DataDirError``: reading
    ``/dev/zero`` would never end, and opening a FIFO would wait for a writer.
    """
    try:
        with open_regular(path) as handle:
            too_big = os.fstat(handle.fileno()).st_size > MAX_SAMPLE_BYTES
            content = b"" if too_big else _read_at_most(handle, MAX_SAMPLE_BYTES + 1)  # it may grow meanwhile
    except OSError as exc:
        raise DataDirError(f"--sample: cannot read {path}: {exc.strerror or exc}") from None
    if too_big or len(content) > MAX_SAMPLE_BYTES:
        raise DataDirError(f"--sample: {path}: expected at most {MAX_SAMPLE_BYTES:,} bytes of sample lines, got "
                           f"more; hint: try the rule on a part of it (head -n 100000 {path} > sample.log)")
    return {Path(path).name: content}


def _read_at_most(handle: BinaryIO, size: int) -> bytes:
    # An unbuffered read may return fewer bytes than asked for before the end.
    chunks, left = [], size
    while left > 0 and (chunk := handle.read(left)):
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _outcome(report: RunReport, rule: Any) -> Outcome:
    summary = report.summary
    outcome = Outcome(rule.name, rule.type_name, rule.key, errors=summary["rule_errors"],
                      totals={k: summary["totals"][k] for k in ("lines", "records", "malformed", "blank")},
                      detector=rule.output == "anomalies")
    if outcome.detector:
        outcome.incidents = [i for i in report.anomalies["anomalies"] if i.get("rule") == rule.name]
    else:
        outcome.output = summary.get(rule.key)
        outcome.details = summary["details"].get(rule.key)
    return outcome


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
    where: str = ""  # file, number and name, the prefix of a problem's message


@dataclass
class TestResult:
    case: TestCase
    passed: bool
    seconds: float
    problems: list[str]
    found: Outcome | None = None


def load_tests(paths: list[Path]) -> list[TestCase]:
    """Every test in the files, in order, each checked whole before any runs.

    Every problem in them is reported at once (``ConfigError``), each naming its file, its test
    (number and name) and the field.
    """
    cases, problems = [], []
    for path in paths:
        entries, found = _read_tests(path)
        problems += found
        for index, entry in enumerate(entries, 1):
            where = f"{path}: test {index}" + (f" '{entry['name']}'" if _named(entry) else "")
            found = _entry_problems(entry)
            if found:
                problems += [f"{where}: {problem}" for problem in found]
                continue
            cases.append(TestCase(f"{path}:{index}", entry["name"], entry["rule"], entry.get("lines") or "",
                                  entry.get("bursts") or [], entry.get("background"), entry.get("settings") or {},
                                  entry["expect"], where))
    if problems:
        raise ConfigError(problems)
    return cases


def _read_tests(path: Path) -> tuple[list[Any], list[str]]:
    """A test file's entries, or why it cannot be read as a list of tests."""
    try:
        with open_regular(path) as handle:  # a FIFO named by mistake is refused, not waited on
            text = handle.read().decode("utf-8")
        entries = load_yaml(text)  # a date stays text: found values are JSON, so text too
    except FileNotFoundError:
        return [], [f"{path}: test file not found"]
    except OSError as exc:
        return [], [f"{path}: cannot read test file: {exc.strerror or exc}"]
    except UnicodeDecodeError as exc:
        return [], [f"{path}: cannot read test file: expected UTF-8 text, got byte 0x{exc.object[exc.start]:02x} "
                    f"at offset {exc.start}; hint: save it as UTF-8"]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return [], [f"{path}: not valid YAML: {where}{getattr(exc, 'problem', None) or exc}"]
    if not isinstance(entries, list):
        return [], [f"{path}: expected a list of tests, got {'nothing' if entries is None else type(entries).__name__}"]
    return entries, []


def _named(entry: Any) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("name"), str) and bool(entry["name"])


def _entry_problems(entry: Any) -> list[str]:
    """A test's problems: its fields against ``TEST_SCHEMA``; then what the schema cannot tell: its
    dates, how many lines it would generate, and the patterns of its settings."""
    problems = _CHECK.problems(entry)
    if problems:
        return problems
    background, bursts = entry.get("background"), entry.get("bursts") or []
    if background is not None:
        problems += _background_problems({**_BACKGROUND, **background})
    for index, burst in enumerate(bursts):
        problems += _burst_problems(f"bursts[{index}]", burst)
    generated = sum(burst["times"] for burst in bursts)
    if background is not None and not problems:
        generated += round(background.get("days", _BACKGROUND["days"])
                           * background.get("per_day", _BACKGROUND["per_day"]))
    if generated > MAX_GENERATED_LINES:
        problems.append(f"background, bursts: expected at most {MAX_GENERATED_LINES:,} lines generated a test, "
                        f"got about {generated:,} (background.days x per_day + bursts' times); hint: a test needs "
                        "only enough lines for its rule to decide")
    patterns = (entry.get("settings") or {}).get("redact", {}).get("patterns")
    return problems + [f"settings.{problem}" for problem in redact.pattern_problems(patterns)]


def _background_problems(background: dict[str, Any]) -> list[str]:
    start, why = _instant(background["start"])
    if start is None:
        return [f"background.start: expected {_INSTANT['title']}, got {background['start']!r}{why}"]
    if _past_the_last_day(start.astimezone(timezone.utc), background["days"] * 86400):
        return [f"background: expected days that end before the year 10000, got {background['days']} days from "
                f"{background['start']}"]
    quiet = background.get("quiet")
    return [] if quiet is None else _quiet_problems(quiet)


def _quiet_problems(quiet: dict[str, Any]) -> list[str]:
    begin, why = _instant(quiet["from"])
    if begin is None:
        return [f"background.quiet.from: expected {_INSTANT['title']}, got {quiet['from']!r}{why}"]
    if _past_the_last_day(begin, quiet["hours"] * 3600):
        return [f"background.quiet: expected hours that end before the year 10000, got {quiet['hours']} hours "
                f"from {quiet['from']}"]
    return []


def _burst_problems(where: str, burst: dict[str, Any]) -> list[str]:
    stamp = burst["line"].partition(" ")[0]
    first, why = _instant(stamp)
    if first is None:
        return [f"{where}.line: expected a log line that starts with its timestamp, such as "
                f"'2025-07-21T14:00:00Z ERROR PaymentService user{{i}} declined', got {burst['line']!r}{why}"]
    every = burst.get("every", "1s")
    if _past_the_last_day(first, (burst["times"] - 1) * _seconds(every)):
        return [f"{where}: expected times and every that end before the year 10000, got {burst['times']} lines "
                f"every {every} from {stamp}"]
    return []


def _instant(text: str) -> tuple[datetime | None, str]:
    """``text`` as an instant (``parse_start``), or None and why not ('' when it is no date at all)."""
    try:
        moment = parse_start(text)
        moment.astimezone(timezone.utc)  # a zone that takes it past the year 9999 fails here, not in the run
    except (ValueError, OverflowError) as exc:
        return None, "" if "isoformat" in str(exc) else f" ({exc})"  # fromisoformat's words repeat the text
    return moment, ""


def _past_the_last_day(start: datetime, seconds: float) -> bool:
    """Whether ``seconds`` from ``start`` end past the last instant a ``datetime`` holds."""
    try:
        start + timedelta(seconds=seconds)
    except OverflowError:
        return True
    return False


def run_test(settings_path: str | Path, case: TestCase) -> TestResult:
    """Run one test that ``load_tests`` checked; ``ConfigError`` naming it when it cannot run.

    It cannot when its rule is not defined or not valid, its settings do not fit the settings
    file's, or ``expect`` asks a summary rule for incidents or a detector for its output (a check
    that could never tell right from wrong). The settings file's own problems are every test's:
    they are reported as a run reports them.
    """
    started = time.perf_counter()
    try:
        if case.settings:
            _check_settings(settings_path, case.settings)
        found = run_rule(settings_path, case.rule, _inputs(case), case.settings)
    except ConfigError as exc:
        load_settings(settings_path)  # the file's own problems raise here, as in a run
        # load_rules says the rule is not defined as a run says it of settings' rules.
        enabled = f"{Path(settings_path).name}: rules: "
        raise ConfigError([f"{case.where}: " + (f"rule: {p.removeprefix(enabled)}" if p.startswith(enabled) else p)
                           for p in exc.problems]) from None
    mismatch = _expect_problem(case.expect, found)
    if mismatch:
        raise ConfigError([f"{case.where}: {mismatch}"])
    problems = [f"rule error in {e['phase']}: {e['error']}" for e in found.errors]
    if "output" in case.expect:
        problems += _compare("output", case.expect["output"], found.output)
    if "incidents" in case.expect:
        problems += _compare_incidents(case.expect["incidents"], found.incidents)
    return TestResult(case, not problems, time.perf_counter() - started, problems, found)


def _check_settings(settings_path: str | Path, overrides: dict[str, Any]) -> None:
    """``ConfigError`` if a test's settings, each valid alone (``TEST_SCHEMA``), do not fit the file's (a
    ``chunk_bytes`` no longer than its ``limits.max_line_bytes``): each problem named as the test's."""
    try:
        load_settings(settings_path, overrides)
    except ConfigError as exc:
        source = f"{Path(settings_path)}: "
        raise ConfigError([f"settings.{p.removeprefix(source)}" if p.startswith(source) else f"settings: {p}"
                           for p in exc.problems]) from None


def _inputs(case: TestCase) -> dict[str, bytes]:
    """The test's input files: its generated background, its own lines, its bursts."""
    files: dict[str, bytes] = {}
    if case.background is not None:
        spec = {**_BACKGROUND, **case.background}
        quiet = spec.get("quiet")
        if quiet is not None:
            begin = parse_start(quiet["from"])
            quiet = (quiet["service"], begin, begin + timedelta(hours=quiet["hours"]))
        traffic = background_lines(parse_start(spec["start"]), spec["days"], int(spec["per_day"]), int(spec["seed"]),
                                   quiet)
        files["0-background.log"] = "".join(line + "\n" for line in traffic).encode()
    if case.lines:
        files["1-lines.log"] = case.lines.encode()
    for n, burst in enumerate(case.bursts):
        repeated = burst_lines(burst["line"], int(burst["times"]), _seconds(burst.get("every", "1s")))
        files[f"2-burst-{n}.log"] = "".join(line + "\n" for line in repeated).encode()
    return files


def _expect_problem(expect: dict[str, Any], found: Outcome) -> str | None:
    """A summary rule has no incidents, and a detector no output: expecting them could never fail (or always)."""
    if found.detector and "output" in expect:
        return (f"expect.output: rule '{found.rule}' is a detector (type {found.type}): it finds incidents and has "
                "no output; hint: expect incidents")
    if not found.detector and "incidents" in expect:
        return (f"expect.incidents: rule '{found.rule}' is a summary rule (type {found.type}): it never finds "
                "incidents; hint: expect its output")
    return None


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
