"""Small files are read together, several to a chunk of work (issue 14, item 17): nothing a user sees changes.

A folder of thousands of small files cost about 10 ms a file when each was a chunk of its own
(every rule's update, a partial state and a merge per file). The engine now hands the rules one
batch of many small files; these tests check that the outputs are those of one file at a time,
on generated logs with planted anomalies and dirty lines, cut into files of random sizes.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import engine
from tests.conftest import REPO, Workspace, load_bench, without_run

#: A rule of a third-party plugin written before batches could hold several files: it must only
#: ever see one file's records at a time, under ``batch.path``. And one that takes many at once.
PLUGIN = '''\
from core import Result, Rule, hookimpl


class OneFileAtATime(Rule):
    type_name = "one_file_at_a_time"

    def setup(self):
        self.batches, self.mixed, self.records = 0, 0, 0

    def update(self, batch):
        self.batches += 1
        self.mixed += int(set(batch.frame["file"].to_list()) - {batch.path} != set() or not batch.path)
        self.records += len(batch)

    def merge(self, other):
        self.batches += other.batches
        self.mixed += other.mixed
        self.records += other.records

    def result(self):
        return Result({"batches": self.batches, "mixed": self.mixed, "records": self.records})


class ManyFilesAtOnce(OneFileAtATime):
    type_name = "many_files_at_once"
    many_files = True

    def setup(self):
        super().setup()
        self.most = 0

    def update(self, batch):
        super().update(batch)
        self.most = max(self.most, len(set(batch.frame["file"].to_list())))

    def merge(self, other):
        super().merge(other)
        self.most = max(self.most, other.most)

    def result(self):
        return Result({"records": self.records, "most_files_in_a_batch": self.most})


@hookimpl
def register_rule_types(register):
    register(OneFileAtATime)
    register(ManyFilesAtOnce)
'''
EXTRA_RULES = """\
- {name: one-file, type: one_file_at_a_time}
- {name: many-files, type: many_files_at_once}
- {name: late-lines, type: timestamp, max_lateness: 1m, max_future: 5m}
"""


@pytest.fixture(scope="module", params=[(7, 30_000, 1), (11, 20_000, 0.25)], ids=["1-day", "6-hours"])
def log_lines(request, tmp_path_factory) -> list[bytes]:
    """A generated log with planted anomalies and dirty lines: seed, lines and days vary."""
    seed, lines, days = request.param
    out = tmp_path_factory.mktemp("generated") / "all.log"
    load_bench("generate").main(["--out", str(out), "--lines", str(lines), "--days", str(days),
                                 "--seed", str(seed), "--long-every", "0"])
    return out.read_bytes().splitlines(keepends=True)


def cut_into_files(workspace, lines: list[bytes], seed: int) -> int:
    """The log as consecutive files of 1 to 300 lines, named in order; how many."""
    rng, start, n = random.Random(seed), 0, 0
    while start < len(lines):
        size = rng.randint(1, 300)
        workspace.write(f"part-{n:05d}.log", b"".join(lines[start:start + size]))
        start, n = start + size, n + 1
    return n


def configure(workspace, module: str) -> None:
    (workspace.root / f"{module}.py").write_text(PLUGIN, encoding="utf-8")
    workspace.rules_file("extra.yaml", EXTRA_RULES)
    workspace.configure(f"""\
        plugins: [{module}]
        rules: [payment-statuses, top-services, top-users, peak-hours, unknown-statuses, implausible-timestamps,
                error-spikes, busy-users, duplicate-events, silent-services, one-file, many-files, late-lines]
        """)


def make_workspace(root: Path) -> Workspace:
    shutil.copytree(REPO / "rules", root / "rules")
    shutil.copy(REPO / "settings.yaml", root / "settings.yaml")
    (root / "data").mkdir()
    return Workspace(root)


def outputs(workspace) -> tuple[dict, dict]:
    anomalies = json.loads((workspace.output / "anomalies.json").read_text(encoding="utf-8"))
    return without_run(workspace.summary()), {k: v for k, v in anomalies.items() if k not in ("run", "generated_at")}


def test_small_files_read_together_give_the_outputs_of_one_file_at_a_time(log_lines, tmp_path, monkeypatch):
    runs = []
    for together in (True, False):
        workspace = make_workspace(tmp_path / ("together" if together else "one-by-one"))
        files = cut_into_files(workspace, log_lines, seed=len(log_lines))
        configure(workspace, f"small_files_plugin_{len(log_lines)}_{together}")
        if not together:
            monkeypatch.setattr(engine, "MAX_FILES_PER_CHUNK", 1)
        assert workspace.main() in (0, 1), "the run failed"
        runs.append(outputs(workspace))
        monkeypatch.undo()

    (summary, anomalies), (one_by_one, one_by_one_anomalies) = runs
    assert files > 100
    # The third-party rule saw one file per batch either way; the other one saw many at once.
    # (A file whose last line has no newline is two chunks: a batch each.)
    assert summary["one_file"]["batches"] >= files
    assert summary["one_file"]["mixed"] == 0
    assert summary["one_file"]["records"] == summary["totals"]["records"]
    assert summary["many_files"]["records"] == summary["totals"]["records"]
    assert summary["many_files"]["most_files_in_a_batch"] > 100
    assert one_by_one["many_files"]["most_files_in_a_batch"] == 1
    for name in ("many_files",):
        summary.pop(name), one_by_one.pop(name)
    assert summary == one_by_one
    assert anomalies["anomalies"], "the generated log plants anomalies: some must be found"
    assert any(sample.get("text") for incident in anomalies["anomalies"] for sample in incident["samples"])
    assert anomalies == one_by_one_anomalies


def test_a_watcher_catching_up_on_many_small_files_counts_them_as_a_batch_run_does(log_lines, workspace):
    files = cut_into_files(workspace, log_lines[:10_000], seed=3)
    batch_out = workspace.root / "batch-output"
    assert workspace.main("--output-dir", str(batch_out)) in (0, 1)
    expected = json.loads((batch_out / "summary.json").read_text(encoding="utf-8"))

    watcher = subprocess.Popen([sys.executable, "-m", "core.cli", "--watch", "-q"], cwd=workspace.root,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, seen = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            path = workspace.output / "summary.json"
            if path.exists():
                seen = json.loads(path.read_text(encoding="utf-8"))
                if seen["totals"]["lines"] >= expected["totals"]["lines"]:
                    break
            time.sleep(0.1)
    finally:
        watcher.send_signal(signal.SIGTERM)
        _, stderr = watcher.communicate(timeout=30)
    assert watcher.returncode in (0, 1), stderr
    final = workspace.summary()
    assert len(expected["files"]) == files
    for key in ("totals", "payment_statuses", "top_services", "top_users", "peak_hours", "malformed_samples"):
        assert final[key] == expected[key], key
    assert {f["path"]: f for f in final["files"]} == {f["path"]: f for f in expected["files"]}

