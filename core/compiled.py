"""Loading the compiled modules (``core/_scan.c``, ``core/_tally.c``), and the columns they make."""

from __future__ import annotations

import importlib
from types import ModuleType

import polars as pl

from core.columns import ArrowColumn

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


def series(columns: tuple[tuple[object, object], ...]) -> list[pl.Series]:
    """A compiled module's columns, each an (arrow_schema, arrow_array) pair of capsules, as Series."""
    return [pl.Series(ArrowColumn(column)) for column in columns]
