"""Detector state beyond its share of limits.memory_mb thins in a documented way, the same whatever the split."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, Workspace, without_run

#: A dense log: 200k lines in about 20 minutes of event time (170 records a second), with
#: duplicated lines planted in it.
LINES, DAYS = 200_000, 0.015
#: A cap small enough that busy-users and duplicate-events cannot hold those windows whole.
SMALL_MB = 220


def generated(folder, days: float) -> bytes:
    path = folder / "app.log"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "generate.py"), "--lines", str(LINES), "--days", str(days),
         "--out", str(path), "--manifest", str(folder / "manifest.json"), "--seed", "3"],
        check=True, capture_output=True, timeout=120,
    )
    return path.read_bytes()


@pytest.fixture(scope="module")
def dense_log(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return generated(tmp_path_factory.mktemp("dense"), DAYS)


def counted(workspace: Workspace, log: bytes, settings: str) -> tuple[dict, dict]:
    workspace.write("dense.log", log)
    workspace.configure(settings)
    done = workspace.run("--reset")
    assert done.returncode == 0, done.stderr
    anomalies = json.loads((workspace.output / "anomalies.json").read_text(encoding="utf-8"))
    return workspace.summary(), anomalies


def test_dense_windows_thin_the_detectors_state_within_its_share_and_say_so(workspace, dense_log):
    summary, _ = counted(workspace, dense_log, f"limits: {{memory_mb: {SMALL_MB}}}\n")
    for rule in ("duplicate-events", "busy-users"):
        degraded = summary["rules"][rule]["degraded"]
        assert degraded is not None and "thinned to 1 in" in degraded, rule
        # The level is aimed at from the records the windows held, at the rows' own bytes; the state
        # measured after a seal also holds what came since the one before, not thinned yet, and
        # Polars' overheads: it stays within twice its share (README, "Configuration").
        state = summary["run"]["rule_state"][rule]
        assert state["peak_bytes"] <= 2 * state["limit_bytes"], rule
    assert summary["rules"]["error-spikes"]["degraded"] is None  # a state per service: small whatever the density


def test_the_console_summary_names_a_thinned_rule(workspace, dense_log):
    workspace.write("dense.log", dense_log)
    workspace.configure(f"limits: {{memory_mb: {SMALL_MB}}}\n")
    done = workspace.run("--reset")
    assert done.returncode == 0, done.stderr
    assert "duplicate-events: windows denser than its share of limits.memory_mb holds: records thinned to 1 in" \
        in done.stdout


def test_under_the_default_cap_a_log_of_usual_density_is_judged_whole(workspace, tmp_path):
    summary, _ = counted(workspace, generated(tmp_path, 1.0), "")  # 200k lines in a day
    assert all(rule["degraded"] is None for rule in summary["rules"].values())


@pytest.mark.parametrize("split", [
    "chunk_bytes: 262144\nworkers: 1\n",
    "chunk_bytes: 1048576\nworkers: 2\nqueue_size: 3\n",
])
def test_how_a_state_thins_does_not_depend_on_how_the_input_was_split(tmp_path, dense_log, split):
    results = []
    for name, settings in (("a", "chunk_bytes: 2097152\nworkers: 2\n"), ("b", split)):
        root = tmp_path / name
        shutil.copytree(REPO / "rules", root / "rules")
        shutil.copy(REPO / "settings.yaml", root / "settings.yaml")
        space = Workspace(root)
        results.append(counted(space, dense_log, f"limits: {{memory_mb: {SMALL_MB}}}\n{settings}"))
    (first, first_anomalies), (second, second_anomalies) = results
    assert without_run(first) == without_run(second)
    assert first_anomalies["anomalies"] == second_anomalies["anomalies"]
    assert first["rules"]["duplicate-events"]["degraded"] is not None


def test_a_state_with_no_degraded_mode_that_outgrows_its_share_is_warned_about(workspace):
    # The seasonal detectors keep a history per service and cannot thin it: 400 services over four
    # days under a cap whose shares are 1 MiB each. Silently over the cap before; now said, once.
    text = "".join(
        f"2025-07-{22 + i * 6 // 86400:02d}T{i * 6 // 3600 % 24:02d}:{i * 6 // 60 % 60:02d}:{i * 6 % 60:02d}Z "
        f"{'FAILURE' if i % 7 == 0 else 'SUCCESS'} Svc{i % 400:04d} user{i % 97} paid\n"
        for i in range(60_000))
    workspace.write("many.log", text)
    workspace.configure("limits: {memory_mb: 200}\n")
    done = workspace.run("--reset")
    assert done.returncode == 0, done.stderr
    state = workspace.summary()["run"]["rule_state"]["error-spikes"]
    assert state["peak_bytes"] > 2 * state["limit_bytes"]
    warned = [line for line in done.stderr.splitlines() if "error-spikes': its state reached" in line]
    assert len(warned) == 1 and "times its 1.0 MB share of limits.memory_mb; it has no degraded mode" in warned[0]
    assert "rule 'payment-statuses': its state" not in done.stderr  # a state within its share: nothing said
