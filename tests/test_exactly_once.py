"""Exactly-once without ``--watch``: batch runs share the ledger in ``output/.state``.

Every test runs the real command in a subprocess over real files, and compares what it wrote
with what one batch run from nothing writes into a fresh output folder.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import REPO, Workspace, run_cli, without_run
from tests.test_watch import Watcher, log_lines, newlines, outputs

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


def enable_extra_rule(workspace: Workspace, limit: int = 2) -> None:
    """``top-statuses`` (``EXTRA_RULE``) in a rule file of its own, enabled beside the shipped rules."""
    workspace.rules_file("extra.yaml", EXTRA_RULE.format(limit=limit))
    workspace.configure(f"rules: {json.dumps(enabled_rules(workspace) + ['top-statuses'])}\n")


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


def test_changing_a_rule_parameter_rebuilds_that_rule_alone_and_equals_a_fresh_run(workspace):
    enable_extra_rule(workspace)
    grown = workspace.write("a.log", log_lines(8, 300))
    batch(workspace)
    assert len(workspace.summary()["top_statuses"]) == 2
    workspace.rules_file("extra.yaml", EXTRA_RULE.format(limit=4))
    with open(grown, "a", encoding="utf-8") as out:  # read after the rebuild, by every rule
        out.write(log_lines(81, 50))
    result = batch(workspace, "-v")
    assert ("rule 'top-statuses' has new parameters or keeps its state differently; rebuilding its state from "
            "the files still present") in result.stderr
    assert "rebuilt rule 'top-statuses' from 1 file still in the data folder (300 lines)" in result.stderr
    assert "rebuilding all" not in result.stderr and "rebuilt rules" not in result.stderr
    assert workspace.summary()["run"]["lines_read"] == 50
    assert len(workspace.summary()["top_statuses"]) == 4
    assert outputs(workspace.output) == fresh_outputs(workspace)


def test_changing_a_rule_parameter_keeps_the_other_rules_state(workspace):
    enable_extra_rule(workspace)
    workspace.write("a.log", log_lines(14, 200))
    gone = workspace.write("gone.log", log_lines(15, 100))
    batch(workspace)
    before, _ = outputs(workspace.output)
    gone.unlink()  # the other rules keep what they counted of it; the rebuilt rule can no longer count it
    workspace.rules_file("extra.yaml", EXTRA_RULE.format(limit=3))
    batch(workspace)
    after, _ = outputs(workspace.output)
    alone, _ = fresh_outputs(workspace)  # a.log alone
    assert after["totals"]["lines"] == 300

    def others(summary: dict) -> dict:
        details = {k: v for k, v in summary["details"].items() if k != "top_statuses"}
        kept = {k: v for k, v in summary.items() if k not in ("top_statuses", "rules", "details")}
        return kept | {"details": details}

    assert others(after) == others(before)
    assert after["top_statuses"] == alone["top_statuses"] != before["top_statuses"][:3]


def test_a_rule_rebuilt_after_a_file_was_replaced_counts_its_new_content_once(workspace):
    enable_extra_rule(workspace)
    workspace.write("a.log", log_lines(16, 100))
    replaced = workspace.write("x.log", log_lines(17, 100))
    batch(workspace)
    replaced.write_text(log_lines(18, 60), encoding="utf-8")  # rewritten in place: read again as a new file
    workspace.rules_file("extra.yaml", EXTRA_RULE.format(limit=5))
    result = batch(workspace, "-v")
    assert "rebuilt rule 'top-statuses' from 1 file still in the data folder (100 lines)" in result.stderr
    assert workspace.summary()["run"]["lines_read"] == 60
    fresh, _ = fresh_outputs(workspace)  # a.log and the new x.log
    assert workspace.summary()["top_statuses"] == fresh["top_statuses"]
    assert workspace.summary()["details"]["top_statuses"] == fresh["details"]["top_statuses"]


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
    _killed_at_random(workspace, rng, 3, 0.3, 1.5)
    batch(workspace)
    assert outputs(workspace.output) == fresh_outputs(workspace)


def _killed_at_random(workspace: Workspace, rng: random.Random, times: int, earliest: float = 0.2,
                      latest: float = 1.2) -> None:
    """Start a batch run ``times`` times, each killed with SIGKILL ``earliest`` to ``latest`` seconds in."""
    for _ in range(times):
        proc = subprocess.Popen([sys.executable, "-m", "core.cli"], cwd=workspace.root,
                                env={**os.environ, "PYTHONPATH": str(REPO)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(rng.uniform(earliest, latest))  # the random point of the kill
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)


def _change(workspace: Workspace, change: str) -> None:
    """A rotation (rename, and a new file under the old name), two links, or a rewrite in place."""
    data = workspace.data
    if change == "rename":
        os.rename(data / "big.log", data / "big-20250722.log")
        workspace.write("big.log", log_lines(16, 40_000))
    elif change == "link":
        os.link(data / "small.log", data / "a-small.log")
        (data / "z-big.log").symlink_to(data / "big.log")
        workspace.write("more.log", log_lines(17, 40_000))
    else:  # the same first bytes, longer: read again from the start
        (data / "big.log").write_text(log_lines(14, 20) + log_lines(18, 70_000), encoding="utf-8")


@pytest.mark.parametrize("change", ["rename", "link", "rewrite"])
def test_kills_before_and_after_a_rename_a_link_or_a_rewrite_give_the_result_of_the_same_changes_unkilled(
        tmp_path, change):
    rng = random.Random(change)
    spaces = []
    for name in ("killed", "clean"):
        root = tmp_path / name
        root.mkdir()
        shutil.copy(REPO / "settings.yaml", root / "settings.yaml")
        shutil.copytree(REPO / "rules", root / "rules")
        workspace = Workspace(root)
        workspace.configure("chunk_bytes: 65536\nlimits: {max_line_bytes: 8192}\n")
        workspace.write("big.log", log_lines(14, 60_000))
        workspace.write("small.log", log_lines(15, 500))
        spaces.append(workspace)
    killed, clean = spaces
    _killed_at_random(killed, rng, 2)
    batch(killed)
    batch(clean)
    for workspace in spaces:
        _change(workspace, change)
    _killed_at_random(killed, rng, 2)
    batch(killed)
    batch(clean)
    assert outputs(killed.output) == outputs(clean.output)
    if change == "rewrite":
        return
    # Nothing was rewritten: one batch over the final files counts the same. (It reads a file
    # under the first of its names, a-small.log, where the ledger knew it as small.log first.)
    fresh_summary, _ = fresh_outputs(killed)
    summary, _ = outputs(killed.output)
    named = ("files", "malformed_samples")  # where the file's name shows
    assert {k: v for k, v in summary.items() if k not in named} == {
        k: v for k, v in fresh_summary.items() if k not in named}
    if change == "rename":
        by_path = sorted(summary["files"], key=lambda f: f["path"])
        assert by_path == sorted(fresh_summary["files"], key=lambda f: f["path"])


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
    os.rename(path, workspace.data / "app.log.1.log")  # and nothing new at its old name
    summary = _batch_in_process(workspace, caplog)
    assert "app.log was renamed to app.log.1.log: counting on from byte" in caplog.text
    assert summary["run"]["lines_read"] == 7
    assert summary["totals"]["lines"] == 57
    # Its counts moved with it: one file, listed once, under the name it has now.
    assert [f["path"] for f in summary["files"]] == ["app.log.1.log"]
    assert summary["totals"]["files"] == 1
    fresh_summary, _ = fresh_outputs(workspace)
    assert without_run(summary) == fresh_summary


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


# -- one process per output folder ------------------------------------------------------------


def test_a_second_run_on_an_output_folder_in_use_is_refused_at_once_naming_the_holder(workspace):
    # A batch run beside a watcher overwrote the watcher's commit: a whole file's records vanished.
    workspace.configure("watch: {settle_ms: 200, status_seconds: 30}\n")
    workspace.write("a.log", log_lines(16, 80))
    with Watcher(workspace) as watcher:
        watcher.wait_for_lines(80)
        before = (workspace.output / "summary.json").read_bytes()
        started = time.monotonic()
        result = workspace.run()
        took = time.monotonic() - started
        assert result.returncode == 75, result.stderr
        assert took < 10, f"refused after {took:.1f} s, not at once"
        assert "Traceback" not in result.stderr
        assert (f"runpipeline: output folder '{workspace.output.resolve()}' is in use by another run: "
                f"pid {watcher.proc.pid} (runpipeline --watch)") in result.stderr
        assert "--wait-lock" in result.stderr
        assert (workspace.output / "summary.json").read_bytes() == before
        # Ctrl-C ends a --wait-lock wait at once (SIGINT as a terminal delivers it: not ignored).
        waiting = subprocess.Popen([sys.executable, "-m", "core.cli", "--wait-lock"], cwd=workspace.root,
                                   env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            assert "waiting for it to finish (--wait-lock)" in waiting.stderr.readline()
            waiting.send_signal(signal.SIGINT)
            assert waiting.wait(timeout=5) == 130
            assert "runpipeline: interrupted" in waiting.stderr.read()
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait(timeout=30)
        assert (workspace.output / "summary.json").read_bytes() == before
        assert watcher.stop() == 0


def test_wait_lock_waits_for_the_holder_to_stop_then_runs_and_nothing_is_lost(workspace):
    workspace.configure("watch: {settle_ms: 200, status_seconds: 30}\n")
    workspace.write("a.log", log_lines(17, 60))
    log_path = workspace.root / "waiting.log"
    with Watcher(workspace) as watcher:
        watcher.wait_for_lines(60)
        with open(log_path, "wb") as log:
            waiting = subprocess.Popen([sys.executable, "-m", "core.cli", "--wait-lock"], cwd=workspace.root,
                                       env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=log, stderr=log)
        try:
            watcher.wait_for(lambda: "waiting for it to finish" in log_path.read_text(encoding="utf-8"),
                             "the waiting run's message", timeout=30)
            assert f"pid {watcher.proc.pid} (runpipeline --watch)" in log_path.read_text(encoding="utf-8")
            workspace.write("b.log", log_lines(18, 40))  # counted by the watcher, while the other run waits
            watcher.wait_for_lines(100)
            assert waiting.poll() is None, log_path.read_text(encoding="utf-8")
            assert watcher.stop() == 0
            assert waiting.wait(timeout=60) == 0, log_path.read_text(encoding="utf-8")
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait(timeout=30)
    assert workspace.summary()["totals"]["lines"] == 100
    assert workspace.summary()["run"]["lines_read"] == 0
    assert outputs(workspace.output) == fresh_outputs(workspace)


def test_an_output_or_state_folder_that_is_a_file_and_a_symlinked_lock_are_refused_naming_them(workspace, capsys):
    workspace.write("a.log", log_lines(43, 5))
    workspace.output.write_text("not a folder\n", encoding="utf-8")
    assert workspace.main("-q") == 2
    assert f"output folder '{workspace.output}' is not a folder" in capsys.readouterr().err
    workspace.output.unlink()
    (workspace.output).mkdir()
    (workspace.output / ".state").write_text("not a folder\n", encoding="utf-8")
    assert workspace.main("-q") == 2
    assert f"state folder '{workspace.output / '.state'}' is not a folder" in capsys.readouterr().err
    (workspace.output / ".state").unlink()
    (workspace.output / ".state").mkdir()
    target = workspace.root / "precious.txt"
    target.write_text("keep me\n", encoding="utf-8")
    (workspace.output / ".state" / "lock").symlink_to(target)
    assert workspace.main("-q") == 1
    assert "cannot open the lock file (Too many levels of symbolic links" in capsys.readouterr().err
    assert target.read_text(encoding="utf-8") == "keep me\n"  # never followed, never written


def test_a_watcher_whose_output_folder_was_deleted_takes_the_lock_again_or_stops_if_another_run_has_it(workspace):
    # The lock is on a file in the output folder: deleted, a run started then made a new one and ran
    # beside the watcher, both committing to the same folder.
    workspace.configure("watch: {settle_ms: 200, status_seconds: 30}\n")
    workspace.write("a.log", log_lines(40, 30))
    with Watcher(workspace) as watcher:
        watcher.wait_for_lines(30)
        shutil.rmtree(workspace.output)
        workspace.write("b.log", log_lines(41, 20))
        watcher.wait_for_lines(50)  # nobody else took it: taken again, and every file still counted
        assert "was deleted or replaced while this process held it" in watcher.log
        shutil.rmtree(workspace.output)
        (workspace.output / ".state").mkdir(parents=True)
        holder = subprocess.Popen(  # another process takes the new lock file and holds it
            [sys.executable, "-c", "import fcntl, os, sys, time\n"
             "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
             "print('held', flush=True)\ntime.sleep(60)", str(workspace.output / ".state" / "lock")],
            stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline() == "held\n"
            workspace.write("c.log", log_lines(42, 10))
            assert watcher.proc.wait(timeout=30) == 75
            assert f"output folder '{workspace.output.resolve()}' is in use by another run" in watcher.log
            assert "Traceback" not in watcher.log
        finally:
            holder.kill()
            holder.wait(timeout=30)


# -- one data folder per output folder --------------------------------------------------------


def test_an_output_folder_of_another_data_folder_is_refused_until_reset(workspace):
    # Reused with another --data-dir, the counts of both folders were silently merged.
    workspace.write("a.log", log_lines(19, 70))
    other = workspace.root / "other"
    other.mkdir()
    (other / "b.log").write_text(log_lines(20, 30), encoding="utf-8")
    batch(workspace)
    before = (workspace.output / "summary.json").read_bytes()
    result = workspace.run("--data-dir", "other")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert (f"runpipeline: output folder '{workspace.output.resolve()}' holds the counts of data folder "
            f"'{workspace.data.resolve()}', not of '{other.resolve()}'; run with --reset to count "
            f"'{other.resolve()}' from nothing there, or choose another --output-dir") in result.stderr
    assert (workspace.output / "summary.json").read_bytes() == before
    # The same folder by another spelling (a path through a symlink) is the same folder.
    (workspace.root / "alias").symlink_to(workspace.data)
    assert batch(workspace, "--data-dir", "alias").returncode == 0
    assert workspace.summary()["totals"]["lines"] == 70
    batch(workspace, "--data-dir", "other", "--reset")
    assert workspace.summary()["totals"]["lines"] == 30
    assert [f["path"] for f in workspace.summary()["files"]] == ["b.log"]
    assert workspace.run().returncode == 2  # bound to 'other' now


# -- SIGTERM during a batch run ---------------------------------------------------------------


def test_sigterm_during_a_batch_run_commits_writes_the_outputs_and_exits_143(workspace):
    # It exited 143 with no message and no outputs.
    workspace.configure("chunk_bytes: 65536\nlimits: {max_line_bytes: 8192}\n")
    workspace.write("a.log", log_lines(21, 50))
    big = workspace.write("big.log", log_lines(22, 100_000))
    log_path = workspace.root / "batch.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "core.cli", "-v"], cwd=workspace.root,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while "core.committer: a.log: 50 lines" not in log_path.read_text(encoding="utf-8"):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text(encoding="utf-8")
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)  # while big.log is read
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    text = log_path.read_text(encoding="utf-8")
    assert code == 143, text
    assert "Traceback" not in text
    assert ("runpipeline: stopped by SIGTERM: what was read is committed and the outputs are written; "
            "run again to read the rest") in text
    summary = workspace.summary()
    assert 50 < summary["totals"]["lines"] < 50 + newlines(big), "the signal did not land mid-file"
    assert [f["path"] for f in summary["files"]] == ["a.log", "big.log"]
    assert outputs(workspace.output)[0]["totals"] == summary["totals"]  # anomalies.json written too
    batch(workspace)  # reads the rest, and only the rest
    assert workspace.summary()["run"]["lines_read"] == 50 + newlines(big) - summary["totals"]["lines"]
    assert outputs(workspace.output) == fresh_outputs(workspace)


def test_temporary_files_left_by_a_kill_are_removed_at_the_next_start(workspace):
    workspace.write("a.log", log_lines(23, 40))
    batch(workspace)
    # What a kill -9 during an atomic write leaves (core/output.py: atomic_write's temp names).
    left = [workspace.output / ".state" / ".checkpoint.pickle.k1ll3d.tmp",
            workspace.output / ".summary.json.x7q2.tmp", workspace.output / ".anomalies.json.abc_9.tmp"]
    for path in left:
        path.write_bytes(b"half a write")
    mine = workspace.output / "notes.tmp"  # not ours: kept
    mine.write_text("a user's file\n", encoding="utf-8")
    result = batch(workspace, "-v")
    assert [path for path in left if path.exists()] == []
    assert mine.read_text(encoding="utf-8") == "a user's file\n"
    assert "removed 3 temporary files left by an interrupted run" in result.stderr
    assert outputs(workspace.output) == fresh_outputs(workspace)


STUCK = '''\
"""stuck: a rule whose update never returns, as a plugin's bug may do."""

import pathlib
import time

from core import Result, Rule, hookimpl


class Stuck(Rule):
    type_name = "stuck"

    def update(self, batch):
        pathlib.Path("stuck.marker").touch()  # in the run's folder: the test waits for it
        time.sleep(3600)

    def merge(self, other):
        pass

    def result(self):
        return Result(0)


@hookimpl
def register_rule_types(register):
    register(Stuck)
'''


def test_a_second_sigterm_stops_at_once_even_when_a_chunk_never_finishes(workspace):
    # The first signal waits for the chunks in flight; a plugin that never returns kept the run
    # (or a watcher) alive through any number of signals.
    (workspace.root / "stuck.py").write_text(STUCK, encoding="utf-8")
    workspace.rules_file("stuck.yaml", "- {name: stuck-rule, type: stuck}\n")
    workspace.configure("plugins: [stuck]\nrules: [payment-statuses, stuck-rule]\n")
    workspace.write("a.log", log_lines(24, 20))
    proc = subprocess.Popen([sys.executable, "-m", "core.cli"], cwd=workspace.root,
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (workspace.root / "stuck.marker").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):  # the first one waits for the chunk in flight
            proc.wait(timeout=1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "runpipeline: interrupted; the last commit stands, and the next run goes on from it" in stderr
    assert not (workspace.output / "summary.json").exists()  # nothing was committed: nothing written
    assert [p.name for p in workspace.output.rglob("*.tmp")] == []
