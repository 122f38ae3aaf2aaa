"""limits.memory_mb holds for a real run: a high-cardinality file stays under the cap, approximately."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import compiled
from tests.conftest import REPO, Workspace, compiled_memory, load_bench

MEMORY_MB = 500  # the shipped default, written out so that the test says what it checks
HIGH_CARDINALITY_LINES = 2_000_000  # ~935k distinct users


def generate(workspace: Workspace, lines: int, *extra: str) -> Path:
    path = workspace.data / "app.log"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "generate.py"), "--lines", str(lines), "--out", str(path),
         "--manifest", str(workspace.root / "manifest.json"), *extra],
        check=True, capture_output=True, timeout=120,
    )
    return path


def run_measured(workspace: Workspace) -> tuple[int, float]:
    """Run the CLI in a child process; its exit code and its peak RSS in MB, as the kernel counted it.

    The child's own high-water mark (``VmHWM``, which the CLI reports in summary.json, read once
    the outputs are built) where there is one; ``wait4``'s maximum also counts this test process's
    high-water mark when the child was forked from it, whatever tests ran before.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(workspace.root / "stdout.txt", "wb") as out, open(workspace.root / "stderr.txt", "wb") as err:
        child = subprocess.Popen([sys.executable, "-m", "core.cli", "--reset"],
                                 cwd=workspace.root, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # so that Popen does not wait for it again
    summary = workspace.output / "summary.json"
    if summary.exists():
        return child.returncode, json.loads(summary.read_text(encoding="utf-8"))["run"]["peak_rss_mb"]
    return child.returncode, usage.ru_maxrss / 1024  # Linux reports KiB


@pytest.fixture
def capped(workspace: Workspace) -> Workspace:
    workspace.configure(f"limits: {{memory_mb: {MEMORY_MB}}}\n")
    return workspace


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """One high-cardinality log for the tests below, and its users' exact counts (bench/reference.py)."""
    folder = tmp_path_factory.mktemp("crowded")
    (folder / "data").mkdir()
    path = generate(Workspace(folder), HIGH_CARDINALITY_LINES, "--distinct-users", "20000000")
    return path, load_bench("reference").summarize([str(path)])["users"]


def with_log(workspace: Workspace, log: Path) -> Path:
    """The shared log, linked into this test's data folder (a hard link: read as a file of its own)."""
    path = workspace.data / log.name
    os.link(log, path)
    return path


def test_a_high_cardinality_file_is_counted_exactly_under_the_default_cap(capped, crowded):
    log, users = crowded
    with_log(capped, log)
    code, peak_mb = run_measured(capped)
    stderr = (capped.root / "stderr.txt").read_text(encoding="utf-8")

    assert code == 0, stderr
    if compiled.all_compiled():  # the pure Python path is exempt from the cap (README, "Without a C compiler")
        assert peak_mb < MEMORY_MB, f"peak RSS {peak_mb:.0f} MB over the {MEMORY_MB} MB cap"
    summary = capped.summary()
    assert len(users) > 900_000
    expected = sorted(users.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert summary["top_users"] == [user for user, _ in expected]
    assert summary["details"]["top_users"] == dict(expected)  # exact: no "approximate"
    assert summary["rules"]["top-users"]["degraded"] is None
    state = summary["run"]["rule_state"]["top-users"]
    assert 900_000 * 32 < state["bytes"] <= state["limit_bytes"]


@compiled_memory
def test_a_high_cardinality_file_under_a_smaller_cap_is_approximate_within_its_bound(workspace, crowded):
    log, users = crowded
    cap = 250
    workspace.configure(f"limits: {{memory_mb: {cap}}}\n")
    with_log(workspace, log)
    code, peak_mb = run_measured(workspace)
    assert code == 0, (workspace.root / "stderr.txt").read_text(encoding="utf-8")
    assert peak_mb < cap, f"peak RSS {peak_mb:.0f} MB over the {cap} MB cap"
    summary = workspace.summary()
    detail = summary["details"]["top_users"]
    assert detail["approximate"] is True and detail["sketch"] == "misra_gries"
    assert 0 <= detail["max_error"] < 0.001 * detail["total_weight"]
    assert len(summary["top_users"]) == 10 and list(detail["counts"]) == summary["top_users"]
    for user, estimate in detail["counts"].items():
        assert users[user] <= estimate <= users[user] + detail["max_error"]
    assert "more than" in summary["rules"]["top-users"]["degraded"]
    state = summary["run"]["rule_state"]["top-users"]
    assert state["peak_bytes"] <= state["limit_bytes"]
    assert "approximate" not in summary["details"]["top_services"]  # 30 services: still exact


def test_a_small_cardinality_file_gives_exactly_the_exact_result(capped):
    path = generate(capped, 200_000)  # 20,000 users: far below the bound
    code, peak_mb = run_measured(capped)
    assert code == 0, (capped.root / "stderr.txt").read_text(encoding="utf-8")
    assert peak_mb < MEMORY_MB

    users = load_bench("reference").summarize([str(path)])["users"]
    expected = sorted(users.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    summary = capped.summary()
    assert summary["top_users"] == [user for user, _ in expected]
    assert summary["details"]["top_users"] == dict(expected)  # plain counts, no approximate flag
