"""Shared fixtures: a fresh plugin manager, a throwaway workspace, and the CLI run for real."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from core import compiled, counts, tally  # noqa: F401  (loading them chooses each one's build or stand-in)
from core.parse import _scan
from core.plugins import get_plugin_manager

REPO = Path(__file__).resolve().parent.parent
#: Marks a test of a memory bound the compiled modules keep: their pure Python stand-ins hold the
#: same keys and counts, in Python objects that take more memory.
compiled_memory = pytest.mark.skipif(
    not compiled.all_compiled(),
    reason="a memory bound of the compiled modules, which are not in use here (no C compiler, or OMP_NO_COMPILED=1)",
)
#: What the warning says when the compiled modules are not in use (core/compiled.py).
PURE_PYTHON = "running the pure Python path"
#: A plugin module with one rule type, ``count_records``: records seen (written out by tests).
COUNTING_PLUGIN = '''\
from core import Result, Rule, hookimpl


class CountRecords(Rule):
    type_name = "count_records"

    def setup(self):
        self.n = 0

    def update(self, batch):
        self.n += len(batch)

    def merge(self, other):
        self.n += other.n

    def result(self):
        return Result(self.n)


@hookimpl
def register_rule_types(register):
    register(CountRecords)
'''


def load_bench(name: str) -> ModuleType:
    """Import ``bench/<name>.py`` by path: bench/ holds scripts, not a package."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def every_line_the_full_way() -> SimpleNamespace:
    """A stand-in for ``core._scan`` that decides no line, so that ``core.parse``'s own
    classification sees every line."""

    def scan(data: bytes, size: int, max_line_bytes: int, first_line: int, with_message: bool,
             with_hash: bool) -> tuple:
        _, _, no_records, decided, _ = _scan.scan(b"", 0, max_line_bytes, first_line, with_message, with_hash)
        ends = [i for i in range(size) if data[i] == ord("\n")]
        if size and data[size - 1] != ord("\n"):
            ends.append(size)
        starts = [0, *(end + 1 for end in ends[:-1])]
        as_bytes = lambda values: array("q", values).tobytes()  # noqa: E731
        return len(ends), 0, no_records, decided, (as_bytes(range(len(ends))), as_bytes(starts), as_bytes(ends))

    return SimpleNamespace(scan=scan, timestamp=_scan.timestamp, record_hash=_scan.record_hash)


@pytest.fixture
def pm():
    """A fresh plugin manager per test, without third-party entry points."""
    return get_plugin_manager(load_entrypoints=False)


@contextmanager
def plugged(pm: Any, plugins: dict[str, Any]) -> Iterator[Any]:
    """``pm`` with ``plugins`` (name -> plugin) registered in that order while inside, unregistered after."""
    for name, plugin in plugins.items():
        pm.register(plugin, name=name)
    try:
        yield pm
    finally:
        for name in plugins:
            pm.unregister(name=name)


def run_plugged(settings_path: Path, pm: Any, plugins: dict[str, Any], **kwargs: Any) -> Any:
    """An in-process batch run of the rules ``settings_path`` enables, with ``plugins`` registered for it."""
    from core.plugins import rule_types
    from core.ruleset import load_rules
    from core.runner import run_batch
    from core.settings import load_settings

    with plugged(pm, plugins):
        settings = load_settings(settings_path)
        return run_batch(settings, pm, load_rules(settings, rule_types(pm)), **kwargs)


@dataclass
class Workspace:
    """A copy of the shipped settings and rules in a temp folder, with an empty ``data/``."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def settings(self) -> Path:
        return self.root / "settings.yaml"

    def write(self, name: str, content: str | bytes) -> Path:
        """Write a file under the data folder (bytes as is, text dedented)."""
        path = self.data / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content), encoding="utf-8")
        return path

    def configure(self, text: str) -> None:
        """Append settings (YAML) to the workspace's settings.yaml; later keys win."""
        with self.settings.open("a", encoding="utf-8") as out:
            out.write("\n" + textwrap.dedent(text))

    def rules_file(self, name: str, text: str) -> Path:
        path = self.root / "rules" / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    def summary(self) -> dict[str, Any]:
        return json.loads((self.output / "summary.json").read_text(encoding="utf-8"))

    def main(self, *args: str) -> int:
        """Run the command in this process (``core.cli.main``) on this workspace's settings: its exit code."""
        from core.cli import main

        return main(["--settings", str(self.settings), *args])

    def run(self, *args: str, check: bool = False, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``runpipeline`` in a real subprocess inside the workspace."""
        return run_cli(*args, cwd=self.root, check=check, env=env, timeout=timeout)


def run_cli(*args: str, cwd: Path, check: bool = False, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "core.cli", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    # Without a C compiler, every run logs that it runs the pure Python path: that line is left out
    # here, so that what these tests expect on stderr holds on such a machine too
    # (tests/test_fallback.py checks the line itself).
    result.stderr = "".join(line for line in result.stderr.splitlines(keepends=True) if PURE_PYTHON not in line)
    return result


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """Shipped settings.yaml and rules/ in a temp folder, with an empty data/ folder."""
    shutil.copy(REPO / "settings.yaml", tmp_path / "settings.yaml")
    shutil.copytree(REPO / "rules", tmp_path / "rules")
    (tmp_path / "data").mkdir()
    return Workspace(tmp_path)


def without_run(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary minus its run metrics (time, memory), which differ between runs."""
    return {k: v for k, v in summary.items() if k != "run"}


def wait_for(condition, what: str, timeout: float = 30) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def drop(folder: Path, name: str, text: str) -> None:
    """Put a file into a watched folder as a copier does: written under a hidden name, then renamed."""
    hidden = folder / f".{name}.tmp"
    hidden.write_text(text, encoding="utf-8")
    hidden.rename(folder / name)
