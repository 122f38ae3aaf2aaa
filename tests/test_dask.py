"""The Dask executor on a real cluster: a ``LocalCluster`` of 2 worker processes, shared by the module.

The same answer as worker threads (summary, anomalies with their ids, the saved rule states and the
ledger), in batch and watch mode; a worker killed mid-run; a plugin the workers cannot import; a
scheduler lost mid-run.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from core import checkpoint as checkpoints
from core.plugins import get_plugin_manager, rule_types
from core.ruleset import load_rules
from core.settings import load_settings
from tests.conftest import REPO, Workspace, load_bench, run_cli, wait_for
from tests.test_watch import Watcher, outputs

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow

ALL_RULES = ("payment-statuses, top-services, top-users, peak-hours, event-timeline, unknown-statuses, "
             "implausible-timestamps, error-spikes, busy-users, duplicate-events, silent-services")
#: Small chunks, so that a few MB of lines make a few dozen chunks of work spread over both workers.
SMALL_CHUNKS = "chunk_bytes: 131072\nlimits: {max_line_bytes: 4096}\n"

#: A third-party rule type whose every batch takes a while: work stays in flight long enough to
#: kill a worker, or the scheduler, under it.
SLOW_PLUGIN = '''\
import os
import time
from pathlib import Path

from core import Result, Rule, hookimpl

#: A file touched at each batch, when set: a test sees that work has reached the workers.
MARK = os.environ.get("OMP_TEST_MARK")


class SlowCount(Rule):
    type_name = "slow_count"

    def setup(self):
        self.n = 0

    def update(self, batch):
        if MARK:
            Path(MARK).touch()
        time.sleep(0.2)
        self.n += len(batch)

    def merge(self, other):
        self.n += other.n

    def result(self):
        return Result(self.n)


@hookimpl
def register_rule_types(register):
    register(SlowCount)
'''


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes of one thread each, started once for the module (a few seconds)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as local:
        with distributed.Client(local, set_as_default=False) as client:
            yield local, client


@pytest.fixture
def scheduler(cluster) -> str:
    local, client = cluster
    client.wait_for_workers(2, timeout=60)  # the worker a test killed is back
    return local.scheduler_address


def generated(workspace: Workspace, lines: int, name: str = "gen.log", seed: int = 7) -> Path:
    path = workspace.data / name
    load_bench("generate").main(["--lines", str(lines), "--out", str(path), "--seed", str(seed),
                                 "--manifest", str(workspace.root / f"{name}.manifest.json")])
    return path


def saved(workspace: Workspace, output: Path) -> dict[str, Any]:
    """The committed checkpoint of ``output``: rule states, the files' counts (without their timings),
    failures and the ledger."""
    settings = load_settings(workspace.settings, {"output_dir": str(output)})
    rules = load_rules(settings, rule_types(get_plugin_manager(settings.plugins, search_path=workspace.root)))
    committed = checkpoints.load(settings, rules)
    return {
        "states": committed.state.rules,
        "files": {name: dataclasses.replace(stats, seconds=0.0) for name, stats in committed.state.files.items()},
        "earlier": committed.state.earlier,
        "failures": committed.state.failures,
        "ledger": (committed.ledger.entries, committed.ledger.departed),
    }


#: A measurement of memory (summary.json's ``run.rule_state``), not of the data: a partial state
#: that was unpickled is laid out differently in memory.
NOT_COMPARED = {"state_peak"}


def differences(ours: Any, theirs: Any, where: str = "") -> list[str]:
    """Where two saved values differ: frames by their values (a categorical's codes are given per
    process, in the order its strings are met, and a string column's buffers are laid out as it was
    built), arrays with their NaNs, objects attribute by attribute."""
    if type(ours) is not type(theirs):
        return [f"{where}: {type(ours).__name__} against {type(theirs).__name__}"]
    if isinstance(ours, pl.DataFrame):
        # A rule's table is a relation: its rows' order follows how the input was cut into parts
        # (a windowed table folds the parts that share windows and appends the rest), which a
        # worker reading its own byte ranges cuts otherwise than the pipeline's reader.
        same = _strings(ours).sort(pl.all()).equals(_strings(theirs).sort(pl.all()), null_equal=True)
        return [] if same else [f"{where}: frames differ"]
    if isinstance(ours, np.ndarray):
        same = ours.shape == theirs.shape and np.array_equal(ours, theirs, equal_nan=ours.dtype.kind in "fc")
        return [] if same else [f"{where}: arrays differ"]
    if isinstance(ours, dict):
        if list(ours) != list(theirs):
            return [f"{where}: keys differ"]
        return [d for key in ours for d in differences(ours[key], theirs[key], f"{where}[{key!r}]")]
    if isinstance(ours, (list, tuple)):
        if len(ours) != len(theirs):
            return [f"{where}: {len(ours)} items against {len(theirs)}"]
        pairs = enumerate(zip(ours, theirs, strict=True))
        return [d for i, (a, b) in pairs for d in differences(a, b, f"{where}[{i}]")]
    if hasattr(ours, "__dict__") and not isinstance(ours, type):
        return [d for key in vars(ours) if key not in NOT_COMPARED
                for d in differences(vars(ours)[key], vars(theirs).get(key), f"{where}.{key}")]
    if hasattr(ours, "to_bytes") and not isinstance(ours, int):  # the compiled tables, as the checkpoint stores them
        ours, theirs = ours.to_bytes(), theirs.to_bytes()
    return [] if ours == theirs else [f"{where}: {ours!r:.200} against {theirs!r:.200}"]


def _strings(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col(pl.Categorical).cast(pl.String))


def assert_same(workspace: Workspace, threads: Path, dask: Path) -> None:
    ours, theirs = outputs(dask), outputs(threads)
    assert ours[0] == theirs[0], "summary.json differs from the threaded run's"
    assert ours[1] == theirs[1], "anomalies.json differs from the threaded run's"
    assert ours[1]["anomalies"], "the data has anomalies, with ids, to compare"
    assert differences(saved(workspace, dask), saved(workspace, threads)) == []


def test_a_batch_run_on_the_cluster_equals_a_threaded_run(workspace, scheduler, capsys):
    workspace.configure(f"rules: [{ALL_RULES}]\n{SMALL_CHUNKS}")
    generated(workspace, 30_000)
    shutil.copy(REPO / "data" / "example_input.txt", workspace.data)
    for n in range(30):  # small files, read several to a chunk of work
        workspace.write(f"small-{n:02d}.log", f"2025-07-22T12:{n:02d}:00Z INFO PaymentService u{n} ok\n")
    # A gzip file: one range, which a worker decompresses itself (core.sources).
    rotated = generated(workspace, 5_000, name="rotated.log", seed=8)
    workspace.write("rotated.log.gz", gzip.compress(rotated.read_bytes(), mtime=0))
    rotated.unlink()
    threads, dask = workspace.root / "threads", workspace.root / "dask"
    assert workspace.main("--output-dir", str(threads)) == 0, capsys.readouterr().err
    assert workspace.main("--output-dir", str(dask), "--scheduler", scheduler) == 0, capsys.readouterr().err
    assert_same(workspace, threads, dask)
    assert {f["path"]: f["lines"] for f in outputs(dask)[0]["files"]}["rotated.log.gz"] == 5_000
    # And again, on what was appended: the second run goes on from the saved state on both.
    with (workspace.data / "example_input.txt").open("a", encoding="utf-8") as log:
        log.write("2025-07-23T00:00:01Z FAILURE PaymentService u1 declined\n")
    assert workspace.main("--output-dir", str(threads)) == 0, capsys.readouterr().err
    assert workspace.main("--output-dir", str(dask), "--scheduler", scheduler) == 0, capsys.readouterr().err
    assert outputs(dask)[0]["totals"]["lines"] == outputs(threads)[0]["totals"]["lines"] > 30_000
    assert_same(workspace, threads, dask)


def test_a_watcher_on_the_cluster_equals_a_threaded_watcher(workspace, scheduler, tmp_path):
    workspace.configure(f"rules: [{ALL_RULES}]\n{SMALL_CHUNKS}watch: {{settle_ms: 200, status_seconds: 0.2}}\n")
    generated(workspace, 10_000)
    source = tmp_path / "later.log"
    shutil.copy(REPO / "data" / "example_input.txt", source)
    threads, dask = workspace.root / "threads", workspace.root / "dask"
    local = Watcher(workspace, "--output-dir", str(threads))
    remote = Watcher(workspace, "--output-dir", str(dask), "--scheduler", scheduler)
    local.log_path, remote.log_path = workspace.root / "threads.log", workspace.root / "dask.log"
    with local, remote:
        for watcher, folder in ((local, threads), (remote, dask)):
            watcher.wait_for(lambda folder=folder: _lines(folder) == 10_000, "the catch-up commit")
        source.rename(workspace.data / "later.log")  # renamed into place: both read it whole
        for watcher, folder in ((local, threads), (remote, dask)):
            watcher.wait_for(lambda folder=folder: _lines(folder) == 11_500, "the commit of the file dropped in")
        assert local.stop() == 0 and remote.stop() == 0
    assert_same(workspace, threads, dask)


def _lines(folder: Path) -> int:
    try:
        return json.loads((folder / "summary.json").read_text(encoding="utf-8"))["totals"]["lines"]
    except (FileNotFoundError, json.JSONDecodeError):
        return -1


def slow_workspace(workspace: Workspace) -> None:
    (workspace.root / "slow_rules.py").write_text(SLOW_PLUGIN)  # beside settings.yaml: the workers share it
    workspace.rules_file("slow.yaml", "- {name: slow-count, type: slow_count}\n")
    workspace.configure(f"plugins: [slow_rules]\nrules: [payment-statuses, top-users, duplicate-events, "
                        f"slow-count]\n{SMALL_CHUNKS}")


def test_a_worker_killed_mid_run_is_replaced_and_the_outputs_are_the_same(workspace, cluster, scheduler):
    slow_workspace(workspace)
    generated(workspace, 40_000)  # ~30 chunks of 0.2 s each and more: seconds of work in flight
    threads, dask = workspace.root / "threads", workspace.root / "dask"
    run_cli("--output-dir", str(threads), cwd=workspace.root, check=True)
    _, client = cluster
    pids = client.run(os.getpid)
    run = subprocess.Popen([sys.executable, "-m", "core.cli", "--output-dir", str(dask), "--scheduler", scheduler],
                           cwd=workspace.root, env={**os.environ, "PYTHONPATH": str(REPO)},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        victim = _wait_for_work_on_a_worker(client, run)
        os.kill(pids[victim], signal.SIGKILL)
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err
    assert_same(workspace, threads, dask)


def _wait_for_work_on_a_worker(client: Any, run: subprocess.Popen[str]) -> str:
    """The address of a worker with a chunk of work in hand, once there is one."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert run.poll() is None, f"the run ended before a worker could be killed: {run.communicate()}"
        busy = client.run_on_scheduler(_busy_workers)
        if busy:
            return busy[0]
        time.sleep(0.02)
    pytest.fail("no worker took a chunk of work within 60 s")


def _busy_workers(dask_scheduler: Any) -> list[str]:
    """On the scheduler's event loop, where its state may be read: the workers with work in hand."""
    return [worker.address for worker in dask_scheduler.workers.values() if worker.processing]


def test_a_plugin_missing_on_the_workers_is_named_without_a_traceback(workspace, scheduler, tmp_path,
                                                                       monkeypatch, capsys):
    """The module is on the driver's import path only (the workers started before it was put there)."""
    site = tmp_path / "driver-only"
    site.mkdir()
    (site / "omp_driver_only.py").write_text(SLOW_PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    workspace.rules_file("slow.yaml", "- {name: slow-count, type: slow_count}\n")
    workspace.configure("plugins: [omp_driver_only]\nrules: [payment-statuses, slow-count]\n")
    shutil.copy(REPO / "data" / "example_input.txt", workspace.data)
    assert workspace.main("--scheduler", scheduler) == 2
    err = capsys.readouterr().err
    assert "Dask worker tcp://127.0.0.1:" in err
    assert "plugin 'omp_driver_only' failed to load: ModuleNotFoundError: No module named 'omp_driver_only'" in err
    assert "hint: install the plugin on every worker" in err
    assert "Traceback" not in err
    assert not (workspace.output / "summary.json").exists()


def test_a_lost_scheduler_is_a_clear_error_and_the_last_commit_stands(workspace, tmp_path):
    """A cluster of its own (``dask scheduler`` and ``dask worker`` processes), whose scheduler is killed."""
    slow_workspace(workspace)
    shutil.copy(REPO / "data" / "example_input.txt", workspace.data)
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    mark = tmp_path / "work-started"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_TEST_MARK": str(mark)}
    dask = str(Path(sys.executable).with_name("dask"))
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--no-dashboard"], env=env, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--no-dashboard"],
                              cwd=workspace.root, env=env, stderr=subprocess.DEVNULL)
    try:
        run_cli("--scheduler", address, cwd=workspace.root, check=True, timeout=120)
        committed = outputs(workspace.output)
        state = (workspace.output / ".state" / checkpoints.FILE_NAME).read_bytes()
        generated(workspace, 40_000)
        run = subprocess.Popen([sys.executable, "-m", "core.cli", "--scheduler", address], cwd=workspace.root,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        mark.unlink()
        wait_for(lambda: mark.exists() or run.poll() is not None, "chunks of work at the worker", timeout=60)
        assert run.poll() is None, run.communicate()
        scheduler.kill()
        _, err = run.communicate(timeout=60)
    finally:
        for process in (worker, scheduler):
            process.kill()
            process.wait(timeout=30)
    assert run.returncode == 1, err
    assert f"runpipeline: lost the Dask scheduler at {address}" in err
    assert "the last commit stands" in err
    assert "Traceback" not in err
    assert outputs(workspace.output) == committed
    assert (workspace.output / ".state" / checkpoints.FILE_NAME).read_bytes() == state


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
