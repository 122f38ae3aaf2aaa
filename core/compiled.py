"""Loading the compiled modules (``core/_scan.c``, ``core/_tally.c``) or their pure Python stand-ins.

A C compiler is optional: where a compiled module is not built (or is a stale build), its
stand-in in ``core/fallback/`` runs instead, with the same functions and the same results, only
slower. ``OMP_NO_COMPILED=1`` chooses the stand-ins even where the builds are there.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from types import ModuleType

import polars as pl

from core.columns import ModuleColumn, as_series

log = logging.getLogger(__name__)

#: The environment variable that makes every module load its pure Python stand-in.
NO_COMPILED = "OMP_NO_COMPILED"
#: How many times longer a run takes on the pure Python path: runpipeline with the shipped
#: settings on bench/generate.py's 1M lines, 2 CPUs, 3.5 s against 0.53 s (the run's own time,
#: medians of 6; with the start-up, 4.3 s against 1.2 s). With only the scan's and the tally's
#: stand-ins, 2.6 s; with only the counts', 1.4 s. README, "Without a C compiler".
SLOWDOWN = 7

# Why each module that runs its stand-in does, by module name. Per process, as imports are:
# the warning at the start of a run and summary.json's run block read it.
_STAND_INS: dict[str, str] = {}


def load(name: str, version: int, what: str) -> ModuleType:
    """``core.<name>``, built from ``core/<name>.c``, or its stand-in ``core.fallback.<name>``.

    The stand-in runs when ``OMP_NO_COMPILED=1`` is set, or when the build is missing or of
    another ``version``. A stand-in of another version is a bug here, and raises ImportError
    (its message starts with ``core.<name>``, so that the CLI prints it without a traceback).
    """
    if os.environ.get(NO_COMPILED, "") not in ("", "0"):
        return _stand_in(name, version, f"{NO_COMPILED} is set")
    try:
        module = importlib.import_module(f"core.{name}")
    except ImportError:
        return _stand_in(name, version, "not built")
    if getattr(module, "VERSION", None) != version:
        return _stand_in(name, version, "a stale build")
    log.debug("core.%s: %s, compiled", name, what)
    return module


def _stand_in(name: str, version: int, why: str) -> ModuleType:
    module = importlib.import_module(f"core.fallback.{name}")
    if getattr(module, "VERSION", None) != version:
        raise ImportError(f"core.{name}: its stand-in core/fallback/{name}.py is of version {module.VERSION}, "
                          f"the Python code expects {version}")
    _STAND_INS[f"core.{name}"] = why
    return module


def all_compiled() -> bool:
    """Whether every module loaded so far is its compiled build (``run.compiled`` in summary.json)."""
    return not _STAND_INS


@functools.cache  # once per process: a watcher starts many runs, and the cost is the same for each
def warn_if_pure_python() -> None:
    """Log, once, that the pure Python path runs instead of the compiled modules, and what it costs."""
    if not _STAND_INS:
        return
    cost = f"running the pure Python path, about {SLOWDOWN} x slower"
    missing = [name for name, why in sorted(_STAND_INS.items()) if why == "not built"]
    stale = [name for name, why in sorted(_STAND_INS.items()) if why == "a stale build"]
    if not missing and not stale:
        log.warning("%s=1 is set: %s; unset it to use the compiled modules", NO_COMPILED, cost)
        return
    what = " and ".join(
        (["not built (no C compiler?)"] if missing else []) + ([f"out of date ({', '.join(stale)})"] if stale else []))
    remedy = ("install a C compiler and run `make run` again to build them" if missing
              else "run `make run` again to rebuild them")
    log.warning("compiled modules %s: %s; %s", what, cost, remedy)


def series(columns: tuple[ModuleColumn, ...]) -> list[pl.Series]:
    """A module's columns, each an (arrow_schema, arrow_array) pair of capsules or a Series, as Series."""
    return [as_series(column) for column in columns]
