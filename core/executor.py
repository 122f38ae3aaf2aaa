"""Executors run chunk work (``core.work.chunk_work``) and hand back futures of its outcomes.

An executor only runs work: what was read, in what order it is merged and when it is committed
is the committer's (``core.committer``), the same whichever executor ran the work.
"""

from __future__ import annotations

import importlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Protocol, TypeVar

if TYPE_CHECKING:
    from core.settings import Settings

T = TypeVar("T")


class Executor(Protocol):
    """Runs work somewhere and hands back a future of its result."""

    #: How many chunks of work may be in flight at once: queued, running, or done and waiting for
    #: their turn to be merged. The pipeline holds back reading beyond it (back-pressure).
    capacity: int
    #: Whether its workers read the input themselves: the pipeline then sends each a byte range
    #: to read (``core.work.range_work``), as to another process or machine, rather than chunks
    #: it read (``core.work.chunk_work``), which suits threads that share its memory.
    reads_ranges: bool

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        """Run ``fn(*args)``; the future holds its result or its exception."""
        ...

    def shutdown(self, *, at_once: bool) -> None:
        """Stop: after the work submitted is done, or ``at_once``, dropping what has not started."""
        ...


class ThreadExecutor:
    """Worker threads of this process: chunk work releases the GIL in its compiled passes and in Polars."""

    def __init__(self, workers: int, queue_size: int, *, reads_ranges: bool = False) -> None:
        self.capacity = workers + queue_size
        self.reads_ranges = reads_ranges
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="omp-worker")

    @classmethod
    def from_settings(cls, settings: Settings) -> ThreadExecutor:
        return cls(settings.workers, settings.queue_size)

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        return self._pool.submit(fn, *args)

    def shutdown(self, *, at_once: bool) -> None:
        self._pool.shutdown(wait=not at_once, cancel_futures=at_once)


#: The executors ``executor.type`` names, each a class with ``from_settings(settings)``, imported when
#: chosen (``distributed`` takes a second to import, and a threaded run never needs it).
EXECUTORS: dict[str, str] = {
    "threads": "core.executor:ThreadExecutor",
    "dask": "core.dask_executor:DaskExecutor",
}


def build_executor(settings: Settings) -> Executor:
    """The executor the settings choose (``executor.type``), started."""
    module, _, name = EXECUTORS[settings.executor].partition(":")
    return getattr(importlib.import_module(module), name).from_settings(settings)
