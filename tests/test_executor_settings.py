"""The ``executor:`` block of settings.yaml and ``--executor`` / ``--scheduler``: checked before anything runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.settings import load_settings
from tests.conftest import REPO


@pytest.mark.parametrize("block, expected", [
    ("{type: spark}", "executor.type: expected one of"),
    ("{type: dask, scheduler: 'localhost:8786'}", "executor.scheduler: expected string or nothing matching"),
    ("{type: dask, workers: -1}", "executor.workers: expected"),
    ("{type: dask, nodes: 3}", "executor: unknown field 'nodes'; known fields: scheduler, type, workers"),
    ("{type: threads, scheduler: 'tcp://127.0.0.1:8786'}",
     "executor.scheduler: only used with executor.type 'dask', got type 'threads'; hint: set executor.type: dask"),
])
def test_check_names_what_is_wrong_in_the_executor_block(workspace, capsys, block, expected):
    workspace.configure(f"executor: {block}\n")
    assert workspace.main("--check") == 2
    err = capsys.readouterr().err
    assert f"settings.yaml: {expected}" in err
    assert "Traceback" not in err


def test_a_dask_block_is_valid_and_its_workers_default_to_the_workers_setting(workspace, capsys):
    workspace.configure("workers: 3\nexecutor: {type: dask}\n")
    assert workspace.main("--check") == 0, capsys.readouterr().err
    settings = load_settings(workspace.settings)
    assert (settings.executor, settings.scheduler, settings.executor_workers) == ("dask", None, 3)
    workspace.configure("executor: {type: dask, workers: 2, scheduler: 'tcp://10.0.0.5:8786'}\n")
    settings = load_settings(workspace.settings)
    assert (settings.executor, settings.scheduler, settings.executor_workers) == ("dask", "tcp://10.0.0.5:8786", 2)


def test_the_command_line_wins_over_the_block(workspace):
    workspace.configure("executor: {type: dask, scheduler: 'tcp://10.0.0.5:8786'}\n")
    settings = load_settings(workspace.settings, {"executor": {"type": "threads", "scheduler": None}})
    assert (settings.executor, settings.scheduler) == ("threads", None)
    settings = load_settings(workspace.settings, {"executor": {"type": "dask", "scheduler": "tcp://127.0.0.1:9"}})
    assert settings.scheduler == "tcp://127.0.0.1:9"


@pytest.mark.parametrize("args, expected", [
    (("--scheduler", "tcp://127.0.0.1:8786", "--executor", "threads"),
     "--scheduler tcp://127.0.0.1:8786: runs on a Dask cluster, but --executor threads was given"),
    (("--executor", "dask", "--profile"), "--profile: profiles the threads of this process, but executor 'dask'"),
    (("--scheduler", "127.0.0.1:8786"), "executor.scheduler: expected string or nothing matching"),
])
def test_contradictory_or_malformed_options_are_refused_before_a_cluster_is_started(workspace, capsys, args, expected):
    assert workspace.main(*args) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err


def test_a_scheduler_nobody_answers_at_is_a_clear_error(workspace, capsys, monkeypatch):
    from core import dask_executor

    monkeypatch.setattr(dask_executor, "CONNECT_SECONDS", 1)
    workspace.write("a.log", "2025-07-22T12:00:00Z INFO S u1 ok\n")
    assert workspace.main("--scheduler", "tcp://127.0.0.1:9") == 1  # the discard port: nothing listens
    err = capsys.readouterr().err
    assert "runpipeline: cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err
    assert "hint: start it with `dask scheduler`" in err
    assert not (workspace.output / "summary.json").exists()


def test_a_scheduler_without_workers_is_a_clear_error(workspace, capsys, monkeypatch):
    distributed = pytest.importorskip("distributed")
    from core import dask_executor

    monkeypatch.setattr(dask_executor, "CONNECT_SECONDS", 1)
    workspace.write("a.log", "2025-07-22T12:00:00Z INFO S u1 ok\n")
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as empty:
        assert workspace.main("--scheduler", empty.scheduler_address) == 1
    err = capsys.readouterr().err
    assert f"runpipeline: the Dask scheduler at {empty.scheduler_address} has no workers (waited 1 s)" in err
    assert "hint: start some with `dask worker" in err


@pytest.mark.slow  # a subprocess on a loaded machine: a few seconds
def test_a_threaded_run_does_not_import_dask(workspace):
    """``distributed`` takes a second to import: only the dask executor loads it."""
    workspace.write("a.log", "2025-07-22T12:00:00Z INFO S u1 ok\n")
    code = ("import sys; from core.cli import main; code = main(['-q']); "
            "print(code, sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=workspace.root, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.stdout.split("\n")[0] == "0 []", result.stderr


def test_rule_tests_run_in_this_process_whatever_executor_the_settings_name(workspace, capsys):
    workspace.configure("executor: {type: dask, scheduler: 'tcp://127.0.0.1:9'}\n")  # nothing listens there
    sample = workspace.root / "sample.log"
    sample.write_text("2025-07-22T12:00:00Z INFO PaymentService u1 ok\n", encoding="utf-8")
    assert workspace.main("test-rule", "payment-statuses", "--sample", str(sample), "--json") == 0
    assert '"INFO": 1' in capsys.readouterr().out


def test_the_readme_s_process_executor_gives_the_threaded_run_s_outputs(workspace):
    """README's "Write an executor" example, as printed, run through run_batch against the default threads."""
    import re

    from core.plugins import get_plugin_manager, rule_types
    from core.ruleset import load_rules
    from core.runner import run_batch
    from core.settings import load_settings
    from tests.conftest import REPO
    from tests.test_watch import log_lines, outputs

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("**Write an executor.**"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 (the README's example)
    workspace.write("a.log", log_lines(3, 3000))
    workspace.write("b.log", log_lines(4, 500))
    workspace.configure("chunk_bytes: 65536\nlimits: {max_line_bytes: 4096}\n")  # several ranges per file
    results = []
    for name, executor in (("threads", None), ("processes", namespace["ProcessExecutor"](2))):
        settings = load_settings(workspace.settings, {"output_dir": str(workspace.root / name)})
        pm = get_plugin_manager(settings.plugins)
        run_batch(settings, pm, load_rules(settings, rule_types(pm)), executor=executor)
        summary, anomalies = outputs(workspace.root / name)
        results.append((summary, anomalies))
    assert results[0] == results[1]
    assert results[0][0]["totals"]["lines"] == 3500
