"""Assemble the output documents, check them against their schemas, and write them atomically."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO, Callable

from core import guard
from core.errors import OutputValidationError
from core.plugins import shipped
from core.redact import Redactor
from core.rules import Result, Rule
from core.state import RunState
from core.stats import FileStats, FileTotals
from core.validation import SchemaCheck

log = logging.getLogger(__name__)

@cache
def output_schema(name: str) -> SchemaCheck:
    """The shipped schema ``core/schemas/<name>.schema.json``, built once."""
    text = resources.files("core").joinpath("schemas", f"{name}.schema.json").read_text(encoding="utf-8")
    # The lists that summary.json repeats at every commit of a watcher: each item is checked once.
    lists = ("files", "malformed_samples") if name == "summary" else ()
    return SchemaCheck(json.loads(text), shipped=True, lists=lists)


@cache
def _result_check(cls: type[Rule]) -> SchemaCheck | None:
    return SchemaCheck(cls.result_schema, shipped=shipped(cls)) if cls.result_schema else None


def _result(rule: Rule) -> Result:
    """``rule.result()``, checked: a ``Result`` whose value fits the rule type's ``result_schema`` and is
    JSON (no NaN, no set). Anything else raises, and so fails this rule alone (``guard.call_rule``):
    a plugin's bad value must not stop the outputs of every other rule, nor a watcher for good."""
    result = rule.result()
    if not isinstance(result, Result):
        raise TypeError(f"result() returned {type(result).__name__}, expected core.Result(value, detail)")
    check = _result_check(type(rule))
    found = check.problems(result.value) if check else []
    if found:
        raise ValueError(f"result's value does not fit the type's result_schema: {'; '.join(found[:3])}")
    try:
        json.dumps(result, allow_nan=False, default=_refuse)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"result is not JSON ({exc})") from None
    return result


def _refuse(value: Any) -> Any:
    raise TypeError(f"a {type(value).__name__} is not JSON")


def rule_results(
    state: RunState, rules: list[Rule], output: str = "summary"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each rule's value and detail by key, each checked against its rule type's schema."""
    values: dict[str, Any] = {}
    details: dict[str, Any] = {}
    failed = state.failed_rules()
    wanted = [rule for rule in rules if rule.output == output and rule.name not in failed]
    # Side by side: a detector's result judges its open windows (on 2 CPUs, the anomalies of a
    # 10M-line heavy-tailed run took 0.21 s instead of 0.34 s).
    held = [state.rules[rule.name] for rule in wanted]
    for rule, result in zip(wanted, guard.call_each(state.failures, held, "result", "", _result), strict=True):
        if result is guard.FAILED:
            continue
        values[rule.key] = result.value
        if result.detail is not None:
            details[rule.key] = result.detail
    return values, details


def build_anomalies(state: RunState, rules: list[Rule], generated_at: str) -> dict[str, Any]:
    """The ``anomalies.json`` document: every detector's incidents, stamped, most severe first.

    A detector returns its listed incidents, and in its detail how many it found, listed and
    suppressed; the engine adds ``rule``, ``type`` and an ``id`` derived from the rule, key and
    start, so the same incident is never listed twice.
    """
    detectors = [rule for rule in rules if rule.output == "anomalies"]
    values, details = rule_results(state, detectors, "anomalies")
    found: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    per_rule: dict[str, dict[str, Any]] = {}
    for rule in detectors:
        listed = values.get(rule.key, [])
        counts[rule.name] = len(listed)
        told = (details.get(rule.key) or {}).get("incidents", {}) if isinstance(details.get(rule.key), dict) else {}
        per_rule[rule.name] = {"type": rule.type_name, "found": told.get("found", len(listed)),
                               "listed": len(listed), "suppressed": told.get("suppressed", 0)}
        for anomaly in listed:
            stamped = {"id": anomaly_id(rule.name, anomaly), "rule": rule.name, "type": rule.type_name, **anomaly}
            found[stamped["id"]] = stamped
    ordered = sorted(found.values(), key=_severity_order)
    names = {rule.name for rule in detectors}
    return {
        "generated_at": generated_at,
        "counts": counts,
        "rules": per_rule,
        "rule_errors": [f.as_dict() for f in state.rule_failures() if f.rule in names],
        "anomalies": ordered,
    }


_LEVELS = ("critical", "high", "medium", "low")


def _severity_order(incident: dict[str, Any]) -> tuple[Any, ...]:
    """Most severe first, then the highest score; ties in a stable order."""
    level = _LEVELS.index(incident["severity"]) if incident.get("severity") in _LEVELS else len(_LEVELS)
    return (level, -(incident.get("score") or 0.0), incident["rule"], incident["key"],
            incident.get("window_start") or "", incident["id"])


def anomaly_id(rule: str, anomaly: dict[str, Any]) -> str:
    """``rule:key@window_start`` (or ``rule:key`` for anomalies with no window)."""
    window = anomaly.get("window_start")
    return f"{rule}:{anomaly.get('key', '')}" + (f"@{window}" if window else "")


def _join(problem: str) -> str:
    # Schema problems on the value itself have no path; nested ones start with theirs.
    if problem.startswith("expected") or problem.startswith("missing") or problem.startswith("unknown"):
        return f": {problem}"
    return f"{'' if problem.startswith('[') else '.'}{problem}"


def build_summary(
    state: RunState, rules: list[Rule], run: dict[str, Any], redactor: Redactor | None = None,
    listed: int | None = None,
) -> dict[str, Any]:
    """The whole ``summary.json`` document: rule results first, then the engine's own accounting.

    ``redactor`` masks the malformed lines' samples (by default, card numbers and e-mail addresses).
    ``files`` lists the files in ``state.files`` (the most recently counted, see
    ``RunState.keep_recent_files``) and ``totals`` adds the files folded before them; ``file_errors``
    lists at most ``listed`` errors. ``omitted`` says how many of each are not listed.
    """
    # Here, not at the top: core.cli imports this module before the compiled parser, so that a
    # stale build of the parser is reported without a traceback (tests/test_cli.py).
    from core.parse import SAMPLE_CHARS

    values, details = rule_results(state, rules)
    files = [state.files[name] for name in sorted(state.files)]
    redactor = redactor or Redactor()
    # A sample is cut at SAMPLE_CHARS characters: digits at its end may be a card number's start.
    samples = [
        {"file": f.path, "line": s.line, "reason": s.reason,
         "text": redactor.redact(s.text, cut=len(s.text) >= SAMPLE_CHARS)}
        for f in files for s in f.samples
    ]
    file_errors = sorted(f for f in state.failures if f.kind == "file")
    shown_errors = file_errors if listed is None else file_errors[:listed]
    return {
        **values,
        "details": details,
        "totals": _totals(state, files),
        "files": [f.as_dict() for f in files],
        "malformed_samples": samples,
        "rule_errors": [f.as_dict() for f in state.plugin_failures()],
        "file_errors": [f.as_dict() for f in shown_errors],
        "omitted": {"files": state.earlier.files, "file_errors": len(file_errors) - len(shown_errors)},
        "rules": {rule.name: _rule_entry(state, rule) for rule in rules},
        "run": run,
    }


def _totals(state: RunState, files: list[FileStats]) -> dict[str, Any]:
    """Every file counted: those listed, and those folded into ``state.earlier`` before them."""
    totals = FileTotals()
    totals.merge(state.earlier)
    for stats in files:
        totals.fold(stats)
    return {**{name: getattr(totals, name) for name in ("lines", "records", "blank", "malformed", "bytes")},
            "files": totals.files, "malformed_reasons": dict(sorted(totals.reasons.items()))}


def _rule_entry(state: RunState, rule: Rule) -> dict[str, Any]:
    """A rule's entry in summary.json's ``rules``: its type and key, and how its state degraded to
    stay within its share of ``limits.memory_mb`` (``Rule.degraded``; null while exact)."""
    entry: dict[str, Any] = {"type": rule.type_name, "key": rule.key, "degraded": None}
    held = state.rules.get(rule.name)
    if held is not None:
        try:
            entry["degraded"] = held.degraded()
        except Exception as exc:  # noqa: BLE001  (a plugin's bug must not lose the outputs)
            log.warning("rule '%s': cannot say how its state degraded: %s: %s", rule.name, type(exc).__name__, exc)
    return entry


#: A state past this many times its share is warned about: a degraded one stays within about twice it.
OVER_SHARE = 2
#: The rules warned about in this process (a watcher says it once, not at every commit).
_WARNED: set[str] = set()


def state_memory(state: RunState) -> dict[str, dict[str, Any]]:
    """Each rule's state memory for summary.json's ``run.rule_state`` (see ``Rule.state_report``).

    A state that grew past ``OVER_SHARE`` times its share is warned about, once per process: it has
    no degraded mode for what it holds (the seasonal detectors' per-key histories, keys of many
    kilobytes), and the process may pass ``limits.memory_mb`` (README, "Limit, measured").
    """
    report = {}
    for name, rule in state.rules.items():
        try:
            report[name] = rule.state_report()
        except Exception as exc:  # noqa: BLE001  (a plugin's bug must not lose the outputs)
            log.warning("rule '%s': cannot report its state's memory: %s: %s", name, type(exc).__name__, exc)
            continue
        peak, share = report[name].get("peak_bytes") or 0, report[name].get("limit_bytes") or 0
        if share and peak > OVER_SHARE * share and name not in _WARNED:
            _WARNED.add(name)
            log.warning("rule '%s': its state reached %.1f MB, %.0f times its %.1f MB share of limits.memory_mb; "
                        "it has no degraded mode for this data (many keys, or very long ones), so the process may "
                        "pass the cap", name, peak / 1e6, peak / share, share / 1e6)
    return report


def check_output(document: Any, schema: str) -> None:
    """Raise ``OutputValidationError`` with every JSON path that breaks the shipped schema."""
    problems = output_schema(schema).problems(document)
    if problems:
        raise OutputValidationError(f"{schema}.json", problems)


def write_validated(path: Path, document: Any, schema: str) -> None:
    """Check ``document`` against the shipped schema, then write it atomically; never a bad file."""
    check_output(document, schema)
    write_checked(path, document)


def write_checked(path: Path, document: Any) -> None:
    """Write a document already checked (``check_output``) atomically, as JSON."""
    atomic_write_text(path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, text.encode("utf-8"), shared=True)


def atomic_write(path: Path, data: bytes | Callable[[BinaryIO], None], *, shared: bool = False) -> None:
    """Write through a temp file in the same folder, fsync, then ``os.replace``: readers see old or new.

    ``data`` is the bytes, or a function that writes them to the open file (a checkpoint is
    written straight into it: as bytes first, it was held twice at the end of a run).
    ``shared`` files get the usual permissions (0666 less the umask) rather than the temp file's
    0600, so that other users can read the outputs.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if shared:
            os.fchmod(handle, 0o666 & ~_UMASK)
        with os.fdopen(handle, "wb") as out:
            if callable(data):
                data(out)
            else:
                out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _read_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it; done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
