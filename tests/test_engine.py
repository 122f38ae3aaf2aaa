"""The pipeline merges chunks in read order whichever thread merges them, and loses no error doing so."""

from __future__ import annotations

import json
import threading
import time

import pytest

from core import Result, Rule, hookimpl
from core import committer as committer_module
from core import work as work_module
from core.plugins import rule_types
from core.ruleset import load_rules
from core.runner import run_batch
from core.settings import load_settings
from tests.conftest import plugged, run_plugged

LINES = 60_000  # about 4 MB: sixteen chunks of the smallest size


class MergeOrder(Rule):
    """Records, in the order partials are merged into it, each partial's first line and the merging thread."""

    type_name = "merge_order"
    params_schema = {"type": "object", "additionalProperties": False, "properties": {"fail": {"type": "boolean"}}}

    def setup(self, fail=False):
        self.fail = fail
        self.first_line = None
        self.merged = []

    def update(self, batch):
        self.first_line = int(batch.frame["line"].min())

    def merge(self, other):
        if self.fail and other.first_line is not None and other.first_line > 1:
            raise RuntimeError("merge failed on purpose")
        if other.first_line is not None:
            self.merged.append((other.first_line, threading.current_thread().name))
        self.merged.extend(other.merged)

    def result(self):
        return Result([line for line, _ in self.merged])


class Plugin:
    @hookimpl
    def register_rule_types(self, register):
        register(MergeOrder)


@pytest.fixture
def big_file_run(workspace, pm):
    """Run only a merge_order rule over one file of many chunks, in-process, with two workers."""
    lines = "".join(f"2025-07-22T12:{i // 1000 % 60:02d}:00Z INFO S user{i} message {i}\n" for i in range(LINES))
    workspace.write("big.log", lines)

    def run(fail: bool = False):
        workspace.rules_file("order.yaml", f"- {{name: order, type: merge_order, fail: {str(fail).lower()}}}\n")
        workspace.configure("rule_files: [rules/order.yaml]\nrules: [order]\nworkers: 2\nchunk_bytes: 262144\n")
        with plugged(pm, {"merge-order": Plugin()}):
            settings = load_settings(workspace.settings)
            rules = load_rules(settings, rule_types(pm))
            return run_batch(settings, pm, rules), rules

    return run


def test_chunks_are_merged_in_read_order_by_whichever_thread_is_free(big_file_run):
    report, _ = big_file_run()
    firsts = report.summary["order"]
    assert len(firsts) >= 10
    assert firsts == sorted(firsts) and firsts[0] == 1


def test_a_rule_whose_merge_raises_in_a_worker_is_failed_and_the_run_completes(big_file_run):
    report, _ = big_file_run(fail=True)
    assert report.summary["rule_errors"] == [{"rule": "order", "plugin": "merge-order", "phase": "merge",
                                              "file": "big.log", "error": "RuntimeError: merge failed on purpose"}]
    assert report.summary["totals"]["lines"] == LINES and "order" not in report.summary


def test_an_error_of_the_engine_while_merging_in_a_worker_is_raised_in_the_caller(big_file_run, monkeypatch):
    merged = []
    original = committer_module.merge_file_stats

    def merge_file_stats(into, other):  # the engine's own code, after the first chunk
        merged.append(threading.current_thread().name)
        if len(merged) > 1:
            raise RuntimeError("merge failed on purpose")
        original(into, other)

    monkeypatch.setattr(committer_module, "merge_file_stats", merge_file_stats)
    with pytest.raises(RuntimeError, match="merge failed on purpose"):
        big_file_run()


def test_later_chunks_of_a_file_with_its_samples_keep_none_and_count_every_malformed_line(workspace, pm):
    # A malformed line every 50 lines of a file of many chunks: the first chunk fills the samples,
    # and the chunks read after that are counted without building samples (they could not win).
    lines = [f"2025-07-22T12:00:00Z INFO S user{i} message {i}" if i % 50 else f"not a record {i}"
             for i in range(1, LINES + 1)]
    workspace.write("dirty.log", "\n".join(lines) + "\n")
    workspace.configure("workers: 2\nchunk_bytes: 262144\nlimits: {malformed_samples: 20}\n")
    settings = load_settings(workspace.settings)
    parsed: list[tuple[int, int]] = []
    original = work_module.parse_chunk

    def parse_chunk(chunk, max_line_bytes, sample_limit, columns, samples=True, now=None, stray_us=None):
        batch, stats = original(chunk, max_line_bytes, sample_limit, columns, samples, now, stray_us)
        parsed.append((chunk.first_line, len(stats.samples)))
        return batch, stats

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(work_module, "parse_chunk", parse_chunk)
        run_batch(settings, pm, load_rules(settings, rule_types(pm)))
    summary = json.loads((settings.output_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["totals"]["malformed"] == LINES // 50
    assert [s["line"] for s in summary["malformed_samples"]] == [50 * k for k in range(1, 21)]
    assert len(parsed) > 8 and sum(1 for _, kept in parsed if kept == 0) >= len(parsed) - 4


class Clocks(Rule):
    """The processing times (``batch.now``) of the batches it saw."""

    type_name = "clocks"

    def setup(self):
        self.seen = set()

    def update(self, batch):
        self.seen.add(batch.now)

    def merge(self, other):
        self.seen |= other.seen

    def result(self):
        return Result(sorted(self.seen))


class ClocksPlugin:
    @hookimpl
    def register_rule_types(self, register):
        register(Clocks)


def test_every_chunk_of_a_run_is_judged_by_one_clock_taken_when_the_run_starts(workspace, pm):
    # "Now" (max_future) is the run's, taken once where the work is planned, never a worker's own
    # clock: chunks of a big file and small files on two workers all see the same.
    workspace.write("big.log", "".join(f"2025-07-22T12:00:00Z INFO S user{i} message {i}\n" for i in range(LINES)))
    for n in range(20):
        workspace.write(f"small-{n}.log", f"2025-07-22T13:00:{n:02d}Z INFO S user{n} fine\n")
    workspace.rules_file("clocks.yaml", "- {name: clocks, type: clocks}\n")
    workspace.configure("rule_files: [rules/clocks.yaml]\nrules: [clocks]\nworkers: 2\nchunk_bytes: 262144\n")
    before = time.time_ns() // 1000
    report = run_plugged(workspace.settings, pm, {"clocks": ClocksPlugin()})
    after = time.time_ns() // 1000
    assert report.summary["totals"]["files"] == 21
    assert len(report.summary["clocks"]) == 1
    assert before <= report.summary["clocks"][0] <= after
