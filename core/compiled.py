"""The compiled modules (``core/_scan.c``, ``core/_tally.c``) and the Arrow columns they trade with Polars."""

from __future__ import annotations

import importlib
from types import ModuleType

import polars as pl

_REBUILD = "run `make run` (or `pip install -e .`; it needs a C compiler) to build it"


def load(name: str, version: int, what: str) -> ModuleType:
    """Import ``core.<name>``, built from ``core/<name>.c``, refusing a missing or stale build.

    The error message starts with ``core.<name>``, so that the CLI can print it without a traceback.
    """
    try:
        module = importlib.import_module(f"core.{name}")
    except ImportError as exc:
        raise ImportError(f"core.{name}, {what}, is not built: {_REBUILD}") from exc
    if getattr(module, "VERSION", None) != version:
        raise ImportError(f"core.{name} is a build of another version than the Python code: {_REBUILD} again")
    return module


class ArrowColumn:
    """A column a compiled module made, for Polars to take through the Arrow PyCapsule interface."""

    def __init__(self, capsules: tuple[object, object]) -> None:
        self.capsules = capsules

    def __arrow_c_array__(self, requested_schema: object | None = None) -> tuple[object, object]:
        return self.capsules


def series(columns: tuple[tuple[object, object], ...]) -> list[pl.Series]:
    """A compiled module's columns, each an (arrow_schema, arrow_array) pair of capsules, as Series."""
    return [pl.Series(ArrowColumn(column)) for column in columns]
