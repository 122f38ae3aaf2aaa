"""Output writers: more outputs from the two documents after each commit, registered by plugins."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from tests.conftest import REPO, drop, wait_for

#: A plugin with one writer: the statuses as CSV; with ``FAIL`` set in the environment it raises.
CSV_PLUGIN = '''\
import os

from core import hookimpl


class StatusesCsv:
    name = "statuses.csv"
    min_interval = 0

    def render(self, summary, anomalies, *, watching):
        if os.environ.get("FAIL"):
            raise RuntimeError("broken on purpose")
        rows = [f"{status},{count}" for status, count in summary["payment_statuses"].items()]
        return "status,count\\n" + "\\n".join(rows) + f"\\n# watching={watching}\\n"


@hookimpl
def register_output_writers(register):
    register(StatusesCsv())


def _note(text):
    if os.environ.get("HOOKS_FOLDER"):
        with open(os.path.join(os.environ["HOOKS_FOLDER"], "hooks.txt"), "a") as out:
            out.write(text + "\\n")


@hookimpl
def before_run(paths, settings):
    _note(f"before_run {sorted(paths)}")


@hookimpl
def after_run(summary, anomalies):
    _note(f"after_run {summary['totals']['lines']}")
'''
LINES = ("2025-07-22T10:00:00Z SUCCESS Payment user1 paid\n"
         "2025-07-22T10:00:01Z ERROR Payment user2 declined\n"
         "2025-07-22T10:00:02Z SUCCESS Payment user3 paid\n")


def with_plugin(workspace, name: str) -> None:
    (workspace.root / f"{name}.py").write_text(CSV_PLUGIN, encoding="utf-8")
    workspace.configure(f"plugins: [{name}]\n")


def test_a_plugin_s_writer_adds_an_output_after_the_documents(workspace):
    with_plugin(workspace, "csv_writer_batch")
    workspace.write("a.log", LINES)
    assert workspace.main("-q") == 0
    written = (workspace.output / "statuses.csv").read_text(encoding="utf-8")
    assert written == "status,count\nSUCCESS,2\nERROR,1\n# watching=False\n"
    assert not list(workspace.output.glob(".statuses.csv.*"))  # no temp file left


def test_a_writer_that_raises_is_named_and_the_documents_stand(workspace, monkeypatch, caplog):
    with_plugin(workspace, "csv_writer_failing")
    workspace.write("a.log", LINES)
    monkeypatch.setenv("FAIL", "1")
    assert workspace.main("-q") == 3
    err = caplog.text
    assert "plugin 'csv_writer_failing' failed to write statuses.csv: RuntimeError: broken on purpose" in err
    assert workspace.summary()["payment_statuses"] == {"SUCCESS": 2, "ERROR": 1}
    assert not (workspace.output / "statuses.csv").exists()


def test_a_watcher_rewrites_the_output_after_each_commit(workspace):
    with_plugin(workspace, "csv_writer_watch")
    workspace.configure("watch: {settle_ms: 100, status_seconds: 0.2}\n")
    workspace.write("a.log", LINES)
    watcher = subprocess.Popen([sys.executable, "-m", "core.cli", "--watch", "-q"], cwd=workspace.root,
                               env={"PYTHONPATH": f"{REPO}:{workspace.root}", "PATH": "/usr/bin:/bin",
                                    "HOOKS_FOLDER": str(workspace.root)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    csv = workspace.output / "statuses.csv"
    try:
        wait_for(lambda: csv.exists() and "SUCCESS,2" in csv.read_text(encoding="utf-8"), "the first CSV")
        assert "# watching=True" in csv.read_text(encoding="utf-8")
        drop(workspace.data, "b.log", "2025-07-22T11:00:00Z ERROR Payment user4 declined\n")
        wait_for(lambda: "ERROR,2" in csv.read_text(encoding="utf-8"), "the CSV to count the new file")
        # summary.json is written last at each commit (the writers render before it, so that their
        # cost counts in its output_seconds): it follows within the same commit.
        wait_for(lambda: json.loads((workspace.output / "summary.json").read_text(encoding="utf-8"))
                 ["payment_statuses"] == {"SUCCESS": 2, "ERROR": 2}, "summary.json to count the new file")
    finally:
        watcher.send_signal(signal.SIGTERM)
        _, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    # before_run once, as the watcher starts, with the files it catches up on; after_run per commit.
    hooks = (workspace.root / "hooks.txt").read_text(encoding="utf-8").splitlines()
    assert hooks[0] == "before_run ['a.log']"
    assert hooks[1:] == ["after_run 3", "after_run 4"]

