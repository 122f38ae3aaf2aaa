"""Exactly-once without ``--watch``: batch runs share the ledger in ``output/.state``.

Every test runs the real command in a subprocess over real files, and compares what it wrote
with what one batch run from nothing writes into a fresh output folder.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import REPO, Workspace, run_cli, without_run
from tests.test_watch import log_lines, newlines, outputs

EXTRA_RULE = "- name: top-statuses\n  type: top_k\n  field: status\n  limit: {limit}\n"


def fresh_outputs(workspace: Workspace, name: str = "fresh-output") -> tuple[dict, dict]:
    """summary.json and anomalies.json of one batch run from nothing over the data folder as it is."""
    result = run_cli("--output-dir", str(workspace.root / name), cwd=workspace.root)
    assert result.returncode == 0, result.stderr
    return outputs(workspace.root / name)


def batch(workspace: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    return workspace.run(*args, check=True)


def enabled_rules(workspace: Workspace) -> list[str]:
    return yaml.safe_load(workspace.settings.read_text(encoding="utf-8"))["rules"]


def test_two_batch_runs_over_the_same_data_count_once(workspace):
    workspace.write("a.log", log_lines(1, 200))
    workspace.write("b.txt", log_lines(2, 150))
    batch(workspace)
    first = outputs(workspace.output)
    batch(workspace)
    assert outputs(workspace.output) == first == fresh_outputs(workspace)
    assert workspace.summary()["totals"]["lines"] == 350
    assert workspace.summary()["run"]["lines_read"] == 0


def test_a_later_run_reads_only_what_was_added(workspace):
    grown = workspace.write("a.log", log_lines(3, 120))
    batch(workspace)
    with open(grown, "a", encoding="utf-8") as out:
        out.write(log_lines(4, 30))
    workspace.write("b.log", log_lines(5, 40))
    batch(workspace)
    assert workspace.summary()["run"]["lines_read"] == 30 + 40
    assert outputs(workspace.output) == fresh_outputs(workspace)


def test_reset_starts_from_nothing(workspace):
    workspace.write("a.log", log_lines(6, 100))
    gone = workspace.write("gone.log", log_lines(7, 50))
    batch(workspace)
    batch(workspace)
    gone.unlink()
    batch(workspace)  # what was counted stays counted, even when its file is gone
    assert workspace.summary()["totals"]["lines"] == 150
    batch(workspace, "--reset")
    assert workspace.summary()["run"]["lines_read"] == 100
    assert outputs(workspace.output) == fresh_outputs(workspace)


def test_changing_a_rule_parameter_rebuilds_with_a_warning_and_equals_a_fresh_run(workspace):
    workspace.rules_file("extra.yaml", EXTRA_RULE.format(limit=2))
    workspace.configure(f"rules: {json.dumps(enabled_rules(workspace) + ['top-statuses'])}\n")
    workspace.write("a.log", log_lines(8, 300))
    batch(workspace)
    assert len(workspace.summary()["top_statuses"]) == 2
    workspace.rules_file("extra.yaml", EXTRA_RULE.format(limit=4))
    result = batch(workspace)
    assert ("configuration changed (rule 'top-statuses' has new parameters or keeps its state differently); "
            "rebuilding all counts from the files still present") in result.stderr
    assert workspace.summary()["run"]["lines_read"] == 300
    assert len(workspace.summary()["top_statuses"]) == 4
    assert outputs(workspace.output) == fresh_outputs(workspace)


def test_changing_how_lines_are_parsed_rebuilds_with_a_warning(workspace):
    workspace.write("a.log", log_lines(9, 100) + "2025-07-22T10:00:00Z INFO PaymentService u1 " + "x" * 300 + "\n")
    batch(workspace)
    assert workspace.summary()["totals"]["malformed_reasons"].get("too_long") is None
    workspace.configure("limits: {max_line_bytes: 256}\nchunk_bytes: 4096\n")
    result = batch(workspace)
    assert "configuration changed (parsing settings were" in result.stderr
    assert workspace.summary()["totals"]["malformed_reasons"]["too_long"] == 1
    assert outputs(workspace.output) == fresh_outputs(workspace)


def test_removing_a_rule_keeps_the_other_rules_state(workspace):
    workspace.write("a.log", log_lines(10, 200))
    gone = workspace.write("gone.log", log_lines(11, 100))
    batch(workspace)
    before, _ = outputs(workspace.output)
    gone.unlink()  # a rebuild could no longer count it: its counts staying show the state was kept
    rules = enabled_rules(workspace)
    assert "top-users" in rules
    workspace.configure(f"rules: {json.dumps([r for r in rules if r != 'top-users'])}\n")
    result = batch(workspace, "-v")
    assert "rebuilding" not in result.stderr
    assert "rule 'top-users' is no longer enabled; dropping its state" in result.stderr
    after, _ = outputs(workspace.output)
    assert workspace.summary()["run"]["lines_read"] == 0
    assert "top_users" not in after and "top-users" not in after["rules"]
    assert after == {k: v for k, v in before.items() if k != "top_users"} | {
        "rules": {k: v for k, v in before["rules"].items() if k != "top-users"},
        "details": {k: v for k, v in before["details"].items() if k != "top_users"},
    }


def test_a_last_line_without_newline_is_counted_once_even_when_it_is_completed_later(workspace):
    path = workspace.write("a.log", log_lines(12, 10) + "2025-07-22T10:00:00Z SUCCESS PaymentService user1 paid")
    batch(workspace)
    assert workspace.summary()["totals"]["lines"] == 11  # a batch run counts the unterminated line
    with open(path, "a", encoding="utf-8") as out:
        out.write(" 12 EUR\n" + log_lines(13, 5))
    result = batch(workspace)
    assert "a.log: line 11 grew after it was counted; the added text is not counted" in result.stderr
    assert workspace.summary()["totals"]["lines"] == 16 == newlines(path)
    assert workspace.summary()["run"]["lines_read"] == 5


def test_a_batch_run_killed_at_random_points_loses_and_doubles_nothing(workspace):
    rng = random.Random(42)
    workspace.configure("chunk_bytes: 65536\nlimits: {max_line_bytes: 8192}\n")
    workspace.write("big.log", log_lines(14, 60_000))
    workspace.write("small.log", log_lines(15, 500))
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "core.cli"], cwd=workspace.root,
                                env={**os.environ, "PYTHONPATH": str(REPO)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(rng.uniform(0.3, 1.5))  # the random point of the kill
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    batch(workspace)
    assert outputs(workspace.output) == fresh_outputs(workspace)


# -- one file under several names, and rewrites (issue 14, items 4-6) --------------------------------


def _batch_in_process(workspace: Workspace, caplog) -> dict:
    from core.cli import main

    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(["--settings", str(workspace.settings), "--quiet"]) == 0
    return workspace.summary()


def test_a_file_renamed_to_a_name_that_still_matches_is_not_counted_again(workspace, caplog):
    workspace.write("x.log", log_lines(20, 100))
    _batch_in_process(workspace, caplog)
    os.rename(workspace.data / "x.log", workspace.data / "x-20250722.log")  # rotated
    workspace.write("x.log", log_lines(21, 40))  # and a new x.log
    summary = _batch_in_process(workspace, caplog)
    assert "x.log was renamed to x-20250722.log: counting on from byte" in caplog.text
    assert summary["totals"]["lines"] == 140
    assert summary["run"]["lines_read"] == 40
    fresh_summary, _ = fresh_outputs(workspace)
    by_path = sorted(summary["files"], key=lambda f: f["path"])
    assert by_path == sorted(fresh_summary["files"], key=lambda f: f["path"])
    assert {**without_run(summary), "files": by_path} == {**fresh_summary, "files": by_path}


def test_a_renamed_file_that_grew_is_counted_on_from_its_offset(workspace, caplog):
    path = workspace.write("app.log", log_lines(22, 50))
    _batch_in_process(workspace, caplog)
    with open(path, "a", encoding="utf-8") as out:
        out.write(log_lines(23, 7))
    os.rename(path, workspace.data / "app.log.1.log")
    summary = _batch_in_process(workspace, caplog)
    assert summary["run"]["lines_read"] == 7
    assert summary["totals"]["lines"] == 57


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_a_link_to_a_counted_file_added_later_is_not_counted_again(workspace, caplog, link):
    target = workspace.write("b.log", log_lines(24, 100))
    _batch_in_process(workspace, caplog)
    made = workspace.data / "a-link.log"  # sorts before its target
    os.link(target, made) if link == "hard" else made.symlink_to(target)
    summary = _batch_in_process(workspace, caplog)
    assert "a-link.log is the same file as b.log, which is counted: read once" in caplog.text
    assert summary["totals"]["lines"] == 100
    assert summary["run"]["lines_read"] == 0


def test_a_file_rewritten_in_place_longer_with_the_same_first_bytes_is_read_again_from_the_start(workspace, caplog):
    head = log_lines(25, 30)  # more than the 1 KiB fingerprint
    assert len(head.encode()) > 1024
    path = workspace.write("r.log", head + log_lines(26, 20))
    _batch_in_process(workspace, caplog)
    path.write_text(head + log_lines(27, 40), encoding="utf-8")  # same inode, same first KiB, longer
    summary = _batch_in_process(workspace, caplog)
    assert "r.log was replaced, rewritten or truncated; reading it again as a new file" in caplog.text
    assert summary["run"]["lines_read"] == 70
    assert summary["totals"]["lines"] == 50 + 70  # what was counted stays counted, the new content is all read
    assert summary["totals"]["malformed"] == newlines_malformed(head + log_lines(26, 20)) + newlines_malformed(
        head + log_lines(27, 40))


def newlines_malformed(text: str) -> int:
    """Malformed lines of ``log_lines`` text (one in 23 is prose)."""
    return sum(1 for line in text.splitlines() if line.startswith("not a payment line"))


def test_a_rotated_file_found_after_its_old_name_was_reused_is_not_counted_again(workspace, caplog):
    # "app.log" sorts before "app.log.1.log": the new app.log is met first and replaces the old
    # one's entry; the ledger still knows the old file when it turns up under its new name.
    path = workspace.write("app.log", log_lines(32, 100))
    _batch_in_process(workspace, caplog)
    os.rename(path, workspace.data / "app.log.1.log")
    workspace.write("app.log", log_lines(33, 40))
    summary = _batch_in_process(workspace, caplog)
    assert "app.log was renamed to app.log.1.log: counting on from byte" in caplog.text
    assert summary["totals"]["lines"] == 140
    assert summary["run"]["lines_read"] == 40
    assert _batch_in_process(workspace, caplog)["run"]["lines_read"] == 0  # and it stays known
