"""Within each rule's event-time horizon, anomalies do not depend on file order, arrival order or runs.

A generated log of three days is cut into files by event time, and the files are then read in an
order other than time's: named so that name order is shuffled, split across several batch runs,
or dropped into a watched folder one set at a time. Every file arrives within the horizon of the
rules compared (a day behind the watermark for ``error_spike`` and ``flatline``, whatever their
``retention``; ``retention`` for ``frequency`` and ``duplicate_event``), and the anomalies must
be those of one batch run over the files in time order. Real files, real runs: the batch runs
through ``core.cli.main`` in this process, the watcher as a real ``runpipeline --watch``.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Workspace

#: A few seconds each: generated logs, a dozen real runs and a watcher.
pytestmark = pytest.mark.slow

#: The rules judged against a day of windows, and those against ``retention`` (1 h, 70 min).
DAILY = ("error-spikes", "silent-services")
HOURLY = ("busy-users", "duplicate-events")
#: Minutes of event time per file.
PART_MINUTES = 30
#: How far a file may arrive behind the newest record read before it: within a day for the
#: daily rules (23 h of shuffling plus the file's own 30 minutes), within the hourly rules'
#: retention for all (25 minutes plus 30).
DAILY_SLACK, HOURLY_SLACK = 23 * 60, 25
#: Generated logs: the project's generator and the heavy-tailed one, different seeds.
LOGS = {
    "generate-5": ["generate.py", "--lines", "60000", "--seed", "5"],
    "traffic-2": ["traffic.py", "--plant", "--lines", "60000", "--seed", "2"],
}


def _parts(log: bytes) -> list[bytes]:
    """``log`` cut into files of ``PART_MINUTES`` of event time each.

    A line whose stamp jumps more than 10 minutes from the last one that did not (a stamp in
    another offset, a planted clock error) stays where it is and does not move the cut.
    """
    width = PART_MINUTES * 60
    parts: list[list[bytes]] = [[]]
    last = bound = None
    for line in log.splitlines(keepends=True):
        try:
            stamp = datetime.fromisoformat(line.split(b" ", 1)[0].decode()).timestamp()
        except ValueError:
            stamp = None
        if stamp is not None and (last is None or abs(stamp - last) < 600):
            last = stamp
            if bound is not None and stamp >= bound:
                parts.append([])
            if bound is None or stamp >= bound:
                bound = (stamp // width + 1) * width
        parts[-1].append(line)
    return [b"".join(part) for part in parts]


def _arrival(count: int, slack: int, seed: int) -> list[int]:
    """An order of ``count`` consecutive parts in which none comes more than ``slack`` minutes of parts late."""
    rng = random.Random(seed)
    return sorted(range(count), key=lambda i: (i * PART_MINUTES + rng.uniform(0, slack), i))


def _workspace(root: Path, retention: str | None = None) -> Workspace:
    """The shipped settings and rules; with ``retention``, the daily rules configured with that one."""
    root.mkdir(parents=True)
    shutil.copy(REPO / "settings.yaml", root / "settings.yaml")
    shutil.copytree(REPO / "rules", root / "rules")
    (root / "data").mkdir()
    if retention is not None:
        rules = root / "rules" / "anomalies.yaml"
        rules.write_text(rules.read_text(encoding="utf-8").replace("retention: 1d", f"retention: {retention}"),
                         encoding="utf-8")
    return Workspace(root)


def _found(workspace: Workspace, rules: tuple[str, ...]) -> list[dict[str, Any]]:
    """``rules``' incidents as anomalies.json lists them (most severe first)."""
    found = json.loads((workspace.output / "anomalies.json").read_text(encoding="utf-8"))["anomalies"]
    return [a for a in found if a["rule"] in rules]


def _unplaced(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Incidents without their samples: where a line was read depends on the names files were given."""
    return [{k: v for k, v in a.items() if k != "samples"} for a in found]


def _batches(workspace: Workspace, parts: list[bytes], order: list[int], runs: int, *, renamed: bool) -> None:
    """The parts in arrival ``order``, read by ``runs`` batch runs in turn.

    ``renamed``: a file's name is its rank in ``order`` (so name order is arrival order), else its
    place in time.
    """
    size = -(-len(order) // runs)
    for start in range(0, len(order), size):
        for rank in range(start, min(start + size, len(order))):
            workspace.write(f"part_{rank if renamed else order[rank]:03d}.log", parts[order[rank]])
        assert workspace.main("-q") == 0


@pytest.fixture(scope="module", params=list(LOGS))
def cut(request, tmp_path_factory) -> dict[str, Any]:
    """A generated log cut into files, and the anomalies of one batch run over them in time order."""
    folder = tmp_path_factory.mktemp(request.param)
    script, *args = LOGS[request.param]
    log = folder / "generated.txt"
    subprocess.run([sys.executable, str(REPO / "bench" / script), *args, "--out", str(log),
                    "--manifest", str(folder / "manifest.json")], check=True, capture_output=True)
    parts = _parts(log.read_bytes())
    workspace = _workspace(folder / "in-order")
    _batches(workspace, parts, list(range(len(parts))), runs=1, renamed=False)
    found = {"daily": _found(workspace, DAILY), "hourly": _found(workspace, HOURLY)}
    assert found["daily"] and found["hourly"], "the log must give the rules compared something to find"
    return {"folder": folder, "parts": parts, "found": found}


def test_files_read_out_of_order_within_a_day_give_the_daily_rules_verdicts(cut):
    """Names shuffled within a day, one batch run: the daily rules see what a time-ordered read sees."""
    workspace = _workspace(cut["folder"] / "shuffled")
    _batches(workspace, cut["parts"], _arrival(len(cut["parts"]), DAILY_SLACK, 1), runs=1, renamed=True)
    assert _unplaced(_found(workspace, DAILY)) == _unplaced(cut["found"]["daily"])


def test_a_day_late_is_within_the_horizon_even_with_a_shorter_retention(cut):
    """``retention: 2h`` on ``error_spike`` and ``flatline``: a file a day late still gives the verdicts of
    a read in time order with the shipped rules (and then without any late records)."""
    workspace = _workspace(cut["folder"] / "shorter", "2h")
    _batches(workspace, cut["parts"], _arrival(len(cut["parts"]), DAILY_SLACK, 2), runs=3, renamed=False)
    assert _found(workspace, DAILY) == cut["found"]["daily"]


def test_runs_split_and_shuffled_within_retention_give_every_rules_verdicts(cut):
    """Later files first, across four batch runs, each file within an hour: every detector agrees."""
    workspace = _workspace(cut["folder"] / "runs")
    _batches(workspace, cut["parts"], _arrival(len(cut["parts"]), HOURLY_SLACK, 3), runs=4, renamed=False)
    assert _found(workspace, DAILY) == cut["found"]["daily"]
    assert _found(workspace, HOURLY) == cut["found"]["hourly"]


@pytest.mark.parametrize("cut", ["generate-5"], indirect=True)  # one watcher: its order is the point, not the data
def test_a_watcher_fed_out_of_order_gives_the_verdicts_of_a_read_in_time_order(cut):
    """Files renamed into a watched folder a few at a time, in an arrival order up to a day late."""
    from tests.test_watch import Watcher

    parts = cut["parts"]
    order = _arrival(len(parts), DAILY_SLACK, 4)
    workspace = _workspace(cut["folder"] / "watched", "2h")
    lines = 0
    with Watcher(workspace) as watcher:
        watcher.wait_started()
        for start in range(0, len(order), 16):  # 8 hours of files at a time
            for i in order[start:start + 16]:
                temp = workspace.data / f".part_{i:03d}.tmp"
                temp.write_bytes(parts[i])
                temp.rename(workspace.data / f"part_{i:03d}.log")
                lines += parts[i].count(b"\n")
            watcher.wait_for_lines(lines)
        assert watcher.stop() == 0
    assert _found(workspace, DAILY) == cut["found"]["daily"]
