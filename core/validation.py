"""JSON Schema checks built once and reported as plain sentences with their field path."""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import jsonschema
import polars as pl
import yaml
from jsonschema.exceptions import ValidationError

_TYPE_NAMES = {
    "integer": "integer",
    "number": "number",
    "string": "string",
    "boolean": "true or false",
    "array": "list",
    "object": "mapping",
    "null": "nothing",
}
#: The longest duration (``format: duration``) a parameter may take, in days: ten years is far
#: beyond any window, retention or realert period, and keeps every product the detectors make of
#: one (1,001 windows of history, say) far inside 64-bit microseconds.
MAX_DURATION_DAYS = 3650
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"([1-9][0-9]*)([smhd])")
#: The formats parameters are checked for (JSON Schema ``format``); any other format is not checked.
#: Each check raises ValueError saying what was expected, with why in brackets.
FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("regex", raises=ValueError)
def _is_regex(value: object) -> bool:
    # A regular expression as the engine runs it: Polars' (Rust's regex crate), which has no
    # look-around or backreferences and a size limit, so Python's ``re`` would pass some it refuses.
    if isinstance(value, str):
        try:
            pl.Series([""], dtype=pl.String).str.contains(value)
        except pl.exceptions.PolarsError as exc:
            raise ValueError(f"a regular expression Polars can run ({_regex_problem(str(exc))})") from None
    return True


def _regex_problem(message: str) -> str:
    """The line of a Polars regex error that says what is wrong (``error: unclosed group``)."""
    lines = [line.strip() for line in message.splitlines()]
    said = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return (said[0] if said else lines[0].removeprefix("regex error: ")).rstrip(".")


@FORMATS.checks("instant", raises=ValueError)
def _is_instant(value: object) -> bool:
    # The pattern beside the format checks the syntax; this, that the day exists (no 2025-02-30).
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"a date that exists, from year 0001 to 9999 ({exc})") from None
    return True


@FORMATS.checks("duration", raises=ValueError)
def _is_duration(value: object) -> bool:
    # The pattern beside the format checks the syntax; this, the length.
    written = _DURATION.fullmatch(value) if isinstance(value, str) else None
    longest = MAX_DURATION_DAYS * 86400
    if written and (len(written[1]) > len(str(longest)) or int(written[1]) * _UNIT_SECONDS[written[2]] > longest):
        raise ValueError(f"a duration of at most {MAX_DURATION_DAYS}d (ten years)")
    return True


class _TextDates(yaml.SafeLoader):
    """``yaml.safe_load``, but a date or a time stays the text written (see ``load_yaml``)."""


_TextDates.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(text: str) -> Any:
    """What a person wrote in YAML (settings, rule files, rule tests), safely: a date or a time stays
    the text written. The schemas take dates as text (``format: instant``), and YAML's own dates
    would turn ``min_time: 2025-07-21`` into a date object they refuse, and ``2025-02-30`` into
    an error that names no field."""
    return yaml.load(text, Loader=_TextDates)  # a SafeLoader


class SchemaCheck:
    """A JSON Schema validator built once (after ``check_schema``) and reused for every check.

    ``shipped`` marks the project's own schemas (settings, outputs, the default plugins' rule
    types): the tests check them against the metaschema, so a start does not (that was a third of
    the time spent building checks, and then 0.19 s of every run's start for the rule types).
    Another plugin's schema is checked the first time it is seen in the process.

    ``written`` marks a check of what a person wrote (settings, rule parameters): there an integer
    is written without a fraction (``2``, not ``2.0``, which code expecting an int chokes on) and a
    number is finite (``.nan`` passes every ``minimum``). JSON Schema itself allows both.
    """

    def __init__(self, schema: dict[str, Any], *, shipped: bool = False, lists: tuple[str, ...] = (),
                 written: bool = False) -> None:
        cls = jsonschema.validators.validator_for(schema)
        if not shipped:
            _check_schema(cls, schema)
        self.schema = schema
        self._validator = (_as_written(cls) if written else cls)(schema, format_checker=FORMATS)
        #: Top-level lists whose items are checked one by one, and an item already checked (the same
        #: JSON) is not checked again: summary.json lists the same 100 files at every commit of a
        #: watcher, with thousands of samples, and checking them all took most of a commit.
        self._lists = {name: ListCheck(self._validator.evolve(schema=schema["properties"][name]["items"]))
                       for name in lists}

    def problems(self, instance: Any) -> list[str]:
        """Every violation of the schema, each as ``path: what was expected, what was found``."""
        lists = {name: instance[name] for name in self._lists
                 if isinstance(instance, dict) and isinstance(instance.get(name), list)}
        rest = {**instance, **{name: [] for name in lists}} if lists else instance
        leaves = _once(_leaves(self._validator.iter_errors(rest)))
        errors = [(list(map(str, e.absolute_path)), describe(e)) for e in leaves]
        for name, items in lists.items():
            errors += self._lists[name].problems(name, items)
        return [problem for _, problem in sorted(errors, key=lambda pair: pair[0])]


class ListCheck:
    """Checks a list's items against the items' schema, remembering the items of the last call that passed."""

    def __init__(self, validator: Any) -> None:
        self._validator = validator
        self._passed: set[str] = set()

    def problems(self, name: str, items: list[Any]) -> list[tuple[list[str], str]]:
        found: list[tuple[list[str], str]] = []
        passed: set[str] = set()
        for index, item in enumerate(items):
            try:
                key = json.dumps(item, allow_nan=False)
            except (TypeError, ValueError):  # not plain JSON: checked every time, and found wrong
                key = None
            if key is not None and key in self._passed:
                passed.add(key)
                continue
            errors = list(_leaves(self._validator.iter_errors(item)))
            for error in errors:
                path = [name, index, *error.absolute_path]
                found.append((list(map(str, path)), describe(error, path)))
            if not errors and key is not None:
                passed.add(key)
        self._passed = passed  # bounded by the list's length
        return found


#: Whole numbers a person may write: what a 64-bit integer holds, as Polars and the compiled modules take them.
_INT64 = range(-(2**63), 2**63)


@functools.cache
def _as_written(cls: Any) -> Any:
    """``cls`` with integers that are ints (not 2.0) of 64 bits, and numbers that are finite (not nan or inf)."""
    types = cls.TYPE_CHECKER
    return jsonschema.validators.extend(cls, type_checker=types.redefine_many({
        "integer": lambda _, value: isinstance(value, int) and types.is_type(value, "integer") and value in _INT64,
        "number": lambda _, value: types.is_type(value, "number") and _finite(value),
    }))


def _finite(value: float) -> bool:
    return value in _INT64 if isinstance(value, int) else math.isfinite(value)


#: Of a value's errors, only those of the lowest rank are reported: a value that is not a number
#: is not also below the minimum, a duration that is no duration is not also too long.
_RANK = {"type": 0, "format": 2}


def _once(errors: Iterable[ValidationError]) -> list[ValidationError]:
    """The errors, less those a more basic error on the same value makes moot (see ``_RANK``)."""
    errors = list(errors)
    best: dict[tuple[Any, ...], int] = {}
    for error in errors:
        path = tuple(error.absolute_path)
        best[path] = min(best.get(path, 2), _RANK.get(error.validator, 1))
    return [e for e in errors if _RANK.get(e.validator, 1) == best[tuple(e.absolute_path)]]


_CHECKED: set[str] = set()


def _check_schema(cls: Any, schema: dict[str, Any]) -> None:
    # The six detectors share one result schema: it is checked once.
    text = json.dumps(schema, sort_keys=True, default=str)
    if text not in _CHECKED:
        cls.check_schema(schema)
        _CHECKED.add(text)


def _leaves(errors: Iterable[ValidationError]) -> Iterable[ValidationError]:
    # anyOf/oneOf errors say little; their best sub-error says what is wrong. A branch the value is
    # not even the type of says the least: a duration that is too long is not "expected nothing".
    for error in errors:
        if error.context:
            depth = len(error.absolute_path)
            fitting = [e for e in error.context if e.validator != "type" or len(e.absolute_path) != depth]
            yield jsonschema.exceptions.best_match(fitting or error.context)
        else:
            yield error


def field_path(parts: Iterable[Any]) -> str:
    """Render a JSON path such as ``limits.max_line_bytes`` or ``rules[2]``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def describe(error: ValidationError, path: Iterable[Any] | None = None) -> str:
    """One sentence for one schema violation, prefixed with its field path (``path``, or the error's) if it has one."""
    where = field_path(error.absolute_path if path is None else path)
    what = _what(error)
    return f"{where}: {what}" if where else what


def _what(error: ValidationError) -> str:
    kind = error.validator
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"missing required field '{missing}'"
    if kind == "additionalProperties":
        return _unknown_keys(error)
    if kind in {"minItems", "maxItems", "uniqueItems"}:
        return f"{error.message}"
    if kind == "format" and error.cause is not None:
        return f"expected {error.cause}, got {found(error.instance)}"
    if kind == "type" and isinstance(error.instance, float):
        if not math.isfinite(error.instance):
            return f"expected a finite {expected(error.schema)}, got {found(error.instance)}"
        if error.instance.is_integer():
            return f"expected {expected(error.schema)}, written without a decimal point, got {found(error.instance)}"
    if kind == "type" and isinstance(error.instance, int) and error.instance not in _INT64:
        return f"expected {expected(error.schema)} that fits in 64 bits (-2**63 to 2**63 - 1), got {error.instance}"
    return f"expected {expected(error.schema)}, got {found(error.instance)}"


def _unknown_keys(error: ValidationError) -> str:
    known = sorted(error.schema.get("properties", {}))
    extra = sorted(set(error.instance) - set(known))
    parts = []
    for key in extra:
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        parts.append(f"unknown field '{key}'{hint}")
    return "; ".join(parts) + f"; known fields: {', '.join(known)}"


def expected(schema: dict[str, Any]) -> str:
    """Describe what a schema accepts, e.g. ``integer >= 1`` or ``one of 'a', 'b'``; its ``title`` if it has one."""
    if "title" in schema:  # a schema for a value with a syntax of its own says it in words (a duration)
        return str(schema["title"])
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    kinds = schema.get("type", "value")
    text = " or ".join(_TYPE_NAMES.get(k, k) for k in ([kinds] if isinstance(kinds, str) else kinds))
    bounds = [
        (">=", schema.get("minimum")),
        (">", schema.get("exclusiveMinimum")),
        ("<=", schema.get("maximum")),
        ("<", schema.get("exclusiveMaximum")),
    ]
    text += "".join(f" {op} {value}" for op, value in bounds if value is not None)
    if "minLength" in schema:
        text += f" of at least {schema['minLength']} character(s)"
    if "pattern" in schema:
        text += f" matching {schema['pattern']}"
    if "format" in schema:
        text += f" in {schema['format']} format"
    return text


def found(instance: Any) -> str:
    """Show the offending value the way the user wrote it."""
    if isinstance(instance, (dict, list)):
        text = repr(instance)
        return text if len(text) <= 60 else text[:57] + "..."
    if instance is None:
        return "nothing"
    return repr(instance)
