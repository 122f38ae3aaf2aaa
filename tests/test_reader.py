"""``ChunkReader``: whole lines per chunk, exact line numbers, bounded memory on over-long lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.parse import Chunk, parse_chunk
from core.reader import ChunkReader
from core.stats import FileStats, MalformedLine

REPO = Path(__file__).resolve().parent.parent
MAX = 64
TS = "2024-03-05T14:07:09Z"


def read(path: Path, chunk_bytes: int, max_line_bytes: int = MAX, **kwargs) -> tuple[list[Chunk], ChunkReader]:
    reader = ChunkReader(str(path), chunk_bytes, max_line_bytes, **kwargs)
    return list(reader), reader


def expected_lines(content: bytes, max_line_bytes: int = MAX) -> list[tuple[int, int, int, bool]]:
    """(number, start, end including its newline, too long) of every line, computed the simple way."""
    lines, start, number = [], 0, 1
    while start < len(content):
        newline = content.find(b"\n", start)
        end = len(content) if newline < 0 else newline + 1
        body = content[start:end].removesuffix(b"\n").removesuffix(b"\r")
        lines.append((number, start, end, len(body) > max_line_bytes))
        start, number = end, number + 1
    return lines


def check_chunks(content: bytes, chunks: list[Chunk], max_line_bytes: int = MAX) -> None:
    """Chunks tile the file, hold whole lines only, and number them as the file does."""
    lines = expected_lines(content, max_line_bytes)
    line_at = {start: number for number, start, _, _ in lines}
    ends = {end for _, _, end, _ in lines}
    position = 0
    for chunk in chunks:
        assert chunk.start == position, "chunks must be contiguous"
        assert chunk.end > chunk.start
        assert chunk.start in line_at and chunk.end in ends, "a chunk boundary split a line"
        if chunk.overlong:
            # A discarded line: exactly one line, too long, not held in the chunk.
            assert chunk.data == b""
            [number] = chunk.overlong
            assert number == line_at[chunk.start]
            assert lines[number - 1][3] and lines[number - 1][2] == chunk.end
            assert chunk.first_line == number  # an overlong chunk covers exactly its line
        else:
            assert chunk.data[: chunk.size] == content[chunk.start:chunk.end]
            # Past its lines, a chunk may hold the start of the next line (the block read, uncut).
            assert b"\n" not in chunk.data[chunk.size:]
            assert chunk.first_line == line_at[chunk.start]
        position = chunk.end
    assert position == len(content)


def parse_all(chunks: list[Chunk], max_line_bytes: int = MAX) -> tuple[list[int], FileStats]:
    """Record line numbers and the merged stats of every chunk."""
    total = FileStats("f", sample_limit=10**6)
    record_lines: list[int] = []
    for chunk in chunks:
        batch, stats = parse_chunk(chunk, max_line_bytes, 10**6)
        record_lines += batch.frame["line"].to_list()
        total.merge(stats)
    return record_lines, total


def record(n: int, pad: int = 0) -> str:
    return f"{TS} paid svc u{n} {'m' * pad}".rstrip()


MIXED_LINES = [
    record(1),
    "",
    record(2, 30),
    "x" * (MAX + 1),  # too long by one byte
    record(3) + "\r",
    "y" * (MAX * 5),  # too long, spans many small chunks
    "bad line",
    "z" * MAX + "\r",  # exactly the limit once the \r is dropped
    "  ",
    "w" * (MAX + 1) + "\r",
    record(4, 20),
]


@pytest.fixture
def mixed_file(tmp_path: Path) -> tuple[Path, bytes]:
    content = ("\n".join(MIXED_LINES) + "\n").encode()
    path = tmp_path / "mixed.log"
    path.write_bytes(content)
    return path, content


CHUNK_SIZES = [1, 2, 3, 5, 7, 16, 31, 63, 64, 65, 66, 67, 100, 127, 128, 200, 333, 1000, 100000]


@pytest.mark.parametrize("chunk_bytes", CHUNK_SIZES)
def test_chunks_never_split_a_line(mixed_file, chunk_bytes):
    path, content = mixed_file
    chunks, reader = read(path, chunk_bytes)
    check_chunks(content, chunks)
    assert reader.offset == len(content)
    assert reader.line == len(MIXED_LINES) + 1


@pytest.mark.parametrize("chunk_bytes", CHUNK_SIZES)
def test_line_numbers_and_kinds_across_chunks(mixed_file, chunk_bytes):
    path, _ = mixed_file
    chunks, _ = read(path, chunk_bytes)
    record_lines, stats = parse_all(chunks)
    assert record_lines == [1, 3, 5, 8 + 3]
    assert stats.samples == [
        MalformedLine(4, "too_long", ""),
        MalformedLine(6, "too_long", ""),
        MalformedLine(7, "missing_fields", "bad line"),
        MalformedLine(8, "missing_fields", "z" * MAX),
        MalformedLine(10, "too_long", ""),
    ]
    assert (stats.lines, stats.records, stats.blank, stats.malformed) == (11, 4, 2, 5)
    assert stats.bytes == path.stat().st_size


@pytest.mark.parametrize("chunk_bytes", [1, 4, 17, 64, 66, 1000])
def test_last_line_without_newline(tmp_path, chunk_bytes):
    content = f"{record(1)}\n\n{record(2)}".encode()
    path = tmp_path / "a.log"
    path.write_bytes(content)
    chunks, reader = read(path, chunk_bytes)
    check_chunks(content, chunks)
    record_lines, stats = parse_all(chunks)
    assert record_lines == [1, 3]
    assert (stats.lines, stats.blank) == (3, 1)
    assert (reader.offset, reader.line) == (len(content), 4)


def test_empty_file_yields_nothing(tmp_path):
    path = tmp_path / "empty.log"
    path.write_bytes(b"")
    chunks, reader = read(path, 100)
    assert chunks == []
    assert (reader.offset, reader.line) == (0, 1)


def test_lone_newline_is_one_blank_line(tmp_path):
    path = tmp_path / "nl.log"
    path.write_bytes(b"\n")
    chunks, _ = read(path, 100)
    _, stats = parse_all(chunks)
    assert (stats.lines, stats.blank) == (1, 1)


@pytest.mark.parametrize("chunk_bytes", [1, 3, 10, 64, 65, 66, 67, 200, 5000])
@pytest.mark.parametrize("length", [MAX, MAX + 1, MAX + 2, MAX * 3, 4000])
def test_overlong_last_line_without_newline(tmp_path, chunk_bytes, length):
    content = f"{record(1)}\n".encode() + b"q" * length
    path = tmp_path / "tail.log"
    path.write_bytes(content)
    chunks, reader = read(path, chunk_bytes)
    check_chunks(content, chunks)
    record_lines, stats = parse_all(chunks)
    assert record_lines == [1]
    reason = "too_long" if length > MAX else "missing_fields"
    assert [(m.line, m.reason) for m in stats.samples] == [(2, reason)]
    assert stats.lines == 2
    assert (reader.offset, reader.line) == (len(content), 3)


@pytest.mark.parametrize("chunk_bytes", [7, 64, 100, 1024])
def test_overlong_line_spanning_many_chunks_keeps_following_numbers(tmp_path, chunk_bytes):
    content = (b"a" * (chunk_bytes * 20 + 3) + b"\n" + f"{record(1)}\n".encode()) * 3 + b"\n" * 2
    path = tmp_path / "long.log"
    path.write_bytes(content)
    chunks, _ = read(path, chunk_bytes)
    check_chunks(content, chunks)
    record_lines, stats = parse_all(chunks)
    assert record_lines == [2, 4, 6]
    assert stats.samples == [MalformedLine(n, "too_long", "") for n in (1, 3, 5)]
    assert (stats.lines, stats.blank) == (8, 2)
    # The reader never handed over a chunk holding one of the long lines whole.
    assert all(len(chunk.data) <= chunk_bytes + MAX + 1 for chunk in chunks)


def test_chunk_holds_at_most_chunk_bytes_plus_a_line(tmp_path):
    lines = [record(i, i % 25) for i in range(500)]
    content = ("\n".join(lines) + "\n").encode()
    path = tmp_path / "many.log"
    path.write_bytes(content)
    for chunk_bytes in (80, 256, 1000):
        chunks, _ = read(path, chunk_bytes)
        check_chunks(content, chunks)
        assert max(len(c.data) for c in chunks) <= chunk_bytes + MAX + 1
        record_lines, _ = parse_all(chunks)
        assert record_lines == list(range(1, 501))


def test_many_chunk_sizes_give_the_same_lines(tmp_path):
    lines = [record(i, (i * 7) % 50) if i % 5 else "x" * (i % 3 * 50) for i in range(200)]
    content = "\r\n".join(lines).encode()
    path = tmp_path / "crlf.log"
    path.write_bytes(content)
    expected_records, expected = parse_all(read(path, 1 << 20)[0])
    assert expected.reasons["too_long"] > 0 and expected.blank > 0 and len(expected_records) > 50
    for chunk_bytes in [*range(1, 70, 11), 64, 65, 66, 67, *range(70, 400, 41)]:
        chunks, reader = read(path, chunk_bytes)
        check_chunks(content, chunks)
        record_lines, stats = parse_all(chunks)
        assert record_lines == expected_records
        assert stats.samples == expected.samples
        assert (stats.lines, stats.blank, stats.bytes) == (200, expected.blank, len(content))
        assert (reader.offset, reader.line) == (len(content), 201)


# --- a file that may still grow ----------------------------------------------------------------


def test_not_final_leaves_incomplete_last_line(tmp_path):
    head = f"{record(1)}\n\n{record(2)}\n".encode()
    path = tmp_path / "growing.log"
    path.write_bytes(head + b"2024-03-05T14:07")
    for chunk_bytes in (1, 5, 16, 100, 10000):
        chunks, reader = read(path, chunk_bytes, final=False)
        check_chunks(head, chunks)
        assert reader.offset == len(head)
        assert reader.line == 4
    with path.open("ab") as out:
        out.write(b":09Z paid svc u3 late\nbad\n")
    chunks, reader = read(path, 16, start=len(head), first_line=4, final=False)
    record_lines, stats = parse_all(chunks)
    assert record_lines == [4]
    assert stats.samples == [MalformedLine(5, "missing_fields", "bad")]
    assert reader.offset == path.stat().st_size
    assert reader.line == 6


def test_not_final_complete_file_reads_everything(tmp_path):
    content = f"{record(1)}\n{record(2)}\n".encode()
    path = tmp_path / "done.log"
    path.write_bytes(content)
    chunks, reader = read(path, 10, final=False)
    check_chunks(content, chunks)
    assert (reader.offset, reader.line) == (len(content), 3)


def test_not_final_with_only_an_incomplete_line(tmp_path):
    path = tmp_path / "partial.log"
    path.write_bytes(b"2024-03-05")
    chunks, reader = read(path, 4, final=False)
    assert chunks == []
    assert (reader.offset, reader.line) == (0, 1)


@pytest.mark.parametrize("chunk_bytes", [3, 64, 1000])
def test_not_final_leaves_incomplete_overlong_line_at_its_start(tmp_path, chunk_bytes):
    head = f"{record(1)}\n".encode()
    path = tmp_path / "growing.log"
    path.write_bytes(head + b"L" * (MAX * 4))
    chunks, reader = read(path, chunk_bytes, final=False)
    check_chunks(head, chunks)
    assert (reader.offset, reader.line) == (len(head), 2)
    with path.open("ab") as out:
        out.write(b"L\n" + f"{record(3)}\n".encode())
    chunks, reader = read(path, chunk_bytes, start=len(head), first_line=2)
    record_lines, stats = parse_all(chunks)
    assert record_lines == [3]
    assert stats.samples == [MalformedLine(2, "too_long", "")]
    assert reader.offset == path.stat().st_size


@pytest.mark.parametrize("chunk_bytes", [1, 9, 64, 500])
def test_resume_from_start_and_first_line(mixed_file, tmp_path, chunk_bytes):
    path, content = mixed_file
    expected_records, expected = parse_all(read(path, 1000)[0])
    prefix = tmp_path / "prefix.log"
    for number, start, _, _ in expected_lines(content):
        # The first run saw the file up to this line; the second resumes where it stopped.
        prefix.write_bytes(content[:start])
        head, first = read(prefix, chunk_bytes, final=False)
        assert (first.offset, first.line) == (start, number)
        rest, _ = read(path, chunk_bytes, start=first.offset, first_line=first.line)
        record_lines, stats = parse_all([*head, *rest])
        assert record_lines == expected_records
        assert stats.samples == expected.samples
        assert (stats.lines, stats.bytes) == (expected.lines, len(content))


# --- memory, in a real run ---------------------------------------------------------------------


def run_measured(data_dir: Path, output_dir: Path) -> tuple[int, float]:
    """Run the CLI in a child process; its own peak RSS in MiB (from wait4), and the exit code."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log_path = output_dir.parent / f"{output_dir.name}.stderr"
    with log_path.open("wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "--settings", str(REPO / "settings.yaml"), "-q",
             "--data-dir", str(data_dir), "--output-dir", str(output_dir)],
            cwd=REPO, env=env, stdout=log, stderr=log,
        )
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    code = child.returncode
    assert code == 0, log_path.read_text(errors="replace")
    return code, usage.ru_maxrss / 1024  # Linux reports KiB


def test_single_200mb_line_is_read_in_bounded_memory(tmp_path):
    tiny, huge = tmp_path / "tiny", tmp_path / "huge"
    tiny.mkdir()
    huge.mkdir()
    (tiny / "app.log").write_bytes(b"x\n")
    block = b"x" * (1024 * 1024)
    with (huge / "app.log").open("wb") as out:
        for _ in range(200):
            out.write(block)
    del block

    _, baseline_mb = run_measured(tiny, tmp_path / "out-tiny")
    _, peak_mb = run_measured(huge, tmp_path / "out-huge")

    summary = json.loads((tmp_path / "out-huge" / "summary.json").read_text(encoding="utf-8"))
    [entry] = summary["files"]
    assert (entry["lines"], entry["records"], entry["malformed"], entry["blank"]) == (1, 0, 1, 0)
    assert entry["malformed_reasons"] == {"too_long": 1}
    assert entry["bytes"] == 200 * 1024 * 1024
    assert summary["malformed_samples"] == [{"file": "app.log", "line": 1, "reason": "too_long", "text": ""}]
    assert peak_mb - baseline_mb < 60, f"peak RSS {peak_mb:.0f} MiB vs {baseline_mb:.0f} MiB on a tiny file"
    assert summary["run"]["peak_rss_mb"] - baseline_mb < 60


def test_long_lines_make_larger_chunks_up_to_twice_the_size(tmp_path: Path) -> None:
    # Chunks hold about as many lines as chunk_bytes of 96-byte lines: 300-byte lines make chunks
    # twice as large (no more), 40-byte lines chunks of chunk_bytes. Either way they tile the file.
    for width, low, high in ((300, 1.5, 2.0), (40, 0.5, 1.0)):
        line = f"{TS} INFO Svc user1 " + "m" * (width - len(TS) - 18) + "\n"
        content = line.encode() * 2000
        path = tmp_path / f"w{width}.log"
        path.write_bytes(content)
        chunks, _ = read(path, 16384, max_line_bytes=1000)
        check_chunks(content, chunks, max_line_bytes=1000)
        sizes = [c.end - c.start for c in chunks[1:-1]]
        assert low * 16384 <= min(sizes) and max(sizes) <= high * 16384, (width, sizes)


@pytest.mark.parametrize("chunk_bytes", [1, 5, 16, 100, 10000])
def test_end_reads_the_file_as_if_it_ended_there(tmp_path, chunk_bytes):
    """What a rule rebuilt from the bytes already counted reads (``Work.end``): not one byte more."""
    counted = f"{record(1)}\n\n{record(2)}\n".encode()
    path = tmp_path / "grown.log"
    path.write_bytes(counted + f"{record(3)}\n".encode())
    chunks, reader = read(path, chunk_bytes, end=len(counted))
    check_chunks(counted, chunks)
    assert (reader.offset, reader.line) == (len(counted), 4)
    open_tail = counted + b"2024-03-05T14:07:09Z paid svc u3"  # counted without its newline, as a batch run does
    path.write_bytes(open_tail + b" more\n")
    chunks, _ = read(path, chunk_bytes, end=len(open_tail))
    assert b"".join(c.data[: c.end - c.start] for c in chunks) == open_tail


def test_a_kept_chunk_buffer_is_reused_only_once_nobody_holds_its_chunk(tmp_path):
    # Chunks held (queued, being parsed) keep their buffers: the bytes every held chunk had when
    # read stay its bytes, however many chunks come after; a chunk let go frees its buffer.
    from core.reader import BUFFERS

    lines = [f"2025-07-22T12:{i // 60 % 60:02d}:{i % 60:02d}Z INFO PaymentService user{i} line {i}\n"
             for i in range(6000)]
    path = tmp_path / "a.log"
    path.write_text("".join(lines))
    BUFFERS.release()
    held, copies, kept = [], [], 0
    for chunk in ChunkReader(str(path), 4096, 1024):
        if len(held) < 4:  # hold a few, as a queue and busy workers do
            held.append(chunk)
            copies.append(bytes(chunk.data[:chunk.size]))
        kept += any(chunk.data is buffer for buffer in BUFFERS._kept)
    assert [bytes(c.data[:c.size]) for c in held] == copies  # not overwritten by the chunks after
    assert b"".join(copies) == "".join(lines).encode()[:sum(len(c) for c in copies)]
    assert len(BUFFERS._kept) <= 6 and kept >= 80  # ~93 chunks, all but the last in a kept buffer
    BUFFERS.release()


def test_chunks_read_into_kept_buffers_give_the_file_s_lines(tmp_path):
    # Full chunks, a shorter last one (resized within its buffer), a small file (a copy), and
    # every byte seen once, in order, across two readers of the same buffers.
    for size in (50_000, 81_920, 120, 0):
        text = "".join(f"line {i} {'x' * (i % 37)}\n" for i in range(size // 10))[:size]
        path = tmp_path / f"f{size}.log"
        path.write_text(text)
        for _ in range(2):
            chunks = list(ChunkReader(str(path), 8192, 4096))
            assert b"".join(bytes(c.data[:c.size]) for c in chunks) == text.encode()
