"""``core.lines.read_lines``: the text of given lines of a real file, numbered as the engine numbers them."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from core.cli import main
from core import lines
from core.lines import read_lines

LINES = [f"2025-07-22T10:00:{s:02d}Z SUCCESS checkout user{s} paid {s}.00 EUR" for s in range(40)]

#: The rules that write into summary.json: the samples and the line numbers do not depend on the
#: detectors, whose configuration changes more often.
SUMMARY_RULES = 'rule_files: ["rules/summary.yaml"]\nrules: [payment-statuses, top-services, top-users, peak-hours]\n'


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "payments.log"
    path.write_text("".join(line + "\n" for line in LINES), encoding="utf-8")
    return path


def test_reads_the_wanted_lines_by_1_based_number(log_file):
    assert read_lines(log_file, [1, 17, 40]) == {1: LINES[0], 17: LINES[16], 40: LINES[39]}


def test_numbers_may_come_unsorted_repeated_and_as_an_iterator(log_file):
    assert read_lines(str(log_file), iter([30, 2, 30, 2])) == {2: LINES[1], 30: LINES[29]}


@pytest.mark.parametrize("block_bytes", [1, 2, 7, 53, 54, 55, 100, 1000])
def test_lines_spanning_block_boundaries(log_file, block_bytes):
    # Each line is 52-54 bytes: the small blocks cut every line, some cut exactly at newlines.
    wanted = [1, 2, 3, 19, 20, 38, 39, 40]
    assert read_lines(log_file, wanted, block_bytes=block_bytes) == {n: LINES[n - 1] for n in wanted}


def test_every_line_of_a_file_matches_its_text(log_file):
    assert read_lines(log_file, range(1, 41), block_bytes=64) == dict(enumerate(LINES, start=1))


def test_line_past_the_end_and_non_positive_numbers_have_no_entry(log_file):
    assert read_lines(log_file, [0, -3, 40, 41, 10**9]) == {40: LINES[39]}


def test_a_final_newline_ends_the_last_line_and_starts_none(tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"one\ntwo\n")
    assert read_lines(path, [1, 2, 3]) == {1: "one", 2: "two"}


def test_a_last_line_without_newline_is_a_line(tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"one\ntwo")
    assert read_lines(path, [2, 3], block_bytes=3) == {2: "two"}


def test_blank_lines_are_lines(tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"\n\nthree\n\r\n")
    assert read_lines(path, [1, 2, 3, 4, 5]) == {1: "", 2: "", 3: "three", 4: ""}


def test_crlf_drops_one_trailing_cr_only(tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"first\r\nmid\rdle\r\nboth\r\r\nlast\r")
    assert read_lines(path, [1, 2, 3, 4], block_bytes=4) == {1: "first", 2: "mid\rdle", 3: "both\r", 4: "last"}


def test_invalid_utf8_reads_as_replacement_characters(tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"ok\nbad \xff\xfe byte and caf\xc3\xa9\n")
    assert read_lines(path, [2], block_bytes=5) == {2: "bad \ufffd\ufffd byte and café"}


def test_long_line_is_cut_to_max_bytes(tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"x" * 10_000 + b"\nnext\n")
    assert read_lines(path, [1, 2], max_bytes=200, block_bytes=333) == {1: "x" * 200, 2: "next"}


@pytest.mark.parametrize("max_bytes, expected", [(6, "aé€"), (5, "aé"), (4, "aé"), (3, "aé"), (2, "a"), (1, "a")])
def test_cut_never_splits_a_character(tmp_path, max_bytes, expected):
    path = tmp_path / "a.log"
    path.write_text("aé€" + "z" * 50 + "\n", encoding="utf-8")  # a: 1 byte, é: 2, €: 3
    assert read_lines(path, [1], max_bytes=max_bytes, block_bytes=2) == {1: expected}


def test_cut_counts_the_replacement_characters_as_utf8(tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"\xff\xff\xffabc\n")  # each U+FFFD is 3 bytes of UTF-8
    assert read_lines(path, [1], max_bytes=7) == {1: "\ufffd\ufffd"}


def test_cr_of_a_line_longer_than_max_bytes_is_past_the_cut(tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"abcdef\r\n")
    assert read_lines(path, [1], max_bytes=7) == {1: "abcdef"}
    assert read_lines(path, [1], max_bytes=3) == {1: "abc"}


def test_missing_file_and_folder_give_nothing(tmp_path):
    assert read_lines(tmp_path / "nowhere.log", [1]) == {}
    assert read_lines(tmp_path, [1]) == {}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_gives_nothing(log_file):
    log_file.chmod(0)
    assert read_lines(log_file, [1]) == {}


def test_fifo_gives_nothing_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe.log"
    os.mkfifo(fifo)
    result: dict[str, object] = {}
    reader = threading.Thread(target=lambda: result.update(lines=read_lines(fifo, [1])), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "read_lines blocked on a FIFO"
    assert result["lines"] == {}


def test_device_gives_nothing():
    assert read_lines("/dev/zero", [1]) == {}


def test_line_numbers_agree_with_the_engines_malformed_samples(workspace, capsys):
    good = "2025-07-22T10:00:00Z SUCCESS checkout alice paid"
    workspace.configure(SUMMARY_RULES)
    workspace.write("a.log", b"".join([
        (good + "\r\n").encode(), b"\n", b"not a record \xff here\r\n", (good + "\n").encode() * 3,
        b"2025-07-22T10:00:00Z SUCCESS checkout\n", (good + "\n").encode(),
    ]))
    assert main(["--settings", str(workspace.settings), "--quiet"]) == 0
    samples = workspace.summary()["malformed_samples"]
    assert [s["line"] for s in samples] == [3, 7]
    texts = read_lines(workspace.data / "a.log", [s["line"] for s in samples])
    assert texts == {s["line"]: s["text"] for s in samples}


def test_remembered_line_starts_are_used_and_a_stale_one_is_not_trusted(tmp_path):
    path = tmp_path / "big.log"
    path.write_bytes(b"".join(b"line %d\n" % n for n in range(1, 2001)))
    offset = path.read_bytes().index(b"line 1500\n")
    lines.remember(path, 1500, offset)
    assert read_lines(path, [1500, 1501, 3], block_bytes=64) == {3: "line 3", 1500: "line 1500", 1501: "line 1501"}
    # Rewritten in place (same inode) with longer lines: the remembered offset is mid-line now.
    with open(path, "r+b") as out:
        out.write(b"".join(b"longer line %d\n" % n for n in range(1, 2001)))
    assert read_lines(path, [1500], block_bytes=64) == {1500: "longer line 1500"}


@pytest.mark.parametrize("every", [64, 100, 1000])
def test_the_readers_line_starts_are_line_starts_with_their_numbers(tmp_path, monkeypatch, every):
    # Lines of every length, some longer than the stride between starts, and a last one open.
    from core import reader as reader_module

    monkeypatch.setattr(reader_module, "START_EVERY", every)
    texts = [("x" * ((n * 37) % 250)) + f" {n}" for n in range(1, 400)]
    data = ("\n".join(texts)).encode()
    path = tmp_path / "mixed.log"
    path.write_bytes(data)
    starts = {}
    reader = reader_module.ChunkReader(str(path), 4096, 65536)
    for chunk in reader:
        starts.update(reader.starts)
        for line, offset in reader.starts:
            assert chunk.start < offset < chunk.end
    assert len(starts) > len(data) // 4096  # several a chunk
    for line, offset in starts.items():
        assert offset == 0 or data[offset - 1:offset] == b"\n"
        assert data[:offset].count(b"\n") + 1 == line


def test_line_starts_past_the_limit_are_thinned_and_still_right(tmp_path, monkeypatch):
    monkeypatch.setattr(lines, "_STARTS_PER_FILE", 16)
    path = tmp_path / "big.log"
    data = b"".join(b"line %d\n" % n for n in range(1, 3001))
    path.write_bytes(data)
    offsets = [0]
    for n in range(1, 3000):
        offsets.append(offsets[-1] + len(b"line %d\n" % n))
    lines.remember(path, 1, 0, [(n, offsets[n - 1]) for n in range(10, 3001, 10)])
    known = lines._starts[(os.stat(path).st_dev, os.stat(path).st_ino)]
    assert len(known) <= 16
    assert max(known) >= 2900 and min(known) <= 300  # spread over the file, not only its start
    assert all(offsets[n - 1] == at for n, at in known.items())
    wanted = [2, 999, 1500, 2999, 3000]
    assert read_lines(path, wanted, block_bytes=64) == {n: f"line {n}" for n in wanted}


def test_the_line_starts_of_few_files_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(lines, "_FILES", 3)
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"f{i}.log")
        paths[-1].write_bytes(b"a\nb\n")
        lines.remember(paths[-1], 2, 2)
    lines.remember(paths[2], 1, 0)  # read again: the most recent, kept longest
    lines.remember(tmp_path / "f0.log", 1, 0)
    keys = [(os.stat(p).st_dev, os.stat(p).st_ino) for p in paths]
    assert keys[2] in lines._starts and keys[0] in lines._starts and keys[1] not in lines._starts
    assert len(lines._starts) <= 3
