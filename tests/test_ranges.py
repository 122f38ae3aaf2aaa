"""Range work: workers that read their byte ranges themselves give what the pipeline's own reading gives.

``core.work.range_work`` numbers the lines of a range that does not start its file from 1; the
committer moves them to the file's numbers (``Rule.shift_lines``). These runs use real worker
threads that read their ranges themselves (``ThreadExecutor(reads_ranges=True)``), as workers of
another process would, over real files cut into many ranges.
"""

from __future__ import annotations

import gzip
import json
import random

import pytest

from core.executor import ThreadExecutor
from core.plugins import rule_types
from core.redact import Redactor
from core.ruleset import load_rules
from core.runner import run_batch
from core.settings import load_settings
from core.sources import PLAIN
from core.work import RangeTask, WorkSpec, range_work
from tests.conftest import REPO, Workspace
from tests.test_watch import log_lines, outputs

LATE_RULE = """\
- name: late-records
  type: timestamp
  max_lateness: 30m
"""


def odd_lines(seed: int, count: int) -> str:
    """``log_lines`` with, now and then, an unknown status, a record from the future and one two hours late.

    ``log_lines`` spans 20 minutes in no order: only the records two hours late are late by
    ``max_lateness`` (30 minutes), so lateness does not depend on how files are cut (a run keeps its
    ``CANDIDATES`` smallest timestamps, see plugins/timestamps.py).
    """
    rng = random.Random(seed)
    out = []
    for n, line in enumerate(log_lines(seed, count).splitlines(keepends=True)):
        out.append(line)
        if n % 97 == 40:
            out.append(f"2025-07-22T10:{rng.randrange(20):02d}:00Z WEIRD svc-{n % 3} user{n} odd\n")
        if n % 211 == 100:
            out.append("2099-01-01T00:00:00Z OK api user1 from the future\n")
        if n % 157 == 150:
            out.append("2025-07-22T08:00:00Z OK api user2 late by far\n")
    return "".join(out)


def fill(workspace: Workspace) -> None:
    workspace.write("a.log", odd_lines(1, 2500))
    workspace.write("b.log", odd_lines(2, 1800) + "2025-07-22T10:00:00Z OK api user3 no newline")
    workspace.write("c.log.gz", gzip.compress(odd_lines(3, 900).encode(), mtime=0))
    workspace.write("small.txt", odd_lines(4, 12))
    workspace.rules_file("late.yaml", LATE_RULE)
    names = ["payment-statuses", "top-services", "top-users", "event-timeline", "peak-hours", "unknown-statuses",
             "implausible-timestamps", "error-spikes", "busy-users", "duplicate-events", "silent-services",
             "late-records"]
    workspace.configure(f"rules: {json.dumps(names)}\nlimits: {{max_line_bytes: 512}}\n")


def run(workspace: Workspace, pm, folder: str, chunk_bytes: int, ranges: bool) -> tuple[dict, dict]:
    settings = load_settings(workspace.settings, {"output_dir": str(workspace.root / folder),
                                                  "chunk_bytes": chunk_bytes, "workers": 2})
    executor = ThreadExecutor(2, 2, reads_ranges=ranges)
    report = run_batch(settings, pm, load_rules(settings, rule_types(pm)), executor=executor)
    assert not report.summary["rule_errors"] and not report.summary["file_errors"]
    return outputs(workspace.root / folder)


def samples(anomalies: dict) -> dict[str, list]:
    """Each anomaly's sample locations and texts, by id."""
    return {a["id"]: a["samples"] for a in anomalies["anomalies"]}


@pytest.mark.slow
def test_many_ranges_give_the_line_numbers_of_one_range_and_of_the_pipelines_own_reading(workspace, pm):
    fill(workspace)
    many = run(workspace, pm, "many", 1024, ranges=True)  # about 250 ranges of 1 KiB
    one = run(workspace, pm, "one", 4 * 1024 * 1024, ranges=True)  # one range a file
    chunks = run(workspace, pm, "chunks", 1024, ranges=False)  # chunks read by the pipeline
    assert many == chunks  # the same cuts, read by the pipeline or by the workers: the same outputs
    # One range a file against many: the same lines and line numbers everywhere. (The worst
    # lateness may differ: a record late within its chunk is measured against that chunk's
    # earlier lines, as with the pipeline's own chunks of either size.)
    assert many[0] == one[0]
    assert samples(many[1]) == samples(one[1])
    summary, anomalies = many
    assert summary["totals"]["lines"] == sum(f["lines"] for f in summary["files"]) > 5000
    # Malformed lines' samples from ranges far into their file, at the file's own line numbers.
    lines = [s["line"] for s in summary["malformed_samples"] if s["file"] == "a.log"]
    assert lines == [n for n, line in enumerate(odd_lines(1, 2500).splitlines(), 1) if line.startswith("not")][:100]
    assert max(lines) > 1000
    kinds = {a["rule"] for a in anomalies["anomalies"]}
    assert {"unknown-statuses", "late-records", "implausible-timestamps"} <= kinds


@pytest.mark.slow
def test_a_second_run_with_ranges_reads_nothing_and_a_grown_file_is_read_on(workspace, pm):
    fill(workspace)
    run(workspace, pm, "out", 1024, ranges=True)
    settings = load_settings(workspace.settings, {"output_dir": str(workspace.root / "out"), "chunk_bytes": 1024})
    again = run_batch(settings, pm, load_rules(settings, rule_types(pm)), executor=ThreadExecutor(2, 2,
                                                                                               reads_ranges=True))
    assert again.summary["run"]["lines_read"] == 0
    with open(workspace.data / "a.log", "a", encoding="utf-8") as out:
        out.write(log_lines(5, 700))  # no record older than the retention of windows the first run closed
    grown = run(workspace, pm, "out", 1024, ranges=True)
    fresh = run(workspace, pm, "fresh", 1024, ranges=False)
    assert grown == fresh


@pytest.mark.parametrize("cut", [1, 37, 38, 39, 200, 1500])
def test_ranges_cut_anywhere_share_every_line_out_once(tmp_path, cut):
    text = "".join(f"2025-07-22T10:00:{n % 60:02d}Z OK api user{n} line {n}\n" for n in range(20))
    path = tmp_path / "x.log"
    path.write_text(text, encoding="utf-8")
    settings = load_settings(REPO / "settings.yaml")
    spec = WorkSpec((), frozenset(), frozenset({"ts", "line"}), 512, 10, Redactor.from_settings(settings), 0)
    first = range_work(spec, RangeTask("x.log", str(path), PLAIN, 0, cut, 1, 1024, True))
    rest = range_work(spec, RangeTask("x.log", str(path), PLAIN, cut, None, None, 1024, True))
    assert first.stats[0].lines + rest.stats[0].lines == 20
    assert first.stats[0].bytes + rest.stats[0].bytes == len(text)
    assert rest.relative and not first.relative
    assert first.ends[0].end == first.stats[0].bytes  # up to the end of the line holding byte cut - 1
