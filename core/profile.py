"""``runpipeline --profile``: where a run's time went, on every thread, written next to the outputs.

Each thread that does the run's work (the reader and merger, and every worker) gets its own
``cProfile.Profile``; at the end they are combined into one ``pstats`` file, which tools such as
``python -m pstats`` or snakeviz open, and a text report of the top functions.
"""

from __future__ import annotations

import cProfile
import io
import marshal
import pstats
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.output import atomic_write, atomic_write_text

STATS_FILE = "profile.pstats"
TEXT_FILE = "profile.txt"
_TOP = 40


class RunProfile:
    """Profiles of the threads of one run; ``thread()`` profiles the calling thread while it is entered."""

    def __init__(self) -> None:
        self._profiles: list[cProfile.Profile] = []
        self._local = threading.local()
        self._lock = threading.Lock()

    @contextmanager
    def thread(self) -> Iterator[None]:
        profile = getattr(self._local, "profile", None)
        if profile is None:
            profile = self._local.profile = cProfile.Profile()
            with self._lock:
                self._profiles.append(profile)
        profile.enable()
        try:
            yield
        finally:
            profile.disable()

    def write(self, folder: Path) -> Path:
        """Write ``profile.pstats`` and ``profile.txt`` into ``folder``; return the text report's path."""
        folder.mkdir(parents=True, exist_ok=True)
        # pstats' own file format (what Stats.dump_stats writes), through a temp file and os.replace
        atomic_write(folder / STATS_FILE, marshal.dumps(pstats.Stats(*self._profiles).stats), shared=True)
        report = io.StringIO()
        report.write(f"Profile of one run: {len(self._profiles)} threads (the reader and merger, the workers, "
                     "and the ones that seal and read the rules) combined.\n"
                     "Times are summed over threads, so they can exceed the run's wall time.\n"
                     f"Open {STATS_FILE} with `python -m pstats` or snakeviz for the full detail.\n\n")
        for order in ("cumulative", "tottime"):
            report.write(f"=== top {_TOP} by {order} time ===\n")
            pstats.Stats(*self._profiles, stream=report).strip_dirs().sort_stats(order).print_stats(_TOP)
        path = folder / TEXT_FILE
        atomic_write_text(path, report.getvalue())
        return path
