"""``runpipeline --watch`` under load: concurrent writers, SIGKILL at random points, back-pressure.

Real files written from real threads, a real watcher subprocess killed with real signals; every
wait polls summary.json or the watcher's log against a deadline (helpers in ``test_watch.py``).
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from tests.conftest import Workspace
from tests.test_watch import (
    Watcher, assert_same_as_batch, log_lines, newlines, outputs, schema_errors, summary_of,
)

MODES = ("write", "rename", "slow", "append")


def rename_into_place(workspace: Workspace, name: str, text: str) -> Path:
    """The atomic ``mv`` pattern: write a hidden temp file, then rename it into the data folder."""
    temp = workspace.write(f".{name}.tmp", text)
    final = workspace.data / name
    os.rename(temp, final)
    return final


def write_slowly(path: Path, text: str, rng: random.Random, pieces: int = 5) -> None:
    """Write in ``pieces`` cut anywhere (mid-line too), flushing and pausing between them."""
    cuts = sorted(rng.sample(range(1, len(text)), pieces - 1))
    with open(path, "w", encoding="utf-8") as out:
        for start, end in zip([0, *cuts], [*cuts, len(text)]):
            out.write(text[start:end])
            out.flush()
            time.sleep(rng.uniform(0.005, 0.03))  # the writer's own pace: part of the workload


# -- concurrent drops -------------------------------------------------------------------------


def drop(workspace: Workspace, index: int, rng: random.Random) -> Path:
    name = f"drop-{index:03d}.{'txt' if index % 5 == 0 else 'log'}"
    text = log_lines(index, rng.randrange(20, 60))
    mode = MODES[index % len(MODES)]
    if mode == "rename":
        return rename_into_place(workspace, name, text)
    if mode == "slow":
        write_slowly(workspace.data / name, text, rng)
        return workspace.data / name
    return workspace.write(name, text)


def in_threads(count: int, task: Callable[[int], object]) -> None:
    """Run ``task(0..count-1)`` on ``count`` threads released together; re-raise any failure."""
    start = threading.Barrier(count)

    def run(index: int) -> object:
        start.wait(timeout=30)
        return task(index)

    with ThreadPoolExecutor(count) as pool:
        list(pool.map(run, range(count)))


def test_200_files_from_4_threads_end_equal_to_a_batch_run(workspace, tmp_path):
    # Every file listed: a watcher lists the files it counted last, a batch run the last by name.
    workspace.configure("watch: {settle_ms: 300, status_seconds: 1}\nlimits: {summary_files: 200}\n")
    per_thread = 50

    def write_share(thread: int) -> None:
        rng = random.Random(thread)
        for index in range(thread * per_thread, (thread + 1) * per_thread):
            drop(workspace, index, rng)

    def append_share(thread: int) -> None:
        for index in range(thread * per_thread, (thread + 1) * per_thread):
            if MODES[index % len(MODES)] == "append":
                path = next(workspace.data.glob(f"drop-{index:03d}.*"))
                with open(path, "a", encoding="utf-8") as out:
                    out.write(log_lines(1000 + index, 10))

    with Watcher(workspace) as watcher:
        watcher.wait_started()
        in_threads(4, write_share)
        files = sorted(workspace.data.iterdir())
        assert len(files) == 200 and not any(f.name.startswith(".") for f in files)
        summary = watcher.wait_for_lines(newlines(*files))
        assert summary["totals"]["files"] == 200
        in_threads(4, append_share)  # after the first processing: growth of 50 files at once
        watcher.wait_for_lines(newlines(*files))
        assert_same_as_batch(workspace, tmp_path)
        idle = outputs(workspace.output)
        assert watcher.stop() == 0
    assert outputs(workspace.output) == idle


# -- SIGKILL at random points -----------------------------------------------------------------


class Dropper(threading.Thread):
    """Drops one workload into the data folder at its own pace, while the test kills the watcher.

    ``dropped`` is how many complete lines are in the data folder so far.
    """

    def __init__(self, workspace: Workspace, seed: int) -> None:
        super().__init__(name="dropper")
        self.workspace = workspace
        self.rng = random.Random(seed)
        self.dropped = 0
        self.lock = threading.Lock()
        self.error: BaseException | None = None

    def steps(self) -> list[Callable[[], None]]:
        # Three files of 50k lines (~3 MB, ~50 chunks each) among 60 small ones, and growth of some.
        steps: list[Callable[[], None]] = []
        for index in range(63):
            lines = 50_000 if index % 21 == 0 else self.rng.randrange(50, 400)
            steps.append(lambda i=index, n=lines: self._drop(i, n))
            if index % 9 == 8:
                steps.append(lambda i=index - 5: self._append(i))
        return steps

    def _drop(self, index: int, lines: int) -> None:
        name = f"work-{index:02d}.log"
        if index % 2:
            rename_into_place(self.workspace, name, log_lines(index, lines))
        else:
            write_slowly(self.workspace.data / name, log_lines(index, lines), self.rng, pieces=3)
        with self.lock:
            self.dropped += lines

    def _append(self, index: int) -> None:
        with open(self.workspace.data / f"work-{index:02d}.log", "a", encoding="utf-8") as out:
            out.write(log_lines(500 + index, 40))
        with self.lock:
            self.dropped += 40

    def run(self) -> None:
        try:
            for step in self.steps():
                step()
                time.sleep(self.rng.uniform(0, 0.08))  # arrivals spread over a few seconds
        except BaseException as exc:  # reported by the test thread
            self.error = exc


def test_sigkill_at_random_points_then_restart_ends_equal_to_a_batch_run(workspace, tmp_path):
    rng = random.Random(20250722)
    workspace.configure(
        "chunk_bytes: 65536\nlimits: {max_line_bytes: 8192}\n"
        "watch: {settle_ms: 100, status_seconds: 0.1}\n"
    )
    dropper = Dropper(workspace, seed=7)
    watcher = Watcher(workspace)
    kills_with_work_left = 0
    try:
        dropper.start()
        for _ in range(6):
            watcher.start()
            watcher.wait_for(lambda: "status:" in watcher.log, "the restarted watcher to be running")
            time.sleep(rng.uniform(0.05, 0.6))  # the random point of the kill
            with dropper.lock:
                dropped = dropper.dropped
            watcher.kill()
            summary = summary_of(workspace)
            counted = -1 if summary is None else summary["totals"]["lines"]
            kills_with_work_left += counted < dropped
            if summary is not None:  # whatever the moment of the kill, the outputs are whole
                assert schema_errors(summary, "summary") == []
        dropper.join(timeout=60)
        assert dropper.error is None, dropper.error
        assert not dropper.is_alive()
        watcher.start()
        watcher.wait_for_lines(newlines(*workspace.data.glob("*.log")))
        assert_same_as_batch(workspace, tmp_path)
    finally:
        watcher.close()
        dropper.join(timeout=60)
    assert kills_with_work_left >= 1, "no kill landed while work was outstanding"
    assert watcher.history.count("INFO core.watch: watching") == 7


# -- back-pressure ----------------------------------------------------------------------------

SLOW_PLUGIN = '''\
"""A test rule that takes 50 ms per batch, so that work piles up behind the workers."""

import time

from core import Result, Rule, hookimpl


class SlowCount(Rule):
    type_name = "slow_count"
    params_schema = {"type": "object", "additionalProperties": False,
                     "properties": {"delay_ms": {"type": "integer", "minimum": 0}}}
    result_schema = {"type": "integer", "minimum": 0}

    def setup(self, delay_ms=50):
        self.delay_ms = delay_ms
        self.records = 0

    def update(self, batch):
        time.sleep(self.delay_ms / 1000)
        self.records += len(batch)

    def merge(self, other):
        self.records += other.records

    def result(self):
        return Result(self.records)


@hookimpl
def register_rule_types(register):
    register(SlowCount)
'''

STATUS = re.compile(
    r"status: (\d+) files waiting, (\d+) chunks in flight, (\d+) files processed, \d+ lines/s, peak RSS (\d+) MB"
)


def test_back_pressure_keeps_chunks_in_flight_and_memory_bounded_and_loses_no_file(workspace, tmp_path):
    (workspace.root / "slow_rule.py").write_text(SLOW_PLUGIN, encoding="utf-8")
    workspace.rules_file("slow.yaml", "- name: slow-count\n  type: slow_count\n  delay_ms: 50\n")
    workspace.configure(
        "plugins: [slow_rule]\nrules: [payment-statuses, slow-count]\n"
        "workers: 2\nqueue_size: 2\nchunk_bytes: 524288\n"
        "watch: {settle_ms: 100, status_seconds: 0.2}\n"
    )
    block = log_lines(1, 66_000)  # ~4 MB, eight chunks: 50 files make a backlog of 200 MB
    with Watcher(workspace) as watcher:
        watcher.wait_started()
        idle_mb = psutil.Process(watcher.proc.pid).memory_info().rss / 2**20
        for index in range(50):
            rename_into_place(workspace, f"slow-{index:02d}.log", block)
        summary = watcher.wait_for_lines(newlines(*workspace.data.iterdir()))
        statuses = [tuple(map(int, m.groups())) for m in STATUS.finditer(watcher.log)]
        assert watcher.stop() == 0
    assert summary["slow_count"] == summary["totals"]["records"]
    assert summary["totals"]["files"] == 50
    assert any(in_flight > 0 for _, in_flight, _, _ in statuses), "no status line while work was in flight"
    assert max(in_flight for _, in_flight, _, _ in statuses) <= 2 + 2  # workers + queue_size
    assert max(waiting for waiting, _, _, _ in statuses) <= 50  # one entry per file, however many events
    # Parsing chunks takes memory of its own (~40-110 MB here, with the allocators' slack, whatever
    # the backlog); holding the backlog would take at least its 200 MB more.
    growth_mb = summary["run"]["peak_rss_mb"] - idle_mb
    assert growth_mb < 150, f"peak RSS grew by {growth_mb:.0f} MB (from {idle_mb:.0f} MB) while 200 MB waited"


HELD_UP_PLUGIN = '''\
"""A test rule whose first batch of each file takes a second; it counts how far the reader ran ahead.

Its result is the most batches that started while a first batch was still held up: with the
reader bounded, at most workers + queue_size - 1 chunks are read past the oldest unmerged one.
"""

import threading
import time

from core import Result, Rule, hookimpl

_lock = threading.Lock()
_held = 0
_ahead = 0
_most_ahead = 0


class HeldUp(Rule):
    type_name = "held_up"
    params_schema = {"type": "object", "additionalProperties": False}
    result_schema = {"type": "integer", "minimum": 0}

    def update(self, batch):
        global _held, _ahead, _most_ahead
        if batch.frame["line"][0] == 1:
            with _lock:
                _held, _ahead = _held + 1, 0
            time.sleep(1)
            with _lock:
                _held, _most_ahead = _held - 1, max(_most_ahead, _ahead)
        else:
            with _lock:
                _ahead += bool(_held)

    def merge(self, other):
        pass

    def result(self):
        return Result(_most_ahead)


@hookimpl
def register_rule_types(register):
    register(HeldUp)
'''


def test_a_slow_chunk_holds_the_reader_back_instead_of_letting_later_chunks_pile_up(workspace):
    # Chunks are merged in read order: while the oldest is slow, the ones read after it wait,
    # finished, in memory. Only a bound on chunks read but not yet merged keeps that bounded.
    (workspace.root / "held_up_rule.py").write_text(HELD_UP_PLUGIN, encoding="utf-8")
    workspace.rules_file("held.yaml", "- name: held-up\n  type: held_up\n")
    workspace.configure(
        "plugins: [held_up_rule]\nrules: [payment-statuses, held-up]\n"
        "workers: 2\nqueue_size: 2\nchunk_bytes: 65536\nlimits: {max_line_bytes: 8192}\n"
        "watch: {settle_ms: 100, status_seconds: 0.2}\n"
    )
    with Watcher(workspace) as watcher:
        watcher.wait_started()
        path = rename_into_place(workspace, "big.log", log_lines(2, 40_000))  # ~40 chunks
        summary = watcher.wait_for_lines(newlines(path))
        assert watcher.stop() == 0
    assert summary["held_up"] <= 2 + 2 - 1, f"{summary['held_up']} chunks were read past a held-up one"
