"""``runpipeline``: the command line. The only place that prints and chooses exit codes.

Importing this module changes nothing in the process: ``main`` first makes the process-wide
settings (allocators, thread pools), which must come before Polars is loaded, then runs the
command (``core.command``).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``runpipeline`` with ``argv`` (the process's arguments by default); returns the exit code."""
    configure_process()
    from core.command import main as command

    return command(argv)


def configure_process() -> None:
    """The process-wide settings the engine runs best with; a value the user set is kept.

    They take effect only when made before Polars (and numpy) are loaded: a process that loaded
    them already (tests calling ``main``) keeps what it has.
    """
    # Polars allocates through its own jemalloc, which by default keeps freed pages for 10 s: under
    # the churn of chunk after chunk that is up to a hundred MB more RSS. Two arenas, a purging thread
    # and a 0.3 s decay hold peak RSS to what is live, at no measured cost in speed (docs/scaling.md).
    # jemalloc reads this when Polars is loaded, so it is set before anything imports Polars; a value
    # the user set is kept.
    os.environ.setdefault("_RJEM_MALLOC_CONF", "narenas:2,background_thread:true,dirty_decay_ms:300,muzzy_decay_ms:0")
    # numpy (the detectors' arithmetic) may start OpenBLAS threads that spin on idle cores; nothing
    # here does linear algebra.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # The workers already run chunks in parallel, and most Polars queries here are small: Polars' own
    # pool with a thread per CPU split each of them and made the threads wait on one another. Half
    # the CPUs: 10M lines, all rules, 2 CPUs, 4.56 -> 4.16 s (Tier 1-2 rules unchanged).
    os.environ.setdefault("POLARS_MAX_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))


def run() -> None:
    """The ``runpipeline`` command: ``main``, then exit without tearing the interpreter down.

    Everything is written and synced by then (outputs and checkpoint are atomic replaces); what
    is left is freeing every object one by one, 0.15 to 0.2 s after a run of 10M lines. Tests
    call ``main`` in-process, where the interpreter must live on.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
