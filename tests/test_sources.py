"""Input sources: gzip files counted like plain ones, compressed rotated copies counted once, damaged streams named."""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import shutil
import zlib

import pytest

from core.reader import ChunkReader
from core.sources import GZIP, DamagedStream, GzipStream, choose
from tests.conftest import REPO, Workspace
from tests.test_watch import log_lines, outputs


def batch(workspace: Workspace, caplog=None, code: int = 0) -> dict:
    """One batch run in this process; its summary.json."""
    if caplog is not None:
        caplog.clear()
    assert workspace.main("--quiet") == code
    return workspace.summary()


def new_workspace(root) -> Workspace:
    """What the ``workspace`` fixture makes, in ``root``."""
    root.mkdir()
    shutil.copy(REPO / "settings.yaml", root / "settings.yaml")
    shutil.copytree(REPO / "rules", root / "rules")
    (root / "data").mkdir()
    return Workspace(root)


def gzipped(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return gzip.compress(data, mtime=0)


def renamed(document: dict, old: str, new: str) -> dict:
    return json.loads(json.dumps(document).replace(old, new))


# -- reading ---------------------------------------------------------------------------------


def test_a_gzip_stream_reads_every_member_and_seeks_back_within_the_last_block(tmp_path):
    data = log_lines(1, 3000).encode()
    path = tmp_path / "two.log.gz"
    path.write_bytes(gzipped(data[:40_000]) + b"\0\0\0" + gzipped(data[40_000:]))  # cut mid-line, padded
    with GzipStream(path) as stream:
        first = stream.read(10_000)
        stream.seek(9_000)
        again = stream.read(5_000)
        rest = stream.read()
    assert first == data[:10_000] and again == data[9_000:14_000] and rest == data[14_000:]
    assert GZIP.size(path) == len(data)
    # Chunks of 1 KiB: the reader reads the partial line at each chunk's end again.
    chunks = list(ChunkReader(str(path), 1024, 4096, source=GZIP))
    assert b"".join(c.data[:c.size] for c in chunks) == data
    assert [c.first_line for c in chunks[1:]] == [c.first_line + c.data[:c.size].count(b"\n") for c in chunks[:-1]]


def test_sources_are_chosen_by_name():
    assert choose("app.log.1.gz").name == "gzip"
    assert choose("sub/app.txt.gz").name == "gzip"
    assert choose("app.log").name == "plain"


# -- counting --------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_bytes", [1024, 4 * 1024 * 1024])
def test_a_gzip_file_is_counted_like_its_plain_twin(tmp_path, chunk_bytes):
    text = log_lines(7, 400) + "2026-01-01T00:00:00Z OK svc user no newline at the end"
    runs = {}
    for name, content in (("pay.log", text.encode()), ("pay.log.gz", gzipped(text))):
        workspace = new_workspace(tmp_path / name)
        workspace.write(name, content)
        workspace.configure(f"chunk_bytes: {chunk_bytes}\nlimits: {{max_line_bytes: 512}}\n")
        batch(workspace)
        runs[name] = outputs(workspace.output)
    summary, anomalies = runs["pay.log"]
    assert renamed(runs["pay.log.gz"][0], "pay.log.gz", "pay.log") == summary
    assert renamed(runs["pay.log.gz"][1], "pay.log.gz", "pay.log") == anomalies
    assert summary["totals"]["lines"] == 401
    assert summary["files"][0]["malformed"] > 0  # samples of malformed lines, with their line numbers, compared too


def test_the_default_include_globs_take_compressed_logs(workspace):
    workspace.write("a.log.gz", gzipped(log_lines(2, 50)))
    workspace.write("b.txt.gz", gzipped(log_lines(3, 50)))
    workspace.write("c.csv.gz", gzipped(log_lines(4, 50)))  # not a log by its name
    summary = batch(workspace)
    assert sorted(f["path"] for f in summary["files"]) == ["a.log.gz", "b.txt.gz"]
    assert summary["totals"]["lines"] == 100


def test_a_rotated_compressed_copy_of_a_counted_file_is_not_counted_again(workspace, caplog):
    # logrotate with compress: app.log -> app.log.1 -> app.log.1.gz, and a new app.log. The
    # lines written between the last run and the rotation are in the copy only: counted once.
    workspace.configure('include: ["*.log", "*.gz"]\n')  # logrotate's names: app.log.1.gz is not *.log.gz
    path = workspace.write("app.log", log_lines(10, 100))
    batch(workspace)
    tail = log_lines(11, 20)
    with open(path, "a", encoding="utf-8") as out:
        out.write(tail)
    old = path.read_bytes()
    os.rename(path, workspace.data / "app.log.1")
    (workspace.data / "app.log.1.gz").write_bytes(gzipped(old))
    os.remove(workspace.data / "app.log.1")
    workspace.write("app.log", log_lines(12, 40))
    with caplog.at_level(logging.INFO):
        summary = batch(workspace, caplog)
    # The new app.log may have the old one's inode, freed by the rotation: the content tells them apart.
    assert "app.log.1.gz is a copy of app.log as it was, counted before: counting on from line 101" in caplog.text
    assert summary["run"]["lines_read"] == 60  # the 20 lines of the tail, and the new app.log
    assert summary["totals"]["lines"] == 160
    assert batch(workspace)["run"]["lines_read"] == 0  # and it stays known under its new name


def test_a_compressed_copy_of_a_file_still_there_is_read_once(workspace, caplog):
    workspace.write("app.log", log_lines(13, 100))
    batch(workspace)
    (workspace.data / "app.log-20261203.gz").write_bytes(gzipped((workspace.data / "app.log").read_bytes()))
    workspace.configure('include: ["*.log", "*.gz"]\n')
    with caplog.at_level(logging.INFO):
        summary = batch(workspace, caplog)
    assert "app.log-20261203.gz is a copy of app.log, which is counted: read once" in caplog.text
    assert summary["totals"]["lines"] == 100 and summary["run"]["lines_read"] == 0


def test_a_copy_met_before_the_new_file_under_the_old_name_takes_the_old_entry(workspace, caplog):
    # "app.log-1.gz" sorts before "app.log": the copy is met while the ledger still lists app.log
    # as the old file, whose name now holds a new one.
    path = workspace.write("app.log", log_lines(14, 100))
    batch(workspace)
    old = path.read_bytes()
    os.remove(path)
    (workspace.data / "app.log-1.gz").write_bytes(gzipped(old))
    workspace.write("app.log", log_lines(15, 30))
    workspace.configure('include: ["*.log", "*.gz"]\n')
    summary = batch(workspace, caplog)
    assert summary["totals"]["lines"] == 130 and summary["run"]["lines_read"] == 30
    assert batch(workspace)["run"]["lines_read"] == 0


# -- damaged streams -------------------------------------------------------------------------


def test_a_corrupt_or_truncated_gzip_file_is_a_file_error_naming_it_and_the_others_are_counted(workspace, capsys):
    workspace.write("good.log", log_lines(16, 50))
    workspace.write("bad.log.gz", b"this is not gzip\n" * 10)
    whole = gzipped(log_lines(17, 2000))
    workspace.write("cut.log.gz", whole[: len(whole) // 2])
    flipped = bytearray(gzipped(log_lines(18, 2000)))
    flipped[len(flipped) // 2] ^= 0xFF
    workspace.write("flipped.log.gz", bytes(flipped))
    summary = batch(workspace, code=3)
    errors = {e["file"]: e["error"] for e in summary["file_errors"]}
    assert sorted(errors) == ["bad.log.gz", "cut.log.gz", "flipped.log.gz"]
    assert "bad.log.gz: is not a gzip file" in errors["bad.log.gz"]
    assert "cut.log.gz: is a truncated gzip stream" in errors["cut.log.gz"]
    assert "the lines before it are counted" in errors["cut.log.gz"]
    assert "flipped.log.gz: is a corrupt gzip stream" in errors["flipped.log.gz"]
    assert "Traceback" not in capsys.readouterr().err
    files = {f["path"]: f["lines"] for f in summary["files"]}
    assert files["good.log"] == 50
    assert 0 < files["cut.log.gz"] < 2000  # its complete lines before the cut, never a cut-off last line


def _damaged_midway(whole: bytes) -> tuple[bytes, int]:
    """``whole`` with 2,000 random bytes in its middle that zlib finds corrupt before the end (not
    only at the checksum), and the complete lines a decoder fed 512 bytes at a time makes before it."""
    middle = len(whole) // 2
    for seed in range(100):
        damaged = whole[:middle] + random.Random(seed).randbytes(2000) + whole[middle + 2000:]
        inflate, out = zlib.decompressobj(wbits=31), b""
        try:
            for at in range(0, len(damaged), 512):
                out += inflate.decompress(damaged[at:at + 512])
        except zlib.error as exc:
            if "data check" not in str(exc):
                return damaged, out.count(b"\n")
    raise AssertionError("no damage found that zlib reports before the checksum")


def test_a_gzip_file_damaged_in_the_middle_has_the_lines_before_the_damage_counted(workspace):
    # zlib drops what one call decompressed when it meets the damage: a small file is one call.
    text = log_lines(30, 20000)
    damaged, before = _damaged_midway(gzipped(text))
    assert 5000 < before < 15000
    workspace.write("torn.log.gz", damaged)
    summary = batch(workspace, code=3)
    [error] = summary["file_errors"]
    assert "torn.log.gz: is a corrupt gzip stream" in error["error"]
    assert "the lines before it are counted" in error["error"]
    totals = summary["totals"]
    assert before - 100 <= totals["lines"] <= before  # the lines before the damage, within one step of input
    assert batch(workspace, code=3)["totals"] == totals  # damaged still: reported again, nothing counted twice


def test_a_gzip_file_completed_after_a_run_read_it_half_written_is_counted_once(workspace):
    # A .gz still being written ends before its end marker: its complete lines are counted, the
    # line it was cut in is not taken as the last one, and the rest is read once it is complete.
    text = log_lines(19, 3000)
    whole = gzipped(text)
    path = workspace.write("late.log.gz", whole[: len(whole) // 2])
    first = batch(workspace, code=3)
    assert first["file_errors"] and 0 < first["totals"]["lines"] < 3000
    path.write_bytes(whole)
    second = batch(workspace)
    assert second["file_errors"] == []
    assert second["totals"]["lines"] == 3000
    assert second["run"]["lines_read"] == 3000 - first["totals"]["lines"]


def test_a_damaged_stream_is_an_os_error_naming_the_file(tmp_path):
    path = tmp_path / "x.log.gz"
    path.write_bytes(b"nope")
    with pytest.raises(DamagedStream) as caught:
        GZIP.size(path)
    assert isinstance(caught.value, OSError) and caught.value.filename == str(path)


def test_a_gzip_stream_is_taken_up_again_at_resume_points_noted_while_it_was_read(tmp_path, monkeypatch):
    from core import lines, sources

    monkeypatch.setattr(sources, "RESUME_EVERY", 64 * 1024)  # points, and decompression steps, closer together
    monkeypatch.setattr(sources, "_INPUT_BYTES", 16 * 1024)
    data = log_lines(21, 40_000).encode()
    path = tmp_path / "big.log.gz"
    path.write_bytes(gzipped(data))
    assert GZIP.size(path) == len(data)  # one read of it, which notes where it can be taken up again
    with GzipStream(path) as probe:
        points = sources._RESUMES[probe._key]
    assert len(points) >= 10
    for offset in (70_000, points[3].offset, points[3].offset + 1, len(data) - 5):
        with GZIP.open(path, offset) as stream:
            assert stream.read(300) == data[offset:offset + 300]
            assert stream.behind == data[max(0, offset - 1024):offset]
    with GZIP.open(path, 0) as stream:  # a seek ahead reads up to it, from the nearest point
        stream.read(10)
        assert stream.seek(len(data) // 2) == len(data) // 2 and stream.read(50) == data[len(data) // 2:][:50]
    texts = data.decode().splitlines()
    lines.remember(path, 30_001, len("".join(line + "\n" for line in texts[:30_000]).encode()))
    assert lines.read_lines(path, [5, 30_002, 39_999]) == {n: texts[n - 1][:200] for n in (5, 30_002, 39_999)}


def test_a_watcher_counts_a_gzip_file_written_in_two_goes_once(workspace, tmp_path):
    from tests.test_watch import Watcher, assert_same_as_batch, summary_of

    workspace.configure("watch: {settle_ms: 200, status_seconds: 0.2, rescan_seconds: 30}\n")
    whole = gzipped(log_lines(22, 3000))
    path = workspace.data / "late.log.gz"
    with Watcher(workspace) as watcher:
        watcher.wait_started()
        path.write_bytes(whole[: len(whole) // 2])  # closed after writing: read at once, but not complete
        summary = watcher.wait_for(lambda: (s := summary_of(workspace)) and s["file_errors"] and s,
                                   "the truncated stream's file error")
        assert "late.log.gz: is a truncated gzip stream" in summary["file_errors"][0]["error"]
        assert 0 < summary["totals"]["lines"] < 3000  # its complete lines, never the one it was cut in
        with open(path, "ab") as out:
            out.write(whole[len(whole) // 2:])
        watcher.wait_for_lines(3000)
        watcher.wait_for(lambda: summary_of(workspace)["file_errors"] == [], "the file error to go")
        assert watcher.stop() == 0
    assert_same_as_batch(workspace, tmp_path)


def test_a_rule_with_new_parameters_is_rebuilt_from_a_gzip_file_as_from_a_plain_one(workspace, caplog):
    """The per-rule rebuild (``core.rebuild``) reads each counted file through its own source."""
    from tests.test_exactly_once import EXTRA_RULE, enable_extra_rule

    enable_extra_rule(workspace)
    workspace.write("a.log.gz", gzipped(log_lines(8, 300)))
    assert len(batch(workspace)["top_statuses"]) == 2
    workspace.rules_file("extra.yaml", EXTRA_RULE.format(limit=4))
    with caplog.at_level(logging.INFO):
        rebuilt = batch(workspace, caplog)
    assert "rebuilt rule 'top-statuses' from 1 file still in the data folder (300 lines)" in caplog.text
    assert len(rebuilt["top_statuses"]) == 4 and rebuilt["run"]["lines_read"] == 0
    fresh = new_workspace(workspace.root / "fresh")
    shutil.copy(workspace.rules_file("extra.yaml", EXTRA_RULE.format(limit=4)), fresh.root / "rules" / "extra.yaml")
    shutil.copy(workspace.settings, fresh.settings)
    shutil.copy(workspace.data / "a.log.gz", fresh.data / "a.log.gz")
    assert batch(fresh)["details"] == rebuilt["details"]
