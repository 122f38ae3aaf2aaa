"""JSON Schema checks built once and reported as plain sentences with their field path."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from typing import Any

import jsonschema
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


class SchemaCheck:
    """A JSON Schema validator built once (after ``check_schema``) and reused for every check.

    ``shipped`` marks the project's own schemas (settings, outputs, the default plugins' rule
    types): the tests check them against the metaschema, so a start does not (that was a third of
    the time spent building checks, and then 0.19 s of every run's start for the rule types).
    Another plugin's schema is checked the first time it is seen in the process.
    """

    def __init__(self, schema: dict[str, Any], *, shipped: bool = False, lists: tuple[str, ...] = ()) -> None:
        cls = jsonschema.validators.validator_for(schema)
        if not shipped:
            _check_schema(cls, schema)
        self.schema = schema
        self._validator = cls(schema)
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
        errors = [(list(map(str, e.absolute_path)), describe(e)) for e in _leaves(self._validator.iter_errors(rest))]
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


_CHECKED: set[str] = set()


def _check_schema(cls: Any, schema: dict[str, Any]) -> None:
    # The six detectors share one result schema: it is checked once.
    text = json.dumps(schema, sort_keys=True, default=str)
    if text not in _CHECKED:
        cls.check_schema(schema)
        _CHECKED.add(text)


def _leaves(errors: Iterable[ValidationError]) -> Iterable[ValidationError]:
    # anyOf/oneOf errors say little; their best sub-error says what is wrong.
    for error in errors:
        if error.context:
            yield jsonschema.exceptions.best_match(error.context)
        else:
            yield error


def field_path(parts: Iterable[Any]) -> str:
    """Render a JSON path such as ``limits.max_line_bytes`` or ``rules[2]``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def describe(error: ValidationError, path: Iterable[Any] | None = None) -> str:
    """One sentence for one schema violation, prefixed with its field path (``path``, or the error's) when there is one."""
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
