"""The pure Python stand-ins (core/fallback/) against the compiled modules, and the engine without a C compiler."""

from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from core import compiled
from core import parse as parse_module
from core import tally as tally_module
from core.fallback import _scan as pure_scan
from core.fallback import _tally as pure_tally
from core.parse import RECORD_SCHEMA, Chunk, parse_chunk
from core.tally import Tally, Weights
from tests.conftest import PURE_PYTHON, without_run
from tests.test_parse import EDGE_LINES, EDGE_TIMESTAMPS

REPO = Path(__file__).resolve().parent.parent


def built(name: str, version: int) -> ModuleType | None:
    """``core.<name>`` as compiled, or None where it is not built (or is a stale build)."""
    try:
        module = importlib.import_module(f"core.{name}")
    except ImportError:
        return None
    return module if getattr(module, "VERSION", None) == version else None


SCAN = built("_scan", parse_module.SCAN_VERSION)
TALLY = built("_tally", tally_module.TALLY_VERSION)
needs_scan = pytest.mark.skipif(SCAN is None, reason="core._scan is not built: nothing to compare the stand-in with")
needs_tally = pytest.mark.skipif(TALLY is None, reason="core._tally is not built: nothing to compare the stand-in with")
EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_each_stand_in_has_the_version_the_python_code_expects():
    assert pure_scan.VERSION == parse_module.SCAN_VERSION
    assert pure_tally.VERSION == tally_module.TALLY_VERSION


# --- scan: timestamps, hashes, newlines ------------------------------------------------------------

ASCII = "".join(chr(c) for c in range(0x21, 0x7F))
any_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """Timestamps of the accepted form over years 1-9999, and others a character away from one."""
    when = draw(st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59)))
    fraction = draw(st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=10).map(lambda f: "." + f)))
    zone = draw(st.one_of(st.just("Z"), st.builds(lambda sign, h, m: f"{sign}{h:02d}:{m:02d}", st.sampled_from("+-"),
                                                   st.integers(0, 25), st.integers(0, 61))))
    text = f"{when.year:04d}-{when:%m-%dT%H:%M:%S}{fraction}{zone}"
    if draw(st.booleans()):  # one character changed: digits out of range, a wrong separator, ...
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.sampled_from("0123456789:-+.TZtz é")) + text[at + 1:]
    return text


@needs_scan
@EXAMPLES
@given(st.one_of(timestamps(), st.sampled_from(EDGE_TIMESTAMPS), any_text))
def test_timestamp_is_the_compiled_one(text):
    assert pure_scan.timestamp(text) == SCAN.timestamp(text)


@needs_scan
@EXAMPLES
@given(st.integers(-(2**63), 2**63 - 1), st.lists(st.one_of(any_text, st.text(ASCII + " \t", max_size=60),
                                                            st.text("0123456789 a\t", max_size=30)),
                                                  min_size=4, max_size=4))
def test_record_hash_is_the_compiled_one(ts, fields):
    assert pure_scan.record_hash(ts, *fields) == SCAN.record_hash(ts, *fields)


@needs_scan
@EXAMPLES
@given(st.binary(max_size=300), st.data())
def test_count_newlines_is_the_compiled_one(data, draw):
    size = draw.draw(st.integers(0, len(data)))
    assert pure_scan.count_newlines(data, size) == SCAN.count_newlines(data, size)


# --- scan: whole chunks ------------------------------------------------------------------------------

tokens = st.one_of(st.text(ASCII, min_size=1, max_size=14),
                   st.sampled_from(["paid", "ünknown", "サービス", "u\u00a0x"]))
messages = st.one_of(
    st.none(), any_text.map(str.encode), st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
    st.text("0123456789 ab-\t\r.", max_size=40).map(str.encode), st.just(b"x" * 90 + b" id-123"),
)


@st.composite
def record_lines(draw: st.DrawFn) -> bytes:
    fields = [draw(st.one_of(timestamps(), st.sampled_from(EDGE_TIMESTAMPS))), *(draw(tokens) for _ in range(3))]
    line = " ".join(fields).encode()
    message = draw(messages)
    return line if message is None else line + b" " + message


any_line = st.one_of(
    record_lines(), record_lines(), record_lines(), st.sampled_from(EDGE_LINES),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    st.builds(lambda line, n: (line + b" " + b"y" * 300)[:n], record_lines(), st.integers(60, 140)),  # near the limit
)
chunks = st.tuples(st.lists(st.tuples(any_line, st.sampled_from([b"\n", b"\r\n"])), max_size=30), st.booleans()).map(
    lambda drawn: b"".join(line + end for line, end in drawn[0])[: None if drawn[1] else -1])


def parsed_with(module: ModuleType, chunk: Chunk, max_line_bytes: int, columns, samples: bool):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parse_module, "_scan", module)
        return parse_chunk(chunk, max_line_bytes, 5, columns, samples)


@needs_scan
@EXAMPLES
@given(chunks, st.integers(0, 120), st.integers(1, 10**9), st.booleans(), st.booleans(), st.binary(max_size=9))
def test_a_chunk_parses_the_same_with_either_scan(data, max_line_bytes, first_line, optional, samples, after):
    # after: the start of the next line, which a reader's chunk may hold past its end.
    chunk = Chunk("app.log", data + after, first_line, 0, len(data))
    columns = RECORD_SCHEMA if optional else ("ts", "status", "service", "user")
    batch, stats = parsed_with(SCAN, chunk, max_line_bytes, columns, samples)
    pure_batch, pure_stats = parsed_with(pure_scan, chunk, max_line_bytes, columns, samples)
    assert_frame_equal(pure_batch.frame, batch.frame)
    assert pure_stats == stats


@needs_scan
@EXAMPLES
@given(chunks, st.integers(0, 120), st.booleans(), st.booleans(), st.sampled_from([1, 64, 300, 1 << 19]))
def test_the_stand_in_takes_plain_records_as_the_compiled_scan_does_and_leaves_the_rest(
        data, max_line_bytes, with_message, with_hash, piece_bytes):
    found = SCAN.scan(data, len(data), max_line_bytes, 1, with_message, with_hash)
    with pytest.MonkeyPatch.context() as patch:  # lines taken a few at a time, or all at once
        patch.setattr(pure_scan, "_PIECE_BYTES", piece_bytes)
        pure = pure_scan.scan(data, len(data), max_line_bytes, 1, with_message, with_hash)
    assert pure[0] == found[0] and pure[1] == 0 and pure[3] == (b"", b"", b"", b"")
    records, pure_records = pl.DataFrame(compiled.series(found[2])), pl.DataFrame(compiled.series(pure[2]))
    assert_frame_equal(pure_records, records.filter(pl.col("line").is_in(pure_records["line"].implode())))
    # Every line the stand-in did not take is left undecided, with its place in the chunk.
    left = [memoryview(part).cast("q").tolist() for part in pure[4]]
    assert sorted([*left[0], *(pure_records["line"] - 1)]) == list(range(found[0]))
    lines = data.split(b"\n")
    assert [data[a:b] for a, b in zip(left[1], left[2], strict=True)] == [lines[i] for i in left[0]]


def test_a_chunk_of_nothing_has_no_lines_and_typed_empty_columns():
    lines, blank, records, decided, undecided = pure_scan.scan(b"", 0, 256, 1, True, True)
    assert (lines, blank, decided, undecided) == (0, 0, (b"",) * 4, (b"",) * 3)
    assert pl.DataFrame(compiled.series(records)).schema == pl.Schema(
        {name: RECORD_SCHEMA[name] for name in ("ts", "status", "service", "user", "message", "record_hash", "line")})


def test_the_record_columns_hold_the_bytes_of_records_only():
    # Strings split off every line share buffers; the columns handed over must not keep them, or a
    # rule's saved state would carry the text of lines that are no records.
    secret = "4111111111111111"
    data = (f"2024-03-05T14:07:09Z paid svc u1 hello\nnot a record {secret}a {secret}b\n"
            f"2025-02-30T00:00:00Z paid {secret}c {secret}d {secret}e\n").encode()
    records = compiled.series(pure_scan.scan(data, len(data), 256, 1, True, True)[2])
    frame = pl.DataFrame({"ts": [0, 5], "user": ["a" * 20, secret], "line": [1, 2]})  # the second row not counted
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tally_module, "_tally", pure_tally)
        groups = tally_module.tally(frame, width=1, lo=0, hi=1, keys=["user"]).groups
    assert groups["user"].to_list() == ["a" * 20]
    for column in [*records, groups["user"]]:
        written = io.BytesIO()
        column.to_frame().write_ipc(written)
        assert secret.encode() not in written.getvalue(), column.name


# --- tally -------------------------------------------------------------------------------------------

WORDS = ["a", "", "é", "user123", "twelve bytes", "thirteen byte", "AuthenticationService", "x" * 40,
         "ünïcödé-sérvïcé", "sixteen bytes!!!", "seventeen bytes!!", "twenty-four bytes long!!"]
STATUSES = ["SUCCESS", "FAILURE", "ERROR", "a-status-longer-than-twelve"]
maybe_time = st.one_of(st.none(), st.integers(-(2**40), 2**40))
rows = st.lists(st.tuples(
    st.integers(-3 * 86_400_000_000, 3 * 86_400_000_000), st.sampled_from(WORDS), st.sampled_from(WORDS),
    st.sampled_from(STATUSES), st.integers(-5, 5), st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1]),
    st.integers(1, 30), st.integers(-2, 6), st.integers(0, 3), maybe_time, maybe_time,
), max_size=60)
COLUMNS = {"ts": pl.Int64, "service": pl.String, "user": pl.String, "status": pl.String, "ikey": pl.Int64,
           "ukey": pl.UInt64, "line": pl.Int64, "count": pl.Int64, "flagged": pl.Int64, "first": pl.Int64,
           "last": pl.Int64}


def tally_frame(drawn: list[tuple]) -> pl.DataFrame:
    frame = pl.DataFrame(drawn, schema=COLUMNS, orient="row")
    return frame.with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


@st.composite
def tally_params(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(["service", "user", "status", "ikey", "ukey", "ts"]), max_size=3, unique=True))
    weights = draw(st.one_of(st.none(), st.builds(
        Weights, *(st.sampled_from([None, name]) for name in ("count", "flagged", "first", "last")))))
    flag_values = st.lists(st.sampled_from([*STATUSES, "absent", "thirteen byte", "é"]), max_size=3)
    return dict(
        width=draw(st.sampled_from([1, 7_000_000, 60_000_000, 86_400_000_000, 2**62])),
        lo=draw(st.one_of(st.integers(-4 * 86_400_000_000, 0), st.just(-(2**62)))),
        hi=draw(st.one_of(st.integers(0, 4 * 86_400_000_000), st.just(2**62))),
        keys=keys, **{draw(st.sampled_from(["flag", "flag", "skip"])):
                      draw(st.one_of(st.none(), flag_values.map(lambda values: ("status", values))))},
        sample_limit=draw(st.integers(0, 6)), sample_one_in=draw(st.sampled_from([1, 1, 2, 4, 8])),
        top=draw(st.integers(0, 12)), hash_keys=draw(st.booleans()),
        tables=draw(st.one_of(st.just(tally_module.TABLES),
                              st.lists(st.sampled_from(tally_module.TABLES), unique=True))),
        time=draw(st.sampled_from(["ts", "ts", "ikey"])), line=draw(st.sampled_from(["line", "line", None])),
        weights=weights,
    )


def tallied(module: ModuleType, frame: pl.DataFrame, params: dict[str, Any]) -> Any:
    """The tally's tables as frames, and its newest times; or the type of what it raised."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tally_module, "_tally", module)
        try:
            found = tally_module.tally(frame, **params)
        except (TypeError, ValueError) as exc:
            return type(exc)
    return as_frames(found)


def as_frames(found: Tally) -> dict[str, Any]:
    tables = {name: getattr(found, name) for name in ("groups", "samples", "totals")}
    return {name: table.frame(**{c: c for c in table}) for name, table in tables.items()} | {"newest": found.newest}


@needs_tally
@EXAMPLES
@given(rows, tally_params())
def test_a_tally_is_the_compiled_one(drawn, params):
    frame = tally_frame(drawn)
    expected, found = tallied(TALLY, frame, params), tallied(pure_tally, frame, params)
    if isinstance(expected, type):
        assert found is expected
        return
    assert found["newest"] == expected["newest"]
    for name in ("groups", "samples", "totals"):
        assert_frame_equal(found[name], expected[name])  # dtypes, order and the hash too


@needs_tally
def test_keys_of_every_length_hash_and_group_as_the_stand_in_does():
    # Keys of 13 to 31 bytes are hashed and compared without a branch on their length, 32 bytes
    # and up by a loop: every length, and a key that differs from another in any one byte only.
    keys = []
    for n in range(1, 72):
        base = "".join(chr(0x61 + (i * 7 + n) % 26) for i in range(n))
        keys += [base, *(base[:i] + "#" + base[i + 1:] for i in range(n))]
    frame = pl.DataFrame({"ts": [0] * len(keys), "user": keys, "line": range(len(keys))})
    params = dict(width=60, lo=0, hi=1, keys=["user"], hash_keys=False, tables=("groups",))
    expected, found = tallied(TALLY, frame, params), tallied(pure_tally, frame, params)
    assert_frame_equal(found["groups"], expected["groups"])
    assert expected["groups"]["count"].to_list() == [1] * len(keys)  # no two keys taken for one
    hashed = {**params, "hash_keys": True}
    assert_frame_equal(tallied(pure_tally, frame, hashed)["groups"], tallied(TALLY, frame, hashed)["groups"])


@needs_tally
@pytest.mark.parametrize("change", [
    lambda f: f.with_columns(user=pl.lit(None, pl.String)),
    lambda f: f.with_columns(user=pl.lit(1.5)),
    lambda f: f.with_columns(line=pl.col("line").cast(pl.UInt64)),
    lambda f: f.with_columns(count=pl.col("count").cast(pl.UInt64)),
    lambda f: f.with_columns(status=pl.lit(3)),
], ids=["null key", "float key", "UInt64 lines", "UInt64 weights", "int flag"])
def test_a_tally_refuses_what_the_compiled_one_refuses(change):
    frame = change(tally_frame([(0, "a", "b", "ERROR", 1, 2, 1, 1, 1, None, None)]))
    params = dict(width=60, lo=0, hi=1, keys=["user"], flag=("status", ["ERROR"]), weights=Weights("count"))
    assert isinstance(tallied(TALLY, frame, params), type)
    assert tallied(pure_tally, frame, params) is tallied(TALLY, frame, params)


# --- choosing the stand-ins --------------------------------------------------------------------------


def python(script: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def test_omp_no_compiled_loads_every_stand_in():
    done = python("""
        from core import compiled, parse, tally
        print(parse._scan.__name__, tally._tally.__name__, compiled.all_compiled())
    """, env={"OMP_NO_COMPILED": "1"})
    assert done.stdout.split() == ["core.fallback._scan", "core.fallback._tally", "False"], done.stderr


def test_a_stand_in_of_another_version_is_refused_by_name():
    done = python("""
        from core import compiled
        compiled.load("_scan", 999, "the compiled parser")
    """, env={"OMP_NO_COMPILED": "1"})
    assert "ImportError: core._scan: its stand-in core/fallback/_scan.py is of version" in done.stderr


def test_the_build_skips_an_extension_it_cannot_compile(tmp_path):
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "core", tmp_path / "core", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    done = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "CC": "false", "CXX": "false"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "warning: core._scan not built (" in done.stderr and "warning: core._tally not built (" in done.stderr
    assert not list((tmp_path / "core").glob("*.so"))


# --- the engine on the stand-ins ---------------------------------------------------------------------

# tests/test_detectors_rules.py too would more than double the time (some 45 s more on 2 CPUs).
ENGINE_TESTS = ["tests/test_engine.py", "tests/test_parse.py", "tests/test_tally.py", "tests/test_detectors.py"]


def test_the_engine_tests_pass_on_the_stand_ins():
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *ENGINE_TESTS], cwd=REPO, check=False,
        capture_output=True, text=True, env={**os.environ, "OMP_NO_COMPILED": "1"}, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout


@pytest.fixture(scope="module")
def dirty_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated log with bad lines (Unicode, invalid UTF-8, blanks, overlong) and planted anomalies."""
    folder = tmp_path_factory.mktemp("dirty")
    (folder / "data").mkdir()
    subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), "--lines", "60000", "--seed", "11",
                    "--bad-rate", "0.08", "--long-every", "9000", "--out", str(folder / "data" / "app.log"),
                    "--manifest", str(folder / "manifest.json")], check=True, capture_output=True, timeout=120)
    return folder / "data"


def run_on(data: Path, out: Path, pure: bool) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", "--reset", "--data-dir", str(data), "--output-dir", str(out)],
        cwd=REPO, check=False, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NO_COMPILED": "1" if pure else ""},
    )


def test_a_run_on_the_stand_ins_warns_once_with_the_cost(dirty_log, tmp_path):
    done = run_on(dirty_log, tmp_path / "out", pure=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(PURE_PYTHON) == 1, done.stderr
    assert f"about {compiled.SLOWDOWN} x slower" in done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["run"]["compiled"] is False
    assert summary["totals"]["malformed"] > 0 and summary["totals"]["blank"] > 0


@pytest.mark.skipif(SCAN is None or TALLY is None, reason="the compiled modules are not built: no run to compare with")
def test_a_run_on_the_stand_ins_writes_what_a_compiled_run_writes(dirty_log, tmp_path):
    outputs = {}
    for pure in (False, True):
        done = run_on(dirty_log, tmp_path / str(pure), pure)
        assert done.returncode == 0, done.stderr
        assert (PURE_PYTHON in done.stderr) is pure
        outputs[pure] = [(tmp_path / str(pure) / name).read_text(encoding="utf-8")
                         for name in ("summary.json", "anomalies.json")]
    summaries = [json.loads(outputs[pure][0]) for pure in (False, True)]
    assert [s["run"]["compiled"] for s in summaries] == [True, False]
    assert json.dumps(without_run(summaries[0])) == json.dumps(without_run(summaries[1]))
    anomalies = [_without_times(outputs[pure][1]) for pure in (False, True)]
    assert anomalies[0] == anomalies[1] and '"anomalies": [' in anomalies[0]
    assert json.loads(outputs[False][1])["anomalies"]  # the case is worth checking


def _without_times(text: str) -> str:
    """anomalies.json as written, but for when it was written."""
    return "\n".join(line for line in text.splitlines() if '"generated_at"' not in line)


COUNT = built("_count", importlib.import_module("core.counts").COUNT_VERSION)


#: Keys of up to 28 bytes and a few of 40; and keys of 13 bytes to 6 KB, whose bytes weigh as keys
#: against the capacity (each 43 of them as one key): 300 keys' room is purged by bytes long before
#: it holds 300 keys, 100,000 keys' room holds them all.
_SHORT = [f"user{i % 97}{'x' * (i % 17)}" for i in range(5000)] + ["é" * 20] * 3
_LONG = [f"user{i % 211}-" + "y" * (i % 211 * 29) for i in range(4000)]


@pytest.mark.skipif(COUNT is None, reason="core._count is not built: nothing to compare the stand-in with")
@pytest.mark.parametrize(("keys", "capacity", "purged"), [
    (_SHORT, 1_000_000, False), (_SHORT, 40, True), (_LONG, 100_000, False), (_LONG, 300, True),
])
def test_a_count_table_serialises_to_the_bytes_of_the_compiled_one(keys, capacity, purged):
    # Checkpoints written by either path must read back in the other: the same bytes.
    from core.fallback import _count as pure_count

    keys = pl.Series(keys)
    tables = []
    for module in (COUNT, pure_count):
        table = module.Counts(capacity)
        for part in (keys[:1500], keys[1500:]):
            table.add(part.__arrow_c_stream__())
        tables.append(table)
    assert tables[0].approximate == tables[1].approximate == purged
    compiled_bytes, pure_bytes = (table.to_bytes() for table in tables)
    assert compiled_bytes == pure_bytes
    assert COUNT.Counts.from_bytes(pure_bytes).to_bytes() == compiled_bytes


@pytest.mark.skipif(COUNT is None, reason="core._count is not built: nothing to compare the stand-in with")
@pytest.mark.parametrize("repeats", [4094, 4095, 4096, 5000])  # a purge's median on both sides of the histogram's reach
def test_a_purge_of_frequent_keys_subtracts_the_median_the_compiled_and_the_pure_python_path_agree_on(repeats):
    from core.fallback import _count as pure_count

    keys = pl.Series([f"user{k}" for k in range(41) for _ in range(repeats)] + ["user0", "new"])
    tables = []
    for module in (COUNT, pure_count):
        table = module.Counts(40)  # the 41st key purges 40 keys counted `repeats` times and one counted once
        table.add(keys.__arrow_c_stream__())
        tables.append(table)
    compiled_bytes, pure_bytes = (table.to_bytes() for table in tables)
    assert compiled_bytes == pure_bytes
    assert COUNT.Counts.from_bytes(compiled_bytes).to_bytes() == compiled_bytes


@pytest.mark.skipif(COUNT is None, reason="core._count is not built: nothing to compare the stand-in with")
@given(st.lists(st.integers(0, 40), max_size=300), st.integers(0, 2**64 - 1))
@settings(max_examples=200, deadline=None)
def test_the_rows_of_repeated_hashes_are_the_compiled_ones(draws, spread):
    # Small draws repeat often; spread (times an odd constant) puts them anywhere in 64 bits.
    import numpy as np

    from core.fallback import _count as pure_count

    hashes = (np.array(draws, dtype=np.uint64) * np.uint64(spread | 1)) if draws else np.zeros(0, np.uint64)
    compiled_rows, pure_rows = (np.frombuffer(module.repeats(hashes), dtype=np.int64) for module in (COUNT, pure_count))
    assert compiled_rows.tolist() == pure_rows.tolist()
    counts = {value: draws.count(value) for value in draws}
    assert compiled_rows.tolist() == [row for row, value in enumerate(draws) if counts[value] > 1]


_NAMES = st.one_of(st.sampled_from(["user1", "user12", "", "é" * 7, "PaymentProcessingService"]),
                   st.text(max_size=30))


@given(st.lists(st.one_of(_NAMES, st.none()), max_size=200), st.lists(_NAMES, max_size=12, unique=True))
@settings(max_examples=200, deadline=None)
def test_the_positions_of_some_keys_in_a_column_are_the_stand_ins_and_the_plain_ones(column, values):
    # Keys of every length (inline and not: 12 bytes), nulls (never found), keys not in the column.
    import numpy as np

    from core.counts import capacity_holding, positions
    from core.fallback import _count as pure_count

    series = pl.Series(column, dtype=pl.String())
    rows, which = positions(series, values)
    expected = [(row, values.index(value)) for row, value in enumerate(column) if value is not None and value in values]
    assert list(zip(rows.tolist(), which.tolist(), strict=True)) == expected
    table = pure_count.Counts(capacity_holding(values))
    table.add(pl.Series(values, dtype=pl.String()).__arrow_c_stream__())
    found = table.positions(series.__arrow_c_stream__())
    pure_rows, pure_which = (np.frombuffer(part, dtype=np.int64) for part in found)
    assert (pure_rows.tolist(), pure_which.tolist()) == (rows.tolist(), which.tolist())


def test_positions_refuses_values_that_repeat_or_a_purged_table():
    from core import counts

    with pytest.raises(ValueError, match="distinct"):
        counts.positions(pl.Series(["a"]), ["a", "a"])
    table = counts._count.Counts(1)
    table.add(pl.Series(["a", "a", "b"]).__arrow_c_stream__())  # the second key purges
    with pytest.raises(ValueError, match="purged"):
        table.positions(pl.Series(["a"]).__arrow_c_stream__())


@pytest.mark.skipif(COUNT is None, reason="core._count is not built: nothing to compare the stand-in with")
@given(st.lists(st.one_of(_NAMES, st.none()), max_size=200))
@settings(max_examples=200, deadline=None)
def test_the_long_values_of_a_column_are_the_stand_ins(column):
    import numpy as np

    from core.counts import _stream
    from core.fallback import _count as pure_count

    series = pl.Series(column, dtype=pl.String())
    compiled, pure = (np.frombuffer(module.long_values(_stream(series)), dtype=np.int64).tolist()
                      for module in (COUNT, pure_count))
    assert compiled == pure
    expected = [[row, len(v.encode())] for row, v in enumerate(column) if v is not None and len(v.encode()) > 12]
    assert compiled == [x for pair in expected for x in pair]
