"""A service that runs for months: what summary.json lists and what each commit writes stay bounded,
however many files were seen, while the totals count every one of them (issue 14, item 18)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from core import checkpoint as checkpoints
from core import ledgerbase
from core.checkpoint import FILE_NAME
from core.cli import main
from core.plugins import get_plugin_manager, rule_types
from core.ruleset import load_rules
from core.settings import load_settings
from core.validation import SchemaCheck
from tests.conftest import REPO, Workspace
from tests.test_watch import Watcher, log_lines, newlines


def run(workspace: Workspace, *args: str) -> int:
    return workspace.main("--quiet", *args)


def listed(summary: dict) -> list[str]:
    return [f["path"] for f in summary["files"]]


def saved_ledger(workspace: Workspace):
    """The ledger as the last commit left it, read back as a run reads it."""
    settings = load_settings(workspace.settings)
    return checkpoints.load(settings, load_rules(settings, rule_types(get_plugin_manager(load_entrypoints=False)))).ledger


def test_summary_lists_the_most_recent_files_and_its_totals_count_them_all(workspace):
    workspace.configure("limits: {summary_files: 4}\n")
    for n in range(10):
        workspace.write(f"{chr(ord('a') + n)}.log", log_lines(n, 30))
    assert run(workspace) == 0
    summary = workspace.summary()
    assert listed(summary) == ["g.log", "h.log", "i.log", "j.log"]  # read in name order, the last 4
    assert {s["file"] for s in summary["malformed_samples"]} == {"g.log", "h.log", "i.log", "j.log"}
    assert summary["omitted"] == {"files": 6, "file_errors": 0}
    assert summary["totals"]["files"] == 10
    assert summary["totals"]["lines"] == newlines(*workspace.data.iterdir()) == 300
    assert summary["totals"]["malformed_reasons"] == {"bad_timestamp": 10}
    every_file = workspace.root / "every-file.yaml"  # the same run, listing every file
    every_file.write_text(workspace.settings.read_text(encoding="utf-8") + "\nlimits: {summary_files: 100}\n")
    assert main(["--settings", str(every_file), "--quiet", "--output-dir", str(workspace.root / "all")]) == 0
    everything = json.loads((workspace.root / "all" / "summary.json").read_text(encoding="utf-8"))
    assert len(everything["files"]) == 10 and everything["omitted"] == {"files": 0, "file_errors": 0}
    assert everything["totals"] == summary["totals"]

    workspace.write("0-late.log", log_lines(10, 30))  # counted last: listed, though first by name
    assert run(workspace) == 0
    summary = workspace.summary()
    assert listed(summary) == ["0-late.log", "h.log", "i.log", "j.log"]
    assert summary["omitted"] == {"files": 7, "file_errors": 0}
    assert summary["totals"]["files"] == 11 and summary["totals"]["lines"] == 330


def test_file_errors_are_listed_up_to_the_limit_and_the_others_counted(workspace):
    workspace.configure("limits: {summary_files: 2}\n")
    workspace.write("good.log", log_lines(1, 10))
    for name in ("p1.log", "p2.log", "p3.log"):
        os.mkfifo(workspace.data / name)
    assert run(workspace) == 3
    summary = workspace.summary()
    assert [e["file"] for e in summary["file_errors"]] == ["p1.log", "p2.log"]
    assert summary["omitted"] == {"files": 0, "file_errors": 1}
    (workspace.data / "p1.log").unlink()
    (workspace.data / "p2.log").unlink()
    assert run(workspace) == 3
    assert [e["file"] for e in workspace.summary()["file_errors"]] == ["p3.log"]
    assert workspace.summary()["omitted"]["file_errors"] == 0


def test_a_watcher_lists_the_files_it_counted_last_and_counts_every_file(workspace, tmp_path):
    workspace.configure("limits: {summary_files: 3}\nwatch: {settle_ms: 200, status_seconds: 30}\n")
    names = [f"f-{n}.log" for n in (5, 4, 3, 2, 1, 0)]  # arrive in the reverse of their name order
    with Watcher(workspace) as watcher:
        watcher.wait_started()
        expected = 0
        for seed, name in enumerate(names):
            temp = workspace.data / f".{name}.tmp"
            temp.write_text(log_lines(seed, 40), encoding="utf-8")
            os.rename(temp, workspace.data / name)
            expected += 40
            summary = watcher.wait_for_lines(expected)
        assert listed(summary) == ["f-0.log", "f-1.log", "f-2.log"]
        assert summary["omitted"] == {"files": 3, "file_errors": 0}
        assert summary["totals"]["files"] == 6
        assert watcher.stop() == 0
    batch = tmp_path / "batch"
    assert workspace.main("--quiet", "--output-dir", str(batch), "--reset") == 0
    assert json.loads((batch / "summary.json").read_text(encoding="utf-8"))["totals"] == summary["totals"]


def test_a_file_that_left_is_remembered_by_its_identity_only_and_not_counted_again_when_it_comes_back(
        workspace, tmp_path, monkeypatch):
    monkeypatch.setattr(ledgerbase, "REBASE_AFTER", 4)  # so that many files mean several new base files
    workspace.configure("rules: [payment-statuses]\n")
    path = workspace.write("a.log", log_lines(1, 50))
    identity = (os.stat(path).st_dev, os.stat(path).st_ino)
    assert run(workspace) == 0
    away = tmp_path / "away.log"
    os.rename(path, away)
    for n in range(12):
        workspace.write(f"other-{n:02d}.log", log_lines(10 + n, 5))
        assert run(workspace) == 0
    ledger = saved_ledger(workspace)
    assert "a.log" not in ledger.entries  # no name kept for a file that left
    assert identity in ledger.departed
    assert len(list((workspace.output / ".state").glob(ledgerbase.GLOB))) == 1  # replaced bases are removed

    os.rename(away, workspace.data / "a-20250722.log")  # a rotated file comes back under another name
    assert run(workspace) == 0
    summary = workspace.summary()
    assert summary["run"]["lines_read"] == 0
    assert summary["totals"]["lines"] == 50 + 12 * 5
    assert "a-20250722.log" in saved_ledger(workspace).entries


@pytest.mark.parametrize("files", [60])
def test_what_a_commit_writes_does_not_grow_with_the_files_seen(tmp_path, monkeypatch, files):
    monkeypatch.setattr(ledgerbase, "REBASE_AFTER", 8)

    def written_after(count: int) -> tuple[int, int]:
        """Bytes of the checkpoint and of summary.json that one commit of one new file writes,
        after ``count`` files were counted."""
        workspace = Workspace(tmp_path / f"after-{count}")
        workspace.data.mkdir(parents=True)
        shutil.copy(REPO / "settings.yaml", workspace.settings)
        shutil.copytree(REPO / "rules", workspace.root / "rules")
        workspace.configure("rules: [payment-statuses]\nlimits: {summary_files: 4, malformed_samples: 5}\n")
        for n in range(count):
            workspace.write(f"{n:03d}.log", log_lines(n, 24))
        assert run(workspace) == 0
        workspace.write("new.log", log_lines(999, 24))
        assert run(workspace) == 0
        return ((workspace.output / ".state" / FILE_NAME).stat().st_size,
                (workspace.output / "summary.json").stat().st_size)

    few, many = written_after(6), written_after(files)
    assert many[0] <= few[0] + 200, f"checkpoint: {few[0]} bytes after 6 files, {many[0]} after {files}"
    assert many[1] <= few[1] + 200, f"summary.json: {few[1]} bytes after 6 files, {many[1]} after {files}"


def test_a_list_checked_item_by_item_reports_what_a_whole_check_reports_every_time():
    # summary.json's files and samples are checked item by item, and an item that passed is not
    # checked again while it stays listed: a bad item must still be reported, at every check.
    schema = {"type": "object", "properties": {
        "files": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}},
        "total": {"type": "integer"}}}
    by_item, whole = SchemaCheck(schema, shipped=True, lists=("files",)), SchemaCheck(schema, shipped=True)
    good = {"files": [{"n": 1}, {"n": 2}], "total": 3}
    bad = {"files": [{"n": 1}, {"n": -1}, {"n": 2.5}], "total": "x"}
    for document in (good, good, bad, bad, good, bad):
        assert by_item.problems(document) == whole.problems(document)
    assert by_item.problems(bad) == ["files[1].n: expected integer >= 0, got -1",
                                     "files[2].n: expected integer >= 0, got 2.5", "total: expected integer, got 'x'"]
