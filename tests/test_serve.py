"""``--serve PORT``: the report and the two documents over HTTP, from a real process stopped by a real signal."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, Workspace, drop, wait_for

LINES = """\
2025-07-22T12:00:00Z INFO AuthenticationService user1 User login successful
2025-07-22T12:00:01Z ERROR PaymentService user2 Card declined
2025-07-22T12:00:02Z INFO PaymentService user1 Payment accepted
"""


def start(workspace: Workspace, *args: str, files: int | None = None) -> tuple[subprocess.Popen[str], str]:
    """``runpipeline --serve 0 ARGS`` in a real process (with at most ``files`` descriptors open); its
    URL, read from the line it prints."""
    limit = None if files is None else (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (files, files)))
    proc = subprocess.Popen([sys.executable, "-m", "core.cli", "--serve", "0", *args], cwd=workspace.root,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=limit)
    assert proc.stderr is not None
    for line in proc.stderr:
        found = re.search(r"serving the report on (http://127\.0\.0\.1:\d+/)", line)
        if found:
            return proc, found.group(1)
    proc.wait(10)
    pytest.fail(f"no URL printed; exit {proc.returncode}")


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read(), answer.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


def test_a_batch_run_serves_what_it_wrote_until_sigterm_and_nothing_else(workspace):
    workspace.write("a.log", LINES)
    proc, url = start(workspace)
    try:
        # summary.json is the last file a commit writes: once it is served, so is everything else.
        wait_for(lambda: get(url + "summary.json")[0] == 200, "the run's outputs to be served")
        status, page, kind = get(url)
        assert kind.startswith("text/html") and page == (workspace.output / "report.html").read_bytes()
        status, body, kind = get(url + "summary.json")
        assert (status, kind) == (200, "application/json")
        assert json.loads(body) == workspace.summary()
        assert json.loads(get(url + "anomalies.json")[1])["anomalies"] == []
        # The state folder, the settings and the data are not published, however the path is spelt.
        for path in (".state/", "output/summary.json", "../settings.yaml", "%2e%2e/settings.yaml", "data/a.log"):
            assert get(url + path)[0] == 404, path
    finally:
        code = stop(proc)
    assert code == 0  # the run itself was complete; the signal only ended the serving
    with pytest.raises(OSError):  # and the port is closed
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1].strip("/"))), timeout=2)


@pytest.mark.slow
def test_a_watcher_serves_each_commit_as_it_lands(workspace):
    workspace.configure("watch:\n  settle_ms: 200\n")
    proc, url = start(workspace, "--watch")
    try:
        wait_for(lambda: get(url + "summary.json")[0] == 200, "the first commit to be served")
        drop(workspace.data, "late.log", LINES)
        wait_for(lambda: json.loads(get(url + "summary.json")[1])["totals"]["records"] == 3,
                 "the new file's records to be served", timeout=60)
        # The report renders at most every few seconds while watching (ReportWriter.min_interval).
        wait_for(lambda: b"late.log" in get(url)[1], "the report to show the new file", timeout=30)
    finally:
        assert stop(proc) == 0


def test_a_port_in_use_is_refused_with_a_message_not_a_traceback(workspace: Workspace, tmp_path: Path):
    workspace.write("a.log", LINES)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = workspace.run("--serve", str(port))
    assert done.returncode == 2  # a configuration problem, as a --metrics-port in use is
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr
    assert "hint: choose another --serve port" in done.stderr


@pytest.mark.slow
def test_idle_connections_neither_starve_the_report_nor_the_watcher(workspace):
    # Each connection held a thread and a file descriptor for as long as the client liked: as many
    # half-sent requests as the process may open files took every descriptor, and the watcher stopped.
    workspace.write("a.log", LINES)
    proc, url = start(workspace, "--watch", files=128)
    idle = []
    try:
        wait_for(lambda: get(url)[0] == 200, "the first report")
        port = int(url.rsplit(":", 1)[1].strip("/"))
        for _ in range(150):  # half a request each, then silence
            conn = socket.create_connection(("127.0.0.1", port))
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            idle.append(conn)
        drop(workspace.data, "late.log", LINES)  # the watcher still reads its folder
        # Refused while every slot is taken; once the idle ones time out, served again, with the new file.
        wait_for(lambda: b"late.log" in _get_or_refused(url), "the report to show the new file", timeout=40)
        assert proc.poll() is None
    finally:
        for conn in idle:
            conn.close()
        assert stop(proc) == 0


@pytest.mark.parametrize("port", ["-1", "65536", "http"])
def test_a_port_that_is_not_one_is_a_usage_error(workspace, capsys, port):
    with pytest.raises(SystemExit) as exit_:
        workspace.main("--serve", port)
    assert exit_.value.code == 2 and "expected a port number" in capsys.readouterr().err


def _get_or_refused(url: str) -> bytes:
    """The page, or b"" where the server closed the connection (no slot free) or timed out."""
    try:
        return get(url)[1]
    except (urllib.error.URLError, OSError):
        return b""
