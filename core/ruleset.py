"""Load the named rules from ``rules/*.yaml``, validate each against its type, and pick the enabled ones."""

from __future__ import annotations

import difflib
import glob
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError
from core.plugins import shipped
from core.rules import Rule
from core.settings import Settings
from core.validation import SchemaCheck, found, load_yaml

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_COMMON = ("name", "type", "key")
#: Top-level keys of summary.json that the engine itself writes; rules may not take them.
RESERVED_KEYS = frozenset(
    {"details", "totals", "files", "malformed_samples", "rule_errors", "file_errors", "omitted", "run", "rules"}
)


@dataclass(frozen=True)
class RuleDef:
    """A rule as written in a rule file, before it is checked."""

    source: str
    name: str
    type: str
    key: str
    params: dict[str, Any]


def load_rules(settings: Settings, types: dict[str, type[Rule]]) -> list[Rule]:
    """The enabled rules, in the order ``settings.rules`` lists them; every problem is reported at once."""
    defs, unread, problems = _read_rule_files(settings)
    checks = {name: SchemaCheck(cls.params_schema, shipped=shipped(cls), written=True) for name, cls in types.items()}
    rules: dict[str, Rule] = {}
    for rule_def in defs.values():
        rule, found_problems = _build(rule_def, types, checks)
        problems += found_problems
        if rule is not None:
            rules[rule.name] = rule
    problems += _check_enabled(settings, defs, unread)
    problems += _key_problems([defs[name] for name in settings.rules if name in defs], types)
    if problems:
        raise ConfigError(problems)
    return [rules[name] for name in settings.rules]


def _rule_files(settings: Settings) -> tuple[list[Path], list[str]]:
    """The rule files, in order; a file named without a wildcard must exist (a pattern may match nothing)."""
    base = settings.source.parent
    paths: list[Path] = []
    problems = []
    for pattern in settings.rule_files:
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        found = sorted(glob.glob(full))
        if not found and not glob.has_magic(pattern):
            problems.append(
                f"{settings.source.name}: rule_files: '{pattern}': no such file; hint: fix the name, or remove it "
                "from rule_files (a pattern such as rules/*.yaml may match nothing)"
            )
        paths.extend(Path(p) for p in found if Path(p) not in paths)
    return paths, problems


def _display(path: Path, settings: Settings) -> str:
    try:
        return str(path.relative_to(settings.source.parent))
    except ValueError:
        return str(path)


def _read_rule_files(settings: Settings) -> tuple[dict[str, RuleDef], list[Path], list[str]]:
    """The rules defined, by name; the rule files that could not be read; and the problems found."""
    defs: dict[str, RuleDef] = {}
    paths, problems = _rule_files(settings)
    unread = []
    for path in paths:
        source = _display(path, settings)
        entries, file_problems = _entries(path, source)
        problems += file_problems
        if file_problems and not entries:
            unread.append(path)
        for index, entry in enumerate(entries):
            rule_def, entry_problems = _rule_def(source, index, entry)
            problems += entry_problems
            if rule_def is None:
                continue
            if rule_def.name in defs:
                problems.append(
                    f"{source}: rule '{rule_def.name}': name already used in {defs[rule_def.name].source}; "
                    "hint: rule names must be unique across all rule files"
                )
                continue
            defs[rule_def.name] = rule_def
    return defs, unread, problems


def _entries(path: Path, source: str) -> tuple[list[Any], list[str]]:
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"{source}: cannot read rule file: {exc}"]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        return [], [f"{source}: not valid YAML: {where}{getattr(exc, 'problem', None) or exc}"]
    if data is None:
        return [], []
    if isinstance(data, dict) and set(data) == {"rules"}:
        data = data["rules"]
    if not isinstance(data, list):
        return [], [f"{source}: expected a list of rules (or 'rules:' holding one), got {type(data).__name__}"]
    return data, []


def _rule_def(source: str, index: int, entry: Any) -> tuple[RuleDef | None, list[str]]:
    where = f"{source}: rule #{index + 1}"
    if not isinstance(entry, dict):
        return None, [f"{where}: expected a mapping with 'name' and 'type', got {found(entry)}"]
    name, kind = entry.get("name"), entry.get("type")
    problems = []
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        problems.append(f"{where}: name: expected a name of letters, digits, '-', '_' or '.', got {found(name)}")
    else:
        where = f"{source}: rule '{name}'"
    if not isinstance(kind, str) or not kind:
        problems.append(f"{where}: type: expected a rule type name, got {found(kind)}")
    key = entry.get("key", name.replace("-", "_").replace(".", "_") if isinstance(name, str) else None)
    if not isinstance(key, str) or not _KEY.fullmatch(key) or key in RESERVED_KEYS:
        problems.append(
            f"{where}: key: expected an identifier that is not one of {', '.join(sorted(RESERVED_KEYS))}, "
            f"got {found(key)}; hint: an identifier here is ASCII letters, digits and '_', not starting with a digit "
            "(the key is a JSON key of the output, easy to reach from jq or code)"
        )
    if problems:
        return None, problems
    params = {k: v for k, v in entry.items() if k not in _COMMON}
    return RuleDef(source, name, kind, key, params), []


def _build(
    rule_def: RuleDef, types: dict[str, type[Rule]], checks: dict[str, SchemaCheck]
) -> tuple[Rule | None, list[str]]:
    where = f"{rule_def.source}: rule '{rule_def.name}'"
    cls = types.get(rule_def.type)
    if cls is None:
        close = difflib.get_close_matches(rule_def.type, list(types), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        known = ", ".join(sorted(types))
        return None, [f"{where}: type: unknown rule type '{rule_def.type}'{hint}; known types: {known}"]
    problems = [f"{where}: {p}" for p in checks[rule_def.type].problems(rule_def.params)]
    if problems:
        return None, problems
    try:
        rule = cls(rule_def.name, key=rule_def.key, **rule_def.params)
    except (TypeError, ValueError) as exc:  # by convention, setup's word on its parameters
        return None, [f"{where}: {exc}"]
    except Exception as exc:  # a plugin's bug: a run goes on without this rule (core.guard), --check says so
        error = f"{type(exc).__name__}: {exc}"
        return cls.failed_setup(rule_def.name, key=rule_def.key, error=error, **rule_def.params), []
    return rule, []


def _check_enabled(settings: Settings, defs: dict[str, RuleDef], unread: list[Path]) -> list[str]:
    # A rule named in a file that could not be read (a YAML error) is not also "unknown": the file's
    # own problem is the one to fix. Its names are found in its text as written.
    named = {m.group(1) for path in unread for m in _NAMED.finditer(_text(path))}
    problems = []
    for name in settings.rules:
        if name not in defs and name not in named:
            close = difflib.get_close_matches(name, list(defs), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            known = ", ".join(sorted(defs)) or "none"
            problems.append(f"{settings.source.name}: rules: unknown rule '{name}'{hint}; defined rules: {known}")
    return problems


_NAMED = re.compile(r"""\bname\s*:\s*["']?([A-Za-z0-9][A-Za-z0-9_.-]*)""")


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _key_problems(enabled: list[RuleDef], types: dict[str, type[Rule]]) -> list[str]:
    """Two enabled rules that would write the same key of the same output (a rule of an unknown type is
    reported as such)."""
    owners: dict[tuple[str, str], RuleDef] = {}
    problems = []
    for rule_def in enabled:
        if rule_def.type not in types:
            continue
        slot = (types[rule_def.type].output, rule_def.key)
        if slot in owners:
            first = owners[slot]
            problems.append(
                f"{rule_def.source}: rule '{rule_def.name}': key: '{rule_def.key}' is already written by rule "
                f"'{first.name}' ({first.source}); hint: set a different 'key:' on one of them"
            )
        else:
            owners[slot] = rule_def
    return problems
