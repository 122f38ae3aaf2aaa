"""The Dask executor: chunk work runs on the worker processes of a Dask cluster (``distributed``).

``runpipeline --scheduler tcp://HOST:PORT`` (or ``executor: {type: dask, scheduler: ...}``)
connects to a running cluster; ``--executor dask`` without an address starts a ``LocalCluster``
of worker processes on this machine. Either way the committer (``core.committer``) merges the
outcomes on the driver, in read order, as it does those of worker threads.

What travels: whatever the engine hands ``submit`` (today ``chunk_work`` with its ``WorkSpec`` and
the chunks read by the driver), pickled here on the driver. A worker first loads the plugins named
in the settings (``WorkerSetup``), then unpickles the work: the rule classes it names come from
those plugins, so a worker missing one fails with a message naming it, not with an unpickling error.
"""

from __future__ import annotations

import logging
import pickle
import threading
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any, Callable, TypeVar

from core.errors import ConfigError, PipelineError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long to wait for a scheduler to answer when connecting, in seconds.
CONNECT_SECONDS = 10
#: How long to wait for the client and a local cluster to close at the end.
CLOSE_SECONDS = 10


class ClusterLost(PipelineError):
    """The connection to the Dask scheduler was lost mid-run; the last commit stands."""


class WorkerSetupError(ConfigError):
    """A Dask worker could not load a plugin named in the settings (or an entry point's)."""

    def __reduce__(self) -> tuple[Any, ...]:  # raised on a worker, pickled back to the driver
        return (type(self), (self.problems,))


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker loads before its first chunk of work: the settings' plugins, found as the driver finds them."""

    plugins: tuple[str, ...]
    #: The settings file's folder, where plugin modules beside ``settings.yaml`` are looked for.
    search_path: str
    load_entrypoints: bool = True


def run_on_worker(setup: WorkerSetup, payload: bytes) -> Any:
    """On a worker: load the plugins (once per process), then run the work pickled in ``payload``."""
    _load_plugins(setup, None)
    fn, args = pickle.loads(payload)
    return fn(*args)


@cache
def _load_plugins(setup: WorkerSetup, address: str | None) -> None:
    """Import the plugin modules, so that unpickling finds the rule classes they define; a failure is not cached.

    ``address`` is the worker's, when known (``Client.run``); else it is looked up.
    """
    from core.plugins import get_plugin_manager

    try:
        get_plugin_manager(setup.plugins, load_entrypoints=setup.load_entrypoints,
                           search_path=Path(setup.search_path))
    except ConfigError as exc:
        where = address or _worker_address()
        raise WorkerSetupError([
            f"Dask worker {where}: {problem}; hint: install the plugin on every worker, or keep it beside "
            "settings.yaml on a path the workers share" for problem in exc.problems
        ]) from None


def _plugin_problems(setup: WorkerSetup, dask_worker: Any = None) -> list[str]:
    """``_load_plugins`` through ``Client.run``: the problems are returned, not raised, which the worker
    would log with a traceback."""
    try:
        _load_plugins(setup, dask_worker.address if dask_worker is not None else None)
    except WorkerSetupError as exc:
        return exc.problems
    return []


def _quiet_distributed() -> None:
    """Dask's own log lines (a line per connection, per worker started) only with -vv; its warnings always."""
    ours = logging.getLogger().getEffectiveLevel()
    logging.getLogger("distributed").setLevel(logging.INFO if ours <= logging.DEBUG else max(ours, logging.WARNING))


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except ValueError:  # not in a worker (run directly, in a test)
        return "(not a worker)"


def _connect(address: str) -> Any:
    """A client of the scheduler at ``address``, once it has a worker; ``PipelineError`` saying why not."""
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_SECONDS, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise PipelineError(f"cannot reach the Dask scheduler at {address}: {exc}; hint: start it with "
                            "`dask scheduler`, or check executor.scheduler / --scheduler") from None
    try:  # else the work would wait for a worker forever
        client.wait_for_workers(1, timeout=CONNECT_SECONDS)
    except TimeoutError:
        client.close(timeout=CLOSE_SECONDS)
        raise PipelineError(f"the Dask scheduler at {address} has no workers (waited {CONNECT_SECONDS} s); "
                            f"hint: start some with `dask worker {address}`") from None
    log.info("running on the Dask cluster at %s (%d workers)", address, len(client.scheduler_info()["workers"]))
    return client


class DaskExecutor:
    """Runs work on a Dask cluster, handing back ``concurrent.futures`` futures, as the committer expects."""

    def __init__(self, client: Any, setup: WorkerSetup, queue_size: int, cluster: Any | None = None) -> None:
        self._client = client
        self._cluster = cluster  # a LocalCluster this executor started, closed with it
        self._setup = setup
        self._futures: set[Any] = set()  # submitted and not settled; settled on Dask's callback thread
        self._lock = threading.Lock()
        self._lost = False  # the scheduler went away: closing says nothing more of it
        self.address = client.scheduler.address
        #: One chunk per worker thread, and ``queue_size`` more read ahead, held on the driver until merged.
        self.capacity = max(1, sum(client.nthreads().values())) + queue_size
        #: The workers read their byte ranges themselves (``core.work.range_work``): the driver sends a
        #: file's path and range, never its bytes, so the data folder must be readable where they run.
        self.reads_ranges = True

    @classmethod
    def from_settings(cls, settings: Any) -> DaskExecutor:
        """Connect to ``settings.scheduler``, or start a local cluster of ``settings.executor_workers`` processes."""
        from distributed import Client, LocalCluster

        _quiet_distributed()
        setup = WorkerSetup(settings.plugins, str(settings.source.parent))
        if settings.scheduler:
            return cls(_connect(settings.scheduler), setup, settings.queue_size)._prepared()
        cluster = LocalCluster(n_workers=settings.executor_workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0")  # a free port: 8787 may be taken
        log.info("started a local Dask cluster of %d worker processes at %s", settings.executor_workers,
                 cluster.scheduler_address)
        return cls(Client(cluster, set_as_default=False), setup, settings.queue_size, cluster)._prepared()

    def _prepared(self) -> DaskExecutor:
        """Load the plugins on every worker now, in parallel: a missing one stops the run before it reads a
        file. (A worker that joins later loads them with its first chunk of work.)"""
        try:
            problems = [p for found in self._client.run(_plugin_problems, self._setup).values() for p in found]
        except BaseException:
            self._close()
            raise
        if problems:
            self._close()
            raise WorkerSetupError(problems)
        return self

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        # Pickled here, not by Dask: the worker loads the plugins before it unpickles (see run_on_worker).
        payload = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
        remote = self._client.submit(run_on_worker, self._setup, payload, pure=False)
        with self._lock:
            self._futures.add(remote)
        done: Future[T] = Future()
        done.set_running_or_notify_cancel()
        remote.add_done_callback(partial(self._settle, done))  # called on Dask's callback thread
        return done

    def _settle(self, done: Future[Any], remote: Any) -> None:
        """Hand the remote outcome to ``done``; a lost scheduler becomes ``ClusterLost``."""
        with self._lock:
            self._futures.discard(remote)
        try:
            done.set_result(remote.result())
        except CancelledError as exc:
            self._lost = True
            done.set_exception(ClusterLost(
                f"lost the Dask scheduler at {self.address} ({getattr(exc, 'reason', None) or exc}); the last "
                "commit stands: run again once the cluster is back, and it goes on from there"))
        except BaseException as exc:  # noqa: BLE001  (the work's own exception, raised where it is merged)
            done.set_exception(exc)

    def shutdown(self, *, at_once: bool) -> None:
        from distributed import wait

        with self._lock:
            left = list(self._futures)
        try:
            if at_once:
                self._client.cancel(left)
            elif left:
                wait(left)
        except Exception as exc:  # noqa: BLE001  (a lost cluster: nothing is left to wait for)
            log.debug("while waiting for the Dask work in flight: %s", exc)
        finally:
            self._close()

    def _close(self) -> None:
        if self._lost:  # else the client logs, with a traceback, that its attempt to reconnect was cut short
            logging.getLogger("distributed.client").setLevel(logging.CRITICAL)
        try:
            self._client.close(timeout=CLOSE_SECONDS)
            if self._cluster is not None:
                self._cluster.close(timeout=CLOSE_SECONDS)
        except Exception as exc:  # noqa: BLE001  (closing a client of a lost scheduler may time out)
            log.debug("while closing the Dask client: %s", exc)
