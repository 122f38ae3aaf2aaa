"""Stray clocks: records stamped far from the lines around them (``core.parse.stray_rows``).

One line in a hundred stamped with a random date of the last 25 years made a three-day log take
30 times as long (every rule placing records in event time opened windows years apart) and
buried its incidents under dozens of bogus ones. Such records are now counted, reported by the
timestamp rule, and left out of the rules that place records in event time.
"""

from __future__ import annotations

import json
import random
import shutil
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.parse import stray_rows
from tests.conftest import REPO, Workspace
from tests.test_detectors import planted

HOUR = 3_600_000_000
#: Random clocks are drawn from these years.
EARLIEST, LATEST = datetime(2000, 1, 2, tzinfo=timezone.utc), datetime(2026, 11, 30, tzinfo=timezone.utc)


# -- which records are strays ---------------------------------------------------------------------


def test_a_line_stamped_far_from_its_neighbours_is_a_stray_wherever_it_is_in_the_chunk():
    us = 10**15 + np.arange(40, dtype=np.int64) * 60_000_000
    for at in (3, 20, 36):
        for when in (0, 2 * 10**15):
            bad = us.copy()
            bad[at] = when
            assert stray_rows(bad, HOUR).tolist() == [at], (at, when)


def test_at_a_chunks_ends_only_a_line_out_of_order_is_a_stray():
    """A gap before the first lines or after the last is how a sparse log looks; a first line
    later than the lines after it (or a last one earlier) is out of order."""
    us = 10**15 + np.arange(40, dtype=np.int64) * 60_000_000
    cases = [(at, 2 * 10**15, True) for at in (0, 1, 2)] + [(at, 0, True) for at in (37, 38, 39)]
    cases += [(at, 0, False) for at in (0, 1, 2)] + [(at, 2 * 10**15, False) for at in (37, 38, 39)]
    for at, when, stray in cases:
        bad = us.copy()
        bad[at] = when
        assert (stray_rows(bad, HOUR) is not None) == stray, (at, when)
        if stray:
            assert stray_rows(bad, HOUR).tolist() == [at]


def test_up_to_three_strays_in_a_row_are_found_and_four_that_agree_are_a_block():
    us = np.arange(40, dtype=np.int64) * 60_000_000
    three, four = us.copy(), us.copy()
    three[[10, 11, 12]] = [10**15, 9 * 10**14, 3 * 10**15]
    four[[10, 11, 12, 13]] = [10**15, 10**15 + 1, 10**15 + 2, 10**15 + 3]
    assert stray_rows(three, HOUR).tolist() == [10, 11, 12]
    assert stray_rows(four, HOUR) is None  # four lines that agree are a block, as a writer flushing late makes


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10**16), min_size=0, max_size=60), st.integers(1, 10**12))
def test_a_log_in_time_order_has_no_stray_however_sparse(times, skew):
    assert stray_rows(np.array(sorted(times), dtype=np.int64), skew) is None
    assert stray_rows(np.array(sorted(times, reverse=True), dtype=np.int64), skew) is None  # newest first


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(4, 40), min_size=2, max_size=6), st.lists(st.integers(-10**12, 10**12), min_size=6,
                                                                         max_size=6), st.data())
def test_blocks_of_three_lines_or_more_out_of_order_are_not_strays(sizes, shifts, data):
    """Writers flushing in turn: blocks of four lines or more, each in time order, hours apart either way."""
    blocks = []
    for size, shift in zip(sizes, shifts, strict=False):
        start = 10**15 + shift
        steps = data.draw(st.lists(st.integers(0, 10**6), min_size=size, max_size=size))
        blocks.append(start + np.cumsum(steps))
    assert stray_rows(np.concatenate(blocks).astype(np.int64), HOUR) is None


@settings(max_examples=200, deadline=None)
@given(st.integers(5, 80), st.data())
def test_every_isolated_stray_is_found_and_nothing_else(n, data):
    """Lines a minute apart or less; some stamped years away, never more than three in thirteen, and
    one at most in the six lines at either end of the chunk (with fewer lines to go by, a run of
    strays there outvotes the rest)."""
    steps = data.draw(st.lists(st.integers(0, 60_000_000), min_size=n, max_size=n))
    us = 10**15 + np.cumsum(steps).astype(np.int64)
    picked = sorted(data.draw(st.sets(st.integers(0, n - 1), max_size=n // 3)))
    strays: list[int] = []
    for p in picked:
        end = p < 6 or p >= n - 6
        if sum(abs(p - q) <= 12 for q in strays) < 3 and not (end and any(q < 6 or q >= n - 6 for q in strays)):
            strays.append(p)
    if n < 7:
        strays = []
    for p in strays:  # at the chunk's ends, out of order (see the test above)
        early, late = [0, 10**15 - 400 * HOUR], [2 * 10**15, 10**15 + 400 * HOUR + 10**9]
        us[p] = data.draw(st.sampled_from(late if p < 3 else early if p >= n - 3 else early + late))
    found = stray_rows(us, HOUR)
    assert (found.tolist() if found is not None else []) == strays


# -- what a run makes of them ---------------------------------------------------------------------


def _corrupted(lines: list[str], every: int, seed: int) -> tuple[list[str], int]:
    """``lines`` with every ``every``-th record line (not the first or last two) stamped with a random date."""
    rng = random.Random(seed)
    out, stamped = list(lines), 0
    lo, hi = EARLIEST.timestamp(), LATEST.timestamp()
    for i in range(every, len(out) - 2, every):
        stamp, rest = out[i].split(" ", 1)
        if not stamp.startswith("2025-07"):  # the planted implausible ones
            continue
        when = datetime.fromtimestamp(rng.uniform(lo, hi), timezone.utc)
        if abs(when.timestamp() - datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()) < 3 * 86400:
            continue  # drawn within days of its own time: not a stray, and not what this test is about
        out[i] = when.strftime("%Y-%m-%dT%H:%M:%SZ") + " " + rest
        stamped += 1
    return out, stamped


def _run(workspace: Workspace, lines: list[str], extra: str = "") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    workspace.write("app.log", "\n".join(lines) + "\n")
    if extra:
        workspace.configure(extra)
    assert workspace.main("--reset", "-q") == 0
    found = json.loads((workspace.output / "anomalies.json").read_text(encoding="utf-8"))["anomalies"]
    return found, workspace.summary()


def _incidents(found: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    """The detectors' incidents, by what a person reads first (not the timestamp rule's)."""
    return {(a["rule"], str(a["key"]), a["kind"], str(a["window_start"])) for a in found
            if a["type"] != "timestamp" and a["key"] != "late_events"}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    root = tmp_path_factory.mktemp("clean")
    shutil.copy(REPO / "settings.yaml", root / "settings.yaml")
    shutil.copytree(REPO / "rules", root / "rules")
    (root / "data").mkdir()
    return _run(Workspace(root), planted())


@pytest.mark.parametrize("seed", [7, 8])
def test_one_line_in_fifty_stamped_at_random_finds_what_the_clean_log_finds(workspace, clean_run, seed):
    clean, clean_summary = clean_run
    lines, stamped = _corrupted(planted(), 50, seed)
    assert stamped > 500
    found, summary = _run(workspace, lines)  # one chunk: no stray sits at a chunk's end
    assert _incidents(clean) and _incidents(found) == _incidents(clean)
    strays = [a for a in found if a["type"] == "timestamp" and a["key"] == "stray"]
    assert len(strays) == 1 and strays[0]["count"] == stamped and strays[0]["severity"] == "medium"
    assert len(strays[0]["samples"]) > 0
    late = [a for a in found if a["key"] == "late_events"]
    assert late == []  # no stray was counted in a window, not even as a late one
    timeline = summary["timeline"]
    assert timeline["outside"] == clean_summary["timeline"]["outside"] + stamped
    assert timeline["every_seconds"] == clean_summary["timeline"]["every_seconds"]
    assert summary["peak_hours"] == clean_summary["peak_hours"]
    # Every record is still counted by status.
    assert sum(summary["payment_statuses"].values()) == sum(clean_summary["payment_statuses"].values())


def test_chunks_of_16_kib_find_what_one_chunk_finds(workspace, clean_run):
    """About 270 lines a chunk: each chunk's first and last lines are judged with the lines before
    and after it in the file, which the reader hands over with it (``Chunk.context``, ``after``)."""
    clean, clean_summary = clean_run
    lines, stamped = _corrupted(planted(), 50, seed=7)
    found, summary = _run(workspace, lines, "chunk_bytes: 16384\nlimits:\n  max_line_bytes: 1024\n")
    assert _incidents(found) == _incidents(clean)
    (stray,) = [a for a in found if a["type"] == "timestamp" and a["key"] == "stray"]
    assert stray["count"] == stamped
    assert not [a for a in found if a["key"] == "late_events"]
    timeline = summary["timeline"]
    assert timeline["outside"] == clean_summary["timeline"]["outside"] + stamped
    assert len(timeline["points"]) == len(clean_summary["timeline"]["points"])


def test_a_log_read_a_few_lines_at_a_time_finds_what_one_read_finds(workspace):
    """A watcher reads what was appended since it last looked: runs without --reset, 25 lines each,
    find the strays one run over the whole file finds (stamped in the past, as a reset clock is)."""
    rng = random.Random(5)
    lines = [f"2025-07-22T10:{i // 60:02d}:{i % 60:02d}Z SUCCESS PaymentService user{i % 7} op {i}" for i in range(600)]
    stamped = 0
    for i in range(3, len(lines), 23):
        lines[i] = f"20{rng.randrange(1, 24):02d}-0{rng.randrange(1, 10)}-11T03:00:00Z" + lines[i][20:]
        stamped += 1
    path = workspace.data / "live.log"
    for start in range(0, len(lines), 25):
        with path.open("a", encoding="utf-8") as out:
            out.write("\n".join(lines[start:start + 25]) + "\n")
        assert workspace.main("-q") == 0
    found = json.loads((workspace.output / "anomalies.json").read_text(encoding="utf-8"))["anomalies"]
    (stray,) = [a for a in found if a["type"] == "timestamp" and a["key"] == "stray"]
    assert stray["count"] == stamped
    assert workspace.summary()["timeline"]["outside"] == stamped
    assert not [a for a in found if a["key"] == "late_events"]


def test_with_stray_clocks_off_every_record_is_placed_where_its_clock_says(workspace, clean_run):
    lines, stamped = _corrupted(planted(), 50, seed=7)
    found, summary = _run(workspace, lines, "limits:\n  stray_clock_seconds: null\n")
    assert not [a for a in found if a["type"] == "timestamp" and a["key"] == "stray"]
    assert summary["timeline"]["outside"] == clean_run[1]["timeline"]["outside"]
    # Each stray in an hour of its own, years from the others.
    assert len(summary["timeline"]["points"]) > len(clean_run[1]["timeline"]["points"]) + stamped * 0.9


@pytest.mark.parametrize("value", [0, -5, "1h"])
def test_a_bad_stray_clock_setting_is_named(workspace, value, capsys):
    workspace.configure(f"limits:\n  stray_clock_seconds: {json.dumps(value)}\n")
    assert workspace.main("-q") != 0
    assert "stray_clock_seconds" in capsys.readouterr().err


def test_the_plausible_range_of_stray_clocks_is_the_rules_default():
    from core.parse import PLAUSIBLE_AHEAD, PLAUSIBLE_FROM
    from plugins.detection import duration_us, instant_us
    from plugins.windows import MAX_FUTURE, MIN_TIME

    assert (PLAUSIBLE_FROM, PLAUSIBLE_AHEAD) == (instant_us(MIN_TIME), duration_us(MAX_FUTURE))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(4, 30), min_size=2, max_size=6), st.lists(st.integers(-60, 60), min_size=6, max_size=6),
       st.data())
def test_a_sparse_logs_blocks_out_of_order_are_not_strays(sizes, days, data):
    """Lines half an hour to three hours apart, in blocks of four or more put together out of order,
    days apart: every record is near the records of its own block. (With bursts of one instant
    among them, the usual step can look like zero, and a line where blocks meet like a stray:
    ``stray_rows`` says so.)"""
    blocks = []
    for size, shift in zip(sizes, days, strict=False):
        steps = data.draw(st.lists(st.sampled_from([HOUR // 2, HOUR, 3 * HOUR]), min_size=size, max_size=size))
        blocks.append(10**15 + shift * 24 * HOUR + np.cumsum(steps))
    assert stray_rows(np.concatenate(blocks).astype(np.int64), HOUR) is None


def test_small_files_put_together_keep_their_own_strays(tmp_path):
    """The engine reads small files as one batch (``core.parse.combine``): each file's strays
    are at its own records' places in it, and its files, timed, are each file's own."""
    from core.parse import STRAY_TIME, Chunk, combine, micros, parse_chunk

    batches = []
    for f in range(3):
        lines = [f"2025-07-22T10:{i:02d}:00Z OK api user{f} op {i}" for i in range(12)]
        lines[4 + f] = "2003-01-01T00:00:00Z OK api user9 stray"
        data = ("\n".join(lines) + "\n").encode()
        batches.append(parse_chunk(Chunk(f"f{f}.log", data, 1, 0, len(data)), 512, 10, stray_us=HOUR)[0])
    together = combine(batches)
    assert together.stray.tolist() == [4, 12 + 5, 24 + 6]
    timed = together.timed()
    assert (micros(timed.frame["ts"]) == STRAY_TIME).sum() == 3 and timed.frame.height == 36
    assert [part.path for part in timed.per_file()] == ["f0.log", "f1.log", "f2.log"]
    assert [int((micros(part.frame["ts"]) == STRAY_TIME).sum()) for part in timed.per_file()] == [1, 1, 1]


def test_a_reader_going_on_with_a_file_reads_back_the_lines_before_where_it_goes_on(tmp_path):
    from core.parse import CONTEXT_BYTES, context_times
    from core.reader import ChunkReader

    lines = [f"2025-07-22T10:00:{i % 60:02d}Z OK api user{i} {'x' * (i % 90)}\n" for i in range(400)]
    path = tmp_path / "a.log"
    path.write_text("".join(lines))
    cut = sum(len(line) for line in lines[:300])
    assert cut > CONTEXT_BYTES
    (chunk,) = list(ChunkReader(str(path), 1 << 20, 4096, start=cut, first_line=301))
    assert chunk.context.decode().splitlines(keepends=True) == lines[300 - len(chunk.context.splitlines()):300]
    assert len(context_times(chunk.context, last=True)) == 6
