"""Properties: any chunking, any split into partial states and any merge order give the same results."""

from __future__ import annotations

import pickle
import random
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import ledgerbase, parse
from core.parse import Chunk, parse_chunk
from core.plugins import get_plugin_manager, rule_types
from core.reader import ChunkReader
from core.ruleset import load_rules
from core.settings import load_settings
from core.state import RunState
from core.stats import FileStats, merge_file_stats
from tests.conftest import Workspace, every_line_the_full_way, load_bench
from tests.test_state_file import run, state_file
from tests.test_watch import log_lines, outputs

REPO = Path(__file__).resolve().parent.parent
MAX = 256
PATH = "app.log"
EXAMPLES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def shipped_rules() -> list[Any]:
    """The enabled rules of the shipped settings, built the way the CLI builds them."""
    shipped = load_settings(REPO / "settings.yaml")
    return load_rules(shipped, rule_types(get_plugin_manager(load_entrypoints=False)))


RULES = shipped_rules()


# --- lines -------------------------------------------------------------------------------------

STATUSES = ["paid", "failed", "refunded", "pending", "chargeback", "ünknown"]
SERVICES = ["checkout", "billing", "auth", "サービス"]
USERS = ["u1", "u2", "u3", "u-42", "пользователь"]


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    when = draw(st.one_of(
        st.datetimes(datetime(2023, 12, 30), datetime(2024, 1, 2)),
        st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59)),
    ))
    fraction = draw(st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=9).map(lambda f: "." + f)))
    zone = draw(st.one_of(
        st.just("Z"),
        st.builds(lambda sign, h, m: f"{sign}{h:02d}:{m:02d}", st.sampled_from("+-"),
                  st.integers(0, 23), st.integers(0, 59)),
    ))
    return f"{when.year:04d}-{when:%m-%dT%H:%M:%S}{fraction}{zone}"


BAD_TIMESTAMPS = [
    "2024-01-01T25:00:00Z", "2024-01-01T12:60:00Z", "2024-01-01T12:00:60Z", "2024-02-30T00:00:00Z",
    "2025-02-29T00:00:00Z", "2024-01-01T12:00:00", "2024-01-01T12:00:00z", "2024-01-01T12:00:00+24:00",
    "0000-01-01T00:00:00Z", "2024-01-01T12:00Z", "2024-01-01", "0001-01-01T00:30:00+01:00",
    "9999-12-31T23:30:00-01:00", "2024-01-01T12:00:00.1234567890Z",
]
messages = st.one_of(
    st.just(None),
    st.text(st.characters(blacklist_characters="\n", blacklist_categories=["Cs"]), max_size=20).map(str.encode),
    st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")),
)


@st.composite
def records(draw: st.DrawFn) -> bytes:
    fields = [draw(timestamps()), draw(st.sampled_from(STATUSES)), draw(st.sampled_from(SERVICES)),
              draw(st.sampled_from(USERS))]
    line = " ".join(fields).encode()
    message = draw(messages)
    return line if message is None else line + b" " + message


@st.composite
def malformed(draw: st.DrawFn) -> bytes:
    line = draw(records())
    ts, rest = line.split(b" ", 1)
    kinds = ["too_long", "too_long", "missing", "empty", "utf8", "chars", "chars", "timestamp", "bom", "raw"]
    kind = draw(st.sampled_from(kinds))
    if kind == "too_long":  # or just under the limit: raw bytes count, not decoded characters
        filler = draw(st.sampled_from([b"x", b"\xff", b"\xe2\x82", "é".encode()]))
        size = draw(st.one_of(st.integers(MAX - 3, MAX + 3), st.integers(MAX, MAX * 3)))
        line = (line + b" " + filler * (MAX * 3))[:size]
        return line + draw(st.sampled_from([b"", b"\r"]))
    if kind == "missing":
        return b" ".join(line.split(b" ")[: draw(st.integers(1, 3))])
    if kind == "empty":
        at = draw(st.sampled_from([0, 1, 2, 3]))
        parts = line.split(b" ", 4)
        parts.insert(at, b"")
        return b" ".join(parts)
    if kind == "utf8":
        return ts + b" " + draw(st.sampled_from([b"\xff", b"\xe2\x82", b"\xc3"])) + rest
    if kind == "chars":
        # A \r before a space is one that Polars' CSV reader (the parser's fast path) drops.
        bad = draw(st.sampled_from(["\t", "\x00", "\x7f", "\u00a0", "\u3000", "\x1c", "\r", "\r\r"])).encode()
        parts = line.split(b" ", 4)
        at = draw(st.integers(0, min(3, len(parts) - 1)))
        parts[at] += bad
        return b" ".join(parts)
    if kind == "bom":  # a byte-order mark, which the CSV reader skips at the start of its input
        return "\ufeff".encode() + line
    if kind == "timestamp":
        return draw(st.sampled_from(BAD_TIMESTAMPS)).encode() + b" " + rest
    return draw(st.binary(max_size=30)).replace(b"\n", b"")


blanks = st.sampled_from(["", " ", "\t", "  \t ", "\r", "\u3000", "\x1c", "\u00a0 \u2028"]).map(str.encode)
line_and_ending = st.tuples(st.one_of(records(), records(), blanks, malformed()), st.sampled_from([b"\n", b"\r\n"]))
# Mostly files long enough for several chunks; a few tiny ones for the edges (empty, one line).
lines = st.one_of(st.lists(line_and_ending, max_size=4), st.lists(line_and_ending, min_size=20, max_size=80))
# Mostly small chunks, so that files split into many of them.
chunk_sizes = st.one_of(st.integers(MAX + 2, 400), st.integers(MAX + 2, 5000))


def file_content(drawn: list[tuple[bytes, bytes]], final_newline: bool) -> bytes:
    content = b"".join(line + ending for line, ending in drawn)
    return content if final_newline or not drawn else content.removesuffix(drawn[-1][1])


def line_count(content: bytes) -> int:
    """Lines of a file: without a final newline an empty last line does not exist."""
    return content.count(b"\n") + (not content.endswith(b"\n") and content != b"")


# --- running -----------------------------------------------------------------------------------


def chunks_of(path: Path, chunk_bytes: int) -> list[Chunk]:
    return [Chunk(PATH, c.data, c.first_line, c.start, c.end, c.overlong)
            for c in ChunkReader(str(path), chunk_bytes, MAX)]


def apply(state: RunState, chunk: Chunk, sample_limit: int) -> list[tuple[Any, ...]]:
    """What a worker does with one chunk: parse it, update each rule, count its lines.

    Returns the chunk's records as rows, so that tests can also compare them line by line.
    """
    batch, stats = parse_chunk(chunk, MAX, sample_limit)
    if stats.lines:  # as the engine does: rules also see chunks with no record (batch.malformed)
        for rule in state.rules.values():
            rule.update(batch)
    merge_file_stats(state.files, {PATH: stats})
    return batch.frame.rows()


def sequential(path: Path, sample_limit: int) -> tuple[RunState, list[tuple[Any, ...]]]:
    """One pass, one chunk for the whole file, one state."""
    state = RunState.empty(RULES)
    rows = [row for chunk in chunks_of(path, 1 << 20) for row in apply(state, chunk, sample_limit)]
    return state, rows


def outcome(state: RunState) -> dict[str, Any]:
    stats = state.files.get(PATH, FileStats(PATH))
    return {
        "results": {name: tuple(rule.result()) for name, rule in state.rules.items()},
        "file": stats.as_dict() if PATH in state.files else None,
        "samples": stats.samples,
    }


def merge_randomly(states: list[RunState], rng: random.Random) -> RunState:
    """Merge in a random tree: any two states, either way round, until one is left."""
    states = list(states)
    while len(states) > 1:
        into, other = rng.sample(range(len(states)), 2)
        states[into].merge(states[other])
        if rng.random() < 0.3:
            states[into] = pickle.loads(pickle.dumps(states[into]))
        states.pop(other)
    return states[0]


@contextmanager
def written(content: bytes) -> Iterator[Path]:
    """The content as a real file in a fresh folder (function-scoped fixtures outlive examples)."""
    with tempfile.TemporaryDirectory(prefix="omp-property-") as folder:
        path = Path(folder) / PATH
        path.write_bytes(content)
        yield path


@EXAMPLES
@given(
    drawn=lines,
    final_newline=st.booleans(),
    chunk_bytes=chunk_sizes,
    partials=st.integers(1, 6),
    sample_limit=st.sampled_from([0, 1, 3, 100]),
    rng=st.randoms(use_true_random=False),
)
def test_any_chunking_split_and_merge_order_gives_the_same_results(
    drawn, final_newline, chunk_bytes, partials, sample_limit, rng
):
    content = file_content(drawn, final_newline)
    with written(content) as path:
        expected_state, expected_rows = sequential(path, sample_limit)
        expected = outcome(expected_state)
        states = [RunState.empty(RULES) for _ in range(partials)]
        rows = []
        for chunk in chunks_of(path, chunk_bytes):
            rows += apply(states[rng.randrange(partials)], chunk, sample_limit)
    states = [pickle.loads(pickle.dumps(state)) for state in states]
    merged = merge_randomly(states, rng)

    assert rows == expected_rows  # the same records, with the same line numbers, in file order
    assert outcome(merged) == expected
    if content:
        assert merged.files[PATH].lines == line_count(content)
        assert merged.files[PATH].bytes == len(content)


@EXAMPLES
@given(drawn=lines, chunk_bytes=chunk_sizes)
def test_every_line_is_exactly_one_kind(drawn, chunk_bytes):
    state = RunState.empty(RULES)
    with written(file_content(drawn, True)) as path:
        for chunk in chunks_of(path, chunk_bytes):
            apply(state, chunk, 10**6)
    stats = state.files.get(PATH, FileStats(PATH))
    assert stats.lines == len(drawn)
    assert stats.records + stats.blank + stats.malformed == stats.lines
    assert sum(stats.reasons.values()) == stats.malformed == len(stats.samples)
    assert len({s.line for s in stats.samples}) == stats.malformed


REFERENCE = load_bench("reference")


@EXAMPLES
@given(drawn=lines, final_newline=st.booleans())
def test_fast_path_and_full_classification_agree(drawn, final_newline):
    content = file_content(drawn, final_newline)
    chunk = Chunk(PATH, content, 7, 0, len(content))
    fast_batch, fast = parse_chunk(chunk, MAX, 10**6)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parse, "_scan", every_line_the_full_way())
        full_batch, full = parse_chunk(chunk, MAX, 10**6)
    assert fast_batch.frame.rows() == full_batch.frame.rows()
    assert (fast.lines, fast.records, fast.blank, fast.samples) == (full.lines, full.records, full.blank, full.samples)
    lean, _ = parse_chunk(chunk, MAX, 10**6, columns=("ts", "user"))
    optional = ["message", "record_hash"]
    assert lean.frame.drop(optional).rows() == fast_batch.frame.drop(optional).rows()
    assert set(lean.frame["message"]) <= {""} and set(lean.frame["record_hash"]) <= {0}


def engine_lines(path: Path, chunk_bytes: int) -> dict[int, Any]:
    """Each line's outcome as the engine sees it: a record row or a malformed reason (else blank)."""
    kinds: dict[int, Any] = {}
    for chunk in chunks_of(path, chunk_bytes):
        batch, stats = parse_chunk(chunk, MAX, 10**6)
        for row in batch.frame.iter_rows(named=True):
            kinds[row["line"]] = ("record", (row["ts"], row["status"], row["service"], row["user"], row["message"]))
        for sample in stats.samples:
            kinds[sample.line] = ("malformed", sample.reason)
    return kinds


@EXAMPLES
@given(drawn=lines, final_newline=st.booleans(), chunk_bytes=chunk_sizes)
def test_engine_agrees_with_reference_line_by_line(drawn, final_newline, chunk_bytes):
    content = file_content(drawn, final_newline)
    with written(content) as path:
        kinds = engine_lines(path, chunk_bytes)
    raw_lines = content.removesuffix(b"\n").split(b"\n") if content else []
    assert len(raw_lines) == line_count(content) >= len(kinds)
    for number, line in enumerate(raw_lines, 1):
        expected = REFERENCE.classify(line, MAX)
        assert kinds.get(number, ("blank", None)) == expected, f"line {number}: {line!r}"


@EXAMPLES
@given(drawn=lines, final_newline=st.booleans(), chunk_bytes=chunk_sizes,
       partials=st.integers(1, 4), rng=st.randoms(use_true_random=False))
def test_engine_totals_agree_with_reference(drawn, final_newline, chunk_bytes, partials, rng):
    states = [RunState.empty(RULES) for _ in range(partials)]
    with written(file_content(drawn, final_newline)) as path:
        expected = REFERENCE.summarize([str(path)], MAX)
        for chunk in chunks_of(path, chunk_bytes):
            apply(states[rng.randrange(partials)], chunk, 100)
    state = merge_randomly([pickle.loads(pickle.dumps(s)) for s in states], rng)
    stats = state.files.get(PATH, FileStats(PATH))

    assert (stats.lines, stats.records, stats.blank, stats.malformed) == (
        expected["lines"], expected["records"], expected["blank"], expected["malformed"])
    assert dict(stats.reasons) == {k: v for k, v in expected["malformed_reasons"].items() if v}
    counting = [rule for rule in state.rules.values() if rule.type_name in ("count_by", "top_k", "peak_hours")]
    rules = {rule.type_name + ":" + rule.params.get("field", ""): rule for rule in counting}
    assert rules["count_by:status"].result().value == expected["statuses"]
    services = rules["top_k:service"].result()
    users = rules["top_k:user"].result()
    assert services.detail == expected["services"]  # fewer distinct values than the limit: all of them
    assert users.detail == expected["users"]
    assert services.value == sorted(expected["services"], key=lambda s: (-expected["services"][s], s))
    assert users.value == sorted(expected["users"], key=lambda u: (-expected["users"][u], u))
    peak = rules["peak_hours:"].result()
    assert peak.detail["hourly_volume"] == {
        f"{h:02d}:00-{(h + 1) % 24:02d}:00": count for h, count in sorted(expected["hours"].items())
    }
    busiest = sorted((h for h, n in expected["hours"].items() if n), key=lambda h: (-expected["hours"][h], h))
    assert peak.value == [f"{h:02d}:00-{(h + 1) % 24:02d}:00" for h in busiest[:3]]


def test_rules_of_the_shipped_settings_are_all_exercised():
    # The properties above stand for every enabled rule; make sure there are some, of each type.
    assert {rule.type_name for rule in RULES} >= {"count_by", "top_k", "peak_hours"}


# -- the saved state, damaged ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def counted(tmp_path_factory):
    """A workspace counted once, its saved state (each file in output/.state), and what a fresh batch run makes of it."""
    root = tmp_path_factory.mktemp("counted")
    shutil.copy(REPO / "settings.yaml", root)
    shutil.copytree(REPO / "rules", root / "rules")
    workspace = Workspace(root)
    workspace.write("a.log", log_lines(4, 300))
    workspace.write("b.log", log_lines(5, 200) + "2025-07-22T12:00:00Z INFO S u1 no newline at the end")
    assert run(workspace) == 0
    folder = state_file(workspace).parent
    saved = {p.name: p.read_bytes() for p in [state_file(workspace), *folder.glob(ledgerbase.GLOB)]}
    assert len(saved) == 2  # the checkpoint and its ledger base
    return workspace, saved, outputs(workspace.output)


# Each example is a whole run (about half a second): 80 of them, each 1-4 flips in either file.
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4),
       in_base=st.booleans())
def test_random_flipped_bytes_in_the_saved_state_never_give_a_wrong_result_or_an_internal_error(
        counted, flips, in_base):
    workspace, saved, expected = counted
    damaged = next(name for name in saved if (name == state_file(workspace).name) != in_base)
    data = bytearray(saved[damaged])
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    shutil.rmtree(workspace.output)
    state_file(workspace).parent.mkdir(parents=True)
    for name, content in saved.items():
        (state_file(workspace).parent / name).write_bytes(bytes(data) if name == damaged else content)
    assert run(workspace) == 0
    assert outputs(workspace.output) == expected
