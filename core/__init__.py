"""Oh My Payments engine: reading, parsing, plugins, rules, outputs and the CLI."""

from __future__ import annotations

from core.hookspecs import hookimpl
from core.rules import Result, Rule

__version__ = "0.1.0"

__all__ = ["Result", "Rule", "__version__", "hookimpl"]
