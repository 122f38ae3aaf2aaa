"""The saved state (output/.state) as a file someone may damage or craft: it never runs code, and
damage is caught, set aside and rebuilt from the data folder, never turned into a wrong result."""

from __future__ import annotations

import logging
import pickle

from core import Result, Rule
from core.checkpoint import FILE_NAME, PICKLED
from core.cli import main
from tests.conftest import Workspace
from tests.test_watch import log_lines, outputs


def run(workspace: Workspace, *args: str) -> int:
    return main(["--settings", str(workspace.settings), "--quiet", *args])


def state_file(workspace: Workspace):
    return workspace.output / ".state" / FILE_NAME


def fresh(workspace: Workspace) -> tuple[dict, dict]:
    """The outputs of one batch run from nothing over the data folder as it is."""
    folder = workspace.root / "fresh"
    assert main(["--settings", str(workspace.settings), "--quiet", "--output-dir", str(folder)]) == 0
    return outputs(folder)


class _Crafted:
    """Unpickling this runs ``os.system``: what a crafted checkpoint.pickle could do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        import os

        return os.system, (self.command,)


def test_a_crafted_pickle_in_the_state_folder_is_never_run_and_is_set_aside(workspace, caplog):
    workspace.write("a.log", log_lines(1, 200))
    marker = workspace.root / "code-ran"
    folder = workspace.output / ".state"
    folder.mkdir(parents=True)
    (folder / PICKLED).write_bytes(pickle.dumps({"format": 1, "checkpoint": _Crafted(f"touch {marker}")}))
    with caplog.at_level(logging.WARNING):
        assert run(workspace) == 0
    assert not marker.exists()
    assert "old pickled format, which is never read (it could run code)" in caplog.text
    assert not (folder / PICKLED).exists()
    assert [p.name.startswith(PICKLED) and p.name.endswith(".unread") for p in folder.iterdir()].count(True) == 1
    assert outputs(workspace.output) == fresh(workspace)


def test_a_damaged_state_is_set_aside_with_a_warning_and_everything_is_rebuilt(workspace, caplog):
    workspace.write("a.log", log_lines(2, 200))
    gone = workspace.write("gone.log", log_lines(3, 50))
    assert run(workspace) == 0
    gone.unlink()
    data = bytearray(state_file(workspace).read_bytes())
    data[len(data) // 2] ^= 0xFF
    state_file(workspace).write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert run(workspace) == 0
    assert "checksum mismatch" in caplog.text
    assert "the counts of files no longer there are lost" in caplog.text
    kept = [p for p in state_file(workspace).parent.iterdir() if p.name.endswith(".unread")]
    assert len(kept) == 1 and kept[0].read_bytes() == bytes(data)
    assert workspace.summary()["totals"]["lines"] == 200  # gone.log could not be rebuilt
    assert outputs(workspace.output) == fresh(workspace)
    assert run(workspace) == 0  # and the rebuilt state reads back
    assert workspace.summary()["run"]["lines_read"] == 0


class Tally:
    """Not registered with core.safestate: a state the checkpoint cannot store."""

    def __init__(self) -> None:
        self.n = 0


class UnsafeState(Rule):
    type_name = "unsafe_state"
    params_schema = {"type": "object", "additionalProperties": False, "properties": {}}

    def setup(self):
        self.tally = Tally()

    def update(self, batch):
        self.tally.n += len(batch)

    def merge(self, other):
        self.tally.n += other.tally.n

    def result(self):
        return Result(self.tally.n)


UNSAFE_PLUGIN = '''
from tests.test_state_file import UnsafeState
from core import hookimpl

@hookimpl
def register_rule_types(register):
    register(UnsafeState)
'''


def test_a_rule_whose_state_cannot_be_stored_safely_is_rebuilt_at_each_start_and_the_log_says_so(workspace, caplog):
    (workspace.root / "unsafe.py").write_text(UNSAFE_PLUGIN)
    workspace.rules_file("unsafe.yaml", "- {name: records-seen, type: unsafe_state}\n")
    workspace.configure("plugins: [unsafe]\nrules: [payment-statuses, records-seen]\n")
    workspace.write("a.log", log_lines(6, 100))
    with caplog.at_level(logging.WARNING):
        assert run(workspace) == 0
    assert ("rule 'records-seen' (tests.test_state_file.UnsafeState) keeps state the checkpoint cannot store "
            "safely (rule 'records-seen'<UnsafeState>['tally']: a tests.test_state_file.Tally cannot be saved "
            "safely); it is rebuilt from the data folder at each start") in caplog.text
    first = workspace.summary()
    workspace.write("b.log", log_lines(7, 40))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert run(workspace) == 0
    assert "rule 'records-seen' is newly enabled, or its state could not be saved" in caplog.text
    summary = workspace.summary()
    assert summary["run"]["lines_read"] == 40  # b.log; records-seen alone was rebuilt from a.log first
    assert summary["records_seen"] == first["records_seen"] + summary["totals"]["records"] - first["totals"]["records"]
    assert outputs(workspace.output) == fresh(workspace)


def test_removing_the_only_rule_of_its_type_keeps_the_other_rules_state(workspace, caplog):
    workspace.write("a.log", log_lines(8, 200))
    gone = workspace.write("gone.log", log_lines(9, 50))
    assert run(workspace) == 0
    gone.unlink()  # a rebuild could no longer count it
    workspace.configure("rules: [payment-statuses, top-users, error-spikes]\n")  # busy-users and others go
    with caplog.at_level(logging.WARNING):
        assert run(workspace) == 0
    assert "cannot read checkpoint" not in caplog.text and "rebuilding" not in caplog.text
    assert workspace.summary()["totals"]["lines"] == 250
    assert workspace.summary()["run"]["lines_read"] == 0
