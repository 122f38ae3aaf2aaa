"""``runpipeline --watch`` as a user meets it: each kind of file users drop, and a graceful stop.

Every test runs the real command in a subprocess over real files, and waits for what it expects
by polling ``output/summary.json`` (or the watcher's log) against a deadline; no sleep stands in
for an event. Where the final files allow it, the watcher's outputs are compared with a batch run
over the same files into a fresh output folder. The helpers here are shared with
``test_watch_load.py``.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.conftest import REPO, Workspace, run_cli, without_run

#: How long any awaited condition may take before the test fails; generous, for a loaded CI box.
DEADLINE = 60.0
STATUSES = ("SUCCESS", "SUCCESS", "SUCCESS", "INFO", "WARN", "FAILURE", "ERROR")
SERVICES = ("PaymentService", "CheckoutService", "AuthenticationService", "RefundService", "WalletService")


def log_lines(seed: int, count: int) -> str:
    """``count`` deterministic lines: mostly records, with a malformed and a blank line now and then.

    Every timestamp falls within 20 minutes, well inside the shipped detectors' retention (1 h and
    more): then no record is ever late, and the detectors' results do not depend on the order the
    files arrive in or on how they are cut into chunks (see plugins/windows.py). Only then can a
    watcher's outputs equal a batch run's.
    """
    rng = random.Random(seed)
    out = []
    for n in range(count):
        if n % 23 == 22:
            out.append(f"not a payment line {seed}\n")
        elif n % 31 == 30:
            out.append("\n")
        else:
            ts = f"2025-07-22T10:{rng.randrange(20):02d}:{rng.randrange(60):02d}Z"
            out.append(f"{ts} {rng.choice(STATUSES)} {rng.choice(SERVICES)} user{rng.randrange(300)} "
                       f"paid {rng.randrange(1, 999)} EUR\n")
    return "".join(out)


def newlines(*paths: Path) -> int:
    """The complete lines in these files: what a watcher counts once it has caught up."""
    return sum(path.read_bytes().count(b"\n") for path in paths)


def summary_of(workspace: Workspace) -> dict[str, Any] | None:
    """The watcher's current summary.json, or None before its first commit."""
    try:
        return json.loads((workspace.output / "summary.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def counted_lines(workspace: Workspace) -> int:
    summary = summary_of(workspace)
    return -1 if summary is None else summary["totals"]["lines"]


class Watcher:
    """``runpipeline --watch`` in a subprocess, its stdout and stderr in a log file; always stopped.

    ``start`` may be called again after ``kill`` to restart it on the same workspace; ``log``
    is then the current process's log, and ``history`` the whole file.
    """

    def __init__(self, workspace: Workspace, *args: str) -> None:
        self.workspace = workspace
        self.args = args
        self.log_path = workspace.root / "watch.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill the watcher if it still runs: a failing test must not leave it behind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def start(self) -> Watcher:
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "core.cli", "--watch", *self.args],
                cwd=self.workspace.root, env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=log, stderr=subprocess.STDOUT,
            )
        return self

    @property
    def log(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(self._log_start)
            return log.read().decode("utf-8", errors="replace")

    @property
    def history(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
        """Poll ``condition`` until it is truthy; fail, with the log, on a deadline or a dead watcher."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"the watcher exited ({self.proc.returncode}) while waiting for {what}\n{self.history}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\nwatcher log:\n{self.history}")
            time.sleep(0.02)

    def wait_for_lines(self, expected: int, timeout: float = DEADLINE) -> dict[str, Any]:
        """Wait until summary.json counts ``expected`` lines; fail at once if it counts more."""
        def reached() -> dict[str, Any] | None:
            summary = summary_of(self.workspace)
            lines = -1 if summary is None else summary["totals"]["lines"]
            assert lines <= expected, f"counted {lines} lines, more than the {expected} written\n{self.history}"
            return summary if lines == expected else None
        return self.wait_for(reached, f"summary.json to count {expected} lines", timeout)

    def wait_started(self) -> dict[str, Any]:
        """Wait for the first commit (the catch-up writes outputs even when there is nothing to read)."""
        return self.wait_for(lambda: summary_of(self.workspace), "the first summary.json")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Send ``signum`` and return the exit code; fail if it takes longer than ``timeout``."""
        assert self.proc is not None
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the watcher did not stop within {timeout} s of signal {signum}\n{self.history}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)


def outputs(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """summary.json without its run metrics and anomalies.json without its timestamp."""
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    anomalies = json.loads((folder / "anomalies.json").read_text(encoding="utf-8"))
    anomalies.pop("generated_at")
    return without_run(summary), anomalies


def batch_outputs(workspace: Workspace, folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """What one batch run from nothing makes of the data folder as it is now."""
    result = run_cli("--output-dir", str(folder), "--reset", cwd=workspace.root)
    assert result.returncode in (0, 3), result.stderr
    return outputs(folder)


def assert_same_as_batch(workspace: Workspace, tmp_path: Path) -> None:
    watched = outputs(workspace.output)
    batch = batch_outputs(workspace, tmp_path / "batch-output")
    assert watched[0] == batch[0], "summary.json differs from a batch run over the same files"
    assert watched[1] == batch[1], "anomalies.json differs from a batch run over the same files"


def schema_errors(document: dict[str, Any], name: str) -> list[str]:
    """Where ``document`` breaks ``core/schemas/<name>.schema.json``, checked with jsonschema itself."""
    schema = json.loads((REPO / "core" / "schemas" / f"{name}.schema.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(document)]


def assert_valid_outputs(folder: Path) -> None:
    for name in ("summary", "anomalies"):
        document = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        assert schema_errors(document, name) == [], name


def file_lines(log: str, name: str) -> list[int]:
    """The line counts of each read of ``name``, from the per-file log lines."""
    return [int(n) for n in re.findall(rf"core\.committer: {re.escape(name)}: (\d+) lines,", log)]


def counts_of(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return next(entry for entry in summary["files"] if entry["path"] == name)


@pytest.fixture
def watched(workspace: Workspace) -> Workspace:
    """A workspace with short settle and status intervals, so tests wait little."""
    workspace.configure("watch: {settle_ms: 200, status_seconds: 0.2, rescan_seconds: 30}\n")
    return workspace


# -- files as users produce them --------------------------------------------------------------


def test_files_present_at_start_are_caught_up_then_new_ones_followed(watched, tmp_path):
    watched.write("before.log", log_lines(1, 40))
    with Watcher(watched) as watcher:
        watcher.wait_for_lines(40)
        watched.write("after.txt", log_lines(2, 25))
        watcher.wait_for_lines(65)
        assert_same_as_batch(watched, tmp_path)
        assert watcher.stop() == 0


def test_slow_copy_in_pieces_is_never_read_half_written(watched, tmp_path):
    # settle_ms far above the writer's pause: the file is read once, when the writer closes it.
    watched.configure("watch: {settle_ms: 5000, status_seconds: 0.2}\n")
    body = log_lines(3, 30)
    half = len(body) // 2 + 7  # cuts a line in two
    assert body[half - 1] != "\n"
    with Watcher(watched) as watcher:
        watcher.wait_started()
        with open(watched.data / "copy.log", "w", encoding="utf-8") as out:
            out.write(body[:half])
            out.flush()
            time.sleep(1.0)  # the slow copier's pause: nothing to wait for, it is the workload
            out.write(body[half:])
        summary = watcher.wait_for_lines(30)
        assert file_lines(watcher.log, "copy.log") == [30]
        assert summary["totals"]["malformed"] == counts_of(summary, "copy.log")["malformed"] == 1
        assert_same_as_batch(watched, tmp_path)


def test_renamed_into_place_is_read_and_its_temp_name_never(watched, tmp_path):
    with Watcher(watched) as watcher:
        watcher.wait_started()
        temp = watched.write(".moved.log.tmp", log_lines(4, 50))
        os.rename(temp, watched.data / "moved.log")
        summary = watcher.wait_for_lines(50)
        assert [f["path"] for f in summary["files"]] == ["moved.log"]
        assert file_lines(watcher.log, "moved.log") == [50]
        assert_same_as_batch(watched, tmp_path)


def test_temporary_hidden_and_partial_names_are_ignored(watched, tmp_path):
    with Watcher(watched) as watcher:
        watcher.wait_started()
        for name in (".hidden.log", "copying.log.tmp", "download.part", "notes.csv"):
            watched.write(name, log_lines(5, 10))
        watched.write("real.log", log_lines(6, 12))  # written last: once it is counted, the others were seen
        summary = watcher.wait_for_lines(12)
        assert [f["path"] for f in summary["files"]] == ["real.log"]
        assert watcher.stop() == 0
    assert [f["path"] for f in watched.summary()["files"]] == ["real.log"]
    assert_same_as_batch(watched, tmp_path)


def test_growth_reads_only_new_complete_lines_and_a_partial_line_waits_for_its_newline(watched, tmp_path):
    # settle_ms far above the writer's pause, and the file kept open: it is still being written,
    # so its partial last line waits for its newline.
    watched.configure("watch: {settle_ms: 5000, status_seconds: 0.2}\n")
    path = watched.write("grow.log", log_lines(7, 5))
    with Watcher(watched) as watcher:
        watcher.wait_for_lines(5)
        with open(path, "a", encoding="utf-8") as out:
            out.write(log_lines(8, 3) + "2025-07-22T10:00:00Z SUCCESS PaymentSer")  # three lines and half a fourth
            out.flush()
            time.sleep(1.0)  # the writer's pause, well within settle_ms
            out.write("vice user7 paid 5 EUR\n")
        summary = watcher.wait_for_lines(9)
        assert summary["totals"]["malformed"] == 0
        assert summary["payment_statuses"]["SUCCESS"] >= 1
        assert file_lines(watcher.log, "grow.log") == [5, 4]
        assert_same_as_batch(watched, tmp_path)


def test_a_file_ending_without_a_newline_counts_its_last_line_as_a_batch_run_does(watched, tmp_path):
    # The shipped sample file has no final newline: copied into a watched folder, every line counts.
    sample = (REPO / "data" / "example_input.txt").read_bytes()
    assert not sample.endswith(b"\n")
    with Watcher(watched) as watcher:
        watcher.wait_started()
        watched.write("copied.txt", sample)
        summary = watcher.wait_for_lines(sample.count(b"\n") + 1)
        assert file_lines(watcher.log, "copied.txt") == [sample.count(b"\n") + 1]
        assert_same_as_batch(watched, tmp_path)
        assert watcher.stop() == 0
    assert without_run(watched.summary()) == without_run(summary)


def test_a_last_line_present_at_start_is_counted_once_it_settles(watched, tmp_path):
    watched.write("there.log", log_lines(10, 20) + "2025-07-22T10:00:00Z INFO AuthService u9 last line")
    with Watcher(watched) as watcher:
        summary = watcher.wait_for_lines(21)
        assert summary["totals"]["malformed"] == counts_of(summary, "there.log")["malformed"]
        assert file_lines(watcher.log, "there.log") == [20, 1]
        assert_same_as_batch(watched, tmp_path)


def test_a_line_counted_without_its_newline_and_then_extended_adds_no_fragment(watched, tmp_path):
    path = watched.write("ext.log", log_lines(11, 10) + "2025-07-22T10:00:00Z INFO AuthService u9 first part")
    with Watcher(watched) as watcher:
        watcher.wait_for_lines(11)
        with open(path, "a", encoding="utf-8") as out:
            out.write(" and the rest\n" + log_lines(12, 4))
        summary = watcher.wait_for_lines(15)
        assert summary["totals"]["malformed"] == counts_of(summary, "ext.log")["malformed"]
        assert "ext.log: line 11 grew after it was counted; the added text is not counted" in watcher.log
        assert file_lines(watcher.log, "ext.log") == [10, 1, 4]  # the catch-up, the settled last line, the rest


def test_replaced_or_truncated_file_is_read_again_as_new_and_earlier_counts_stay(watched):
    # What was counted stays counted: the outputs are cumulative over everything processed, so a
    # file replaced by new content adds its new lines to the same path's counts.
    replaced = watched.write("replaced.log", log_lines(9, 6))
    truncated = watched.write("truncated.log", log_lines(10, 8))
    rewritten = watched.write("rewritten.log", log_lines(11, 4))
    with Watcher(watched) as watcher:
        watcher.wait_for_lines(18)
        temp = watched.write(".replaced.log.tmp", log_lines(12, 3))
        os.rename(temp, replaced)  # a new inode
        truncated.write_text(log_lines(13, 2), encoding="utf-8")  # same inode, shorter than the offset
        rewritten.write_text(log_lines(14, 9), encoding="utf-8")  # same inode, longer, other first bytes
        summary = watcher.wait_for_lines(18 + 3 + 2 + 9)
        assert {f["path"]: f["lines"] for f in summary["files"]} == {
            "replaced.log": 6 + 3, "truncated.log": 8 + 2, "rewritten.log": 4 + 9,
        }
        assert watcher.log.count("was replaced, rewritten or truncated; reading it again as a new file") == 3
        assert watcher.stop() == 0


def test_a_rotated_file_is_not_counted_again_under_its_new_name(watched, tmp_path):
    path = watched.write("x.log", log_lines(30, 100))
    with Watcher(watched) as watcher:
        watcher.wait_for_lines(100)
        os.rename(path, watched.data / "x-20250722.log")
        watched.write("x.log", log_lines(31, 40))
        summary = watcher.wait_for_lines(140)
        assert sorted(f["path"] for f in summary["files"]) == ["x-20250722.log", "x.log"]
        assert "x.log was renamed to x-20250722.log" in watcher.log
        assert_same_as_batch(watched, tmp_path)


def test_file_deleted_before_its_turn_is_skipped_with_a_log_line(watched, tmp_path):
    watched.configure("watch: {settle_ms: 1500, status_seconds: 0.2}\n")
    with Watcher(watched) as watcher:
        watcher.wait_started()
        with open(watched.data / "gone.log", "w", encoding="utf-8") as out:
            out.write(log_lines(15, 10))
            out.flush()  # still open: not ready before it is closed or settle_ms passes
            os.unlink(watched.data / "gone.log")  # ... and by then it is gone
        watcher.wait_for(lambda: "gone.log was deleted before it was read; skipping it" in watcher.log,
                         "the log line for the deleted file")
        watched.write("after.log", log_lines(16, 7))
        summary = watcher.wait_for_lines(7)
        assert [f["path"] for f in summary["files"]] == ["after.log"]
        assert summary["file_errors"] == []
        assert_same_as_batch(watched, tmp_path)


def test_unreadable_files_are_reported_and_the_watcher_goes_on(watched, tmp_path):
    # As root chmod 000 reads anyway; a dangling symlink fails to open for anyone.
    with Watcher(watched) as watcher:
        watcher.wait_started()
        (watched.data / "dangling.log").symlink_to(watched.root / "nowhere.log")
        (watched.data / "folder.log").mkdir()
        summary = watcher.wait_for(
            lambda: (s := summary_of(watched)) and s["file_errors"] and s,
            "a file error in summary.json")
        assert summary["file_errors"] == [
            {"file": "dangling.log", "error": f"cannot read {watched.data / 'dangling.log'}: No such file or directory"},
        ]
        watched.write("fine.log", log_lines(17, 9))
        watcher.wait_for_lines(9)
        assert "cannot read" in watcher.log
        assert watcher.stop() == 0
    assert_same_as_batch(watched, tmp_path)


def test_a_link_whose_file_is_deleted_is_reported_once_and_a_link_to_a_counted_file_is_not_read_again(watched):
    # A rescan saw neither: the link whose target went was passed over (no file error, unlike a
    # batch run), and a link to a counted file was planned again at every rescan, to no effect.
    watched.configure("watch: {settle_ms: 200, status_seconds: 30, rescan_seconds: 0.3}\n")
    watched.write("c.log", log_lines(50, 10))
    (watched.data / "a-link.log").symlink_to(watched.data / "c.log")  # sorts first: the name it is counted by
    outside = watched.root / "outside"
    outside.mkdir()
    (outside / "x.log").write_text(log_lines(51, 5), encoding="utf-8")
    (watched.data / "x.log").symlink_to(outside / "x.log")
    with Watcher(watched) as watcher:
        watcher.wait_for_lines(15)
        (outside / "x.log").unlink()
        summary = watcher.wait_for(lambda: (s := summary_of(watched)) and s["file_errors"] and s,
                                   "the dangling link's file error")
        assert summary["file_errors"] == [
            {"file": "x.log", "error": f"cannot read {watched.data / 'x.log'}: No such file or directory"}]
        time.sleep(1.5)  # several rescans
        assert watcher.log.count("cannot read") == 1
        assert "is the same file as" not in watcher.log
        assert watcher.stop() == 0
    assert summary_of(watched)["totals"]["lines"] == 15


def test_a_data_folder_replaced_by_another_is_watched_in_its_place(watched):
    # The native observer watches an inode: a folder moved away and made again went unwatched
    # (new files were seen only by the rescan, every 30 s by default).
    watched.write("a.log", log_lines(52, 10))
    with Watcher(watched) as watcher:
        watcher.wait_for_lines(10)
        watched.data.rename(watched.root / "data.old")
        watched.data.mkdir()
        watched.write("b.log", log_lines(53, 7))
        watcher.wait_for_lines(17, timeout=10)  # well within the 30 s rescan
        assert "was replaced by another folder; watching the new one" in watcher.log
        watched.write("c.log", log_lines(54, 4))  # and followed by its events from then on
        watcher.wait_for_lines(21, timeout=10)
        assert watcher.stop() == 0


def test_a_named_pipe_dropped_in_is_reported_and_the_watcher_goes_on_and_stops_on_sigterm(watched, tmp_path):
    # Opening a FIFO for reading waits for a writer: the watcher stopped reading and ignored SIGTERM.
    with Watcher(watched) as watcher:
        watcher.wait_started()
        os.mkfifo(watched.data / "f.log")
        summary = watcher.wait_for(lambda: (s := summary_of(watched)) and s["file_errors"] and s,
                                   "the named pipe's file error in summary.json", timeout=15)
        assert summary["file_errors"] == [{
            "file": "f.log",
            "error": f"cannot read {watched.data / 'f.log'}: is a named pipe (FIFO), not a regular file; "
                     "only regular files are read",
        }]
        watched.write("after.log", log_lines(25, 13))
        summary = watcher.wait_for_lines(13, timeout=15)
        assert [f["path"] for f in summary["files"]] == ["after.log"]
        assert watcher.stop(timeout=5) == 0
    assert_valid_outputs(watched.output)
    assert outputs(watched.output)[0]["files"] == batch_outputs(watched, tmp_path / "batch-output")[0]["files"]


def test_poll_mode_follows_drops_renames_and_growth(watched, tmp_path):
    watched.configure("watch: {settle_ms: 200, poll_interval_ms: 100, status_seconds: 0.2}\n")
    with Watcher(watched, "--poll") as watcher:
        watcher.wait_started()
        assert "(PollingObserver)" in watcher.log
        written = watched.write("written.log", log_lines(18, 20))
        temp = watched.write(".renamed.log.tmp", log_lines(19, 15))
        os.rename(temp, watched.data / "renamed.log")
        watcher.wait_for_lines(35)
        with open(written, "a", encoding="utf-8") as out:
            out.write(log_lines(20, 5))
        watcher.wait_for_lines(40)
        assert_same_as_batch(watched, tmp_path)
        assert watcher.stop() == 0


# -- graceful stop ----------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_run_stops_within_seconds_and_commits_the_work_in_flight(watched, tmp_path, signum):
    # Small chunks make the catch-up of the big file long enough for the signal to land inside it.
    watched.configure("chunk_bytes: 65536\nlimits: {max_line_bytes: 8192}\n")
    big = watched.write("big.log", log_lines(21, 60_000))
    with Watcher(watched) as watcher:
        watcher.wait_for(lambda: re.search(r"status: \d+ files waiting, [1-9]\d* chunks in flight", watcher.log),
                         "a status line from inside the catch-up")
        started = time.monotonic()
        code = watcher.stop(signum)
        stopped_in = time.monotonic() - started
    assert code == 0, watcher.history
    assert stopped_in < 5, f"took {stopped_in:.1f} s to stop"
    assert "stopped after" in watcher.log and "outputs are complete" in watcher.log
    assert_valid_outputs(watched.output)
    # What was committed is exact: a batch run continuing from the same state completes it to
    # what a batch run from nothing gives.
    assert 0 < watched.summary()["totals"]["lines"] < newlines(big), "the signal did not land mid-file"
    watched.run(check=True)
    assert outputs(watched.output) == batch_outputs(watched, tmp_path / "batch-output")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_when_idle_exits_0_with_outputs_equal_to_a_batch_run(watched, tmp_path, signum):
    watched.write("a.log", log_lines(22, 30))
    with Watcher(watched) as watcher:
        watcher.wait_for_lines(30)
        watched.write("b.log", log_lines(23, 20))
        watcher.wait_for_lines(50)
        assert watcher.stop(signum) == 0
    assert_valid_outputs(watched.output)
    assert_same_as_batch(watched, tmp_path)


def test_a_file_error_clears_once_the_file_can_be_read(watched, tmp_path):
    watched.configure("watch: {settle_ms: 200, status_seconds: 0.2, rescan_seconds: 0.5}\n")
    target = watched.root / "later.log"
    (watched.data / "link.log").symlink_to(target)
    with Watcher(watched) as watcher:
        watcher.wait_for(lambda: (s := summary_of(watched)) and s["file_errors"], "the dangling link's file error")
        target.write_text(log_lines(24, 11), encoding="utf-8")  # outside data/: only a rescan sees it
        summary = watcher.wait_for_lines(11)
        assert summary["file_errors"] == []
        assert_same_as_batch(watched, tmp_path)


# -- plugin code that raises ------------------------------------------------------------------


def test_a_result_that_raises_at_start_up_fails_its_rule_and_the_watcher_goes_on(watched):
    from tests.test_plugins import fragile_workspace

    fragile_workspace(watched, "fragile_result", fail_in="result")  # a.log and b.log, 3 lines
    with Watcher(watched) as watcher:
        summary = watcher.wait_for_lines(3)
        assert summary["rule_errors"] == [{"rule": "fragile", "plugin": "fragile_result", "phase": "result",
                                           "file": None, "error": "RuntimeError: broken in result"}]
        assert "fragile" not in summary and summary["payment_statuses"] == {"INFO": 2, "WEIRD": 1}
        watched.write("c.log", log_lines(25, 10))
        summary = watcher.wait_for_lines(13)
        assert [e["phase"] for e in summary["rule_errors"]] == ["result"]
        assert watcher.stop() == 0
    assert_valid_outputs(watched.output)
