"""The compiled tally (core/_tally.c) against the same tally written in Polars, on any input."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest.mock import patch

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import plugins.windows
from core.tally import Tally, Weights, tally
from plugins.windows import SMALL_ROWS, Table, window_rows

REPO = Path(__file__).resolve().parent.parent
# Short values are kept inside Arrow's string views, long ones (over 12 bytes) in their buffers.
WORDS = ["a", "b", "", "ab", "é", "user123", "twelve bytes", "thirteen byte", "AuthenticationService",
         "AuthenticationServicf", "x" * 40, "ünïcödé-sérvïcé"]
STATUSES = ["SUCCESS", "FAILURE", "ERROR", "a-status-longer-than-twelve"]
MINUTE = 60_000_000

rows = st.lists(
    st.tuples(
        st.integers(-3 * 86_400_000_000, 3 * 86_400_000_000),  # microseconds, before and after 1970
        st.sampled_from(WORDS), st.sampled_from(WORDS), st.sampled_from(STATUSES),
    ),
    max_size=120,
)


def frame_of(records: list[tuple[int, str, str, str]], shuffle_lines: bool = False) -> pl.DataFrame:
    lines = list(range(1, len(records) + 1))
    if shuffle_lines:
        lines = lines[::-1]
    return pl.DataFrame(
        {
            "ts": pl.Series([r[0] for r in records], dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            "service": [r[1] for r in records],
            "user": [r[2] for r in records],
            "status": [r[3] for r in records],
            "line": lines,
        },
        schema={"ts": pl.Datetime("us", "UTC"), "service": pl.String, "user": pl.String, "status": pl.String,
                "line": pl.Int64},
    )


def reference(frame: pl.DataFrame, *, width: int, lo: int, hi: int, keys: list[str],
              flag: tuple[str, list[str]] | None, sample_limit: int, top: int) -> dict[str, pl.DataFrame | list]:
    """What ``tally`` should give, in Polars."""
    us = pl.col("ts").dt.epoch("us")
    flagged = pl.col(flag[0]).is_in(flag[1]) if flag else pl.lit(True)
    rows = (
        frame.with_row_index("row").with_columns(us=us)
        .filter((pl.col("us") >= lo) & (pl.col("us") <= hi))
        .with_columns(window=pl.col("us") // width, flagged=flagged)
    )
    by = [*keys, "window"]
    groups = rows.group_by(by).agg(
        count=pl.len().cast(pl.Int64),
        flagged=pl.col("flagged").sum().cast(pl.Int64),
        first=pl.col("us").filter("flagged").min(),
        last=pl.col("us").filter("flagged").max(),
        row=pl.col("row").min(),
    ).sort("window", "row")
    samples = (
        rows.filter("flagged").sort("line").filter(pl.int_range(pl.len()).over(by) < sample_limit)
        .join(groups.select(*by, total="flagged", group_row="row"), on=by)
        .with_columns(n=pl.when(pl.int_range(pl.len()).over(by) == 0).then("total").otherwise(0))
        .sort("window", "group_row", "line").select(*keys, "window", "us", "line", "n")
    )
    totals = groups.group_by("window").agg(pl.col("count").sum(), pl.col("flagged").sum()).sort("window")
    newest = sorted(rows["us"].to_list(), reverse=True)[:top]
    return {"groups": groups.drop("row"), "samples": samples, "totals": totals, "newest": newest}


def as_frames(found: Tally) -> dict[str, pl.DataFrame | list]:
    return {
        name: getattr(found, name).frame(**{c: c for c in getattr(found, name)}) for name in ("groups", "samples",
                                                                                              "totals")
    } | {"newest": found.newest}


@settings(max_examples=300, deadline=None)
@given(
    records=rows,
    width=st.sampled_from([1, 7_000_000, MINUTE, 600_000_000, 86_400_000_000]),
    bounds=st.tuples(st.integers(-4 * 86_400_000_000, 0), st.integers(0, 4 * 86_400_000_000)),
    keys=st.sampled_from([[], ["service"], ["user", "service"], ["status"]]),
    flagging=st.booleans(),
    sample_limit=st.integers(0, 6),
    top=st.integers(0, 12),
    shuffle_lines=st.booleans(),
)
@pytest.mark.slow
def test_the_tally_is_what_polars_computes(records, width, bounds, keys, flagging, sample_limit, top, shuffle_lines):
    frame = frame_of(records, shuffle_lines)
    params = dict(width=width, lo=bounds[0], hi=bounds[1], keys=keys,
                  flag=("status", ["FAILURE", "ERROR"]) if flagging else None, sample_limit=sample_limit, top=top)
    found = as_frames(tally(frame, **params))
    expected = reference(frame, **params)
    assert found["newest"] == expected["newest"]
    for name in ("groups", "samples", "totals"):
        assert_frame_equal(found[name], expected[name], check_dtypes=False)


@pytest.mark.parametrize("shape", ["few then many", "many then few", "many throughout", "few throughout"])
def test_the_table_of_groups_grows_right_however_the_groups_come(shape):
    # The table of groups starts small and grows to what its first rows' groups make likely for
    # the whole batch: a batch whose first rows have few groups and its later ones many (or the
    # other way round) makes that guess wrong. Every user comes back once all of them were seen,
    # so a group the table lost as it grew would be counted twice, not once.
    rng = __import__("random").Random(7)
    n = 20_000
    many = {"few then many": lambda i: i >= n // 2, "many then few": lambda i: i < n // 2,
            "many throughout": lambda i: True, "few throughout": lambda i: False}[shape]
    users = [f"user{rng.randrange(n) if many(i) else rng.randrange(40)}" for i in range(n)]
    again = users[:]
    rng.shuffle(again)
    records = [(i * 1_000_000, rng.choice(WORDS), user, rng.choice(STATUSES)) for i, user in enumerate(users + again)]
    frame = frame_of(records)
    params = dict(width=86_400_000_000, lo=0, hi=2**62, keys=["user"], flag=("status", ["FAILURE", "ERROR"]),
                  sample_limit=2, top=3)
    found, expected = as_frames(tally(frame, **params)), reference(frame, **params)
    assert found["groups"].height == expected["groups"].height == len(set(users))
    for name in ("groups", "samples", "totals"):
        assert_frame_equal(found[name], expected[name], check_dtypes=False)


def test_only_the_tables_asked_for_are_built():
    frame = frame_of([(0, "a", "b", "ERROR"), (1, "a", "c", "SUCCESS")])
    found = tally(frame, width=MINUTE, lo=0, hi=10, keys=["user"], tables=("totals",))
    assert (found.groups.height, found.samples.height, found.totals.height) == (0, 0, 1)
    assert found.totals["count"].to_list() == [2]


def test_a_hash_depends_on_the_values_alone():
    # The same record at another row, in another batch whose long strings sit elsewhere in their
    # buffers, hashes the same; a record that differs in any field hashes differently.
    record = (5 * MINUTE, "AuthenticationService", "user7", "SUCCESS")
    first = frame_of([record, (0, "x" * 30, "y", "ERROR")])
    second = frame_of([(0, "x" * 30, "z", "ERROR"), (1, "PaymentService-long", "u", "INFO"), record])
    others = frame_of([(5 * MINUTE + 1, *record[1:]), (record[0], "AuthenticationServicf", *record[2:]),
                       (*record[:2], "user8", record[3]), (*record[:3], "FAILURE")])
    columns = ["ts", "service", "user", "status"]

    def hashes(frame: pl.DataFrame) -> dict[int, int]:
        samples = tally(frame, width=MINUTE, lo=-(2**62), hi=2**62, keys=columns, hash_keys=True).samples
        return dict(zip(samples["line"], samples["hash"], strict=True))

    assert hashes(first)[1] == hashes(second)[3]
    assert hashes(first)[1] not in hashes(others).values()
    assert len(set(hashes(others).values())) == 4


def test_a_hash_is_the_same_in_every_run():
    # duplicate_event keeps hashes in its checkpoint: one computed by another process, with
    # another hash seed for Python's own strings, must be the same.
    script = textwrap.dedent("""
        import polars as pl
        from core.tally import tally
        frame = pl.DataFrame({"ts": [1_753_000_000_000_000], "message": ["Payment captured for REF-1"],
                              "line": [1]}).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
        found = tally(frame, width=60_000_000, lo=0, hi=2**62, keys=["ts", "message"], hash_keys=True)
        print(found.groups["hash"][0])
    """)
    runs = {
        subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout
        for seed in ("1", "2")
    }
    assert len(runs) == 1 and runs.pop().strip().isdigit()


def test_columns_in_several_chunks_or_sliced_are_read_whole():
    records = [(i * MINUTE, WORDS[i % len(WORDS)], "u", "SUCCESS") for i in range(40)]
    whole = frame_of(records)
    pieces = pl.concat([whole.slice(0, 15), whole.slice(15)], rechunk=False)
    assert pieces["service"].n_chunks() == 2
    expected = as_frames(tally(whole, width=MINUTE, lo=0, hi=2**62, keys=["service"]))
    assert_frame_equal(as_frames(tally(pieces, width=MINUTE, lo=0, hi=2**62, keys=["service"]))["groups"],
                       expected["groups"])
    sliced = as_frames(tally(whole.slice(7, 20), width=MINUTE, lo=0, hi=2**62, keys=["service"]))
    assert sliced["groups"]["count"].sum() == 20
    assert sliced["samples"]["line"].min() == 8


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1]), min_size=1, max_size=30))
def test_uint64_keys_are_grouped_by_value_and_come_back_as_uint64(values):
    frame = pl.DataFrame({"ts": [0] * len(values), "key": pl.Series(values, dtype=pl.UInt64),
                          "line": list(range(1, len(values) + 1))})
    groups = tally(frame, width=MINUTE, lo=0, hi=1, keys=["key"]).groups.frame(key="key", count="count")
    assert groups["key"].dtype == pl.UInt64
    assert sorted(groups.rows()) == sorted(pl.Series(values, dtype=pl.UInt64).value_counts().rows())


def test_nulls_and_unsupported_types_are_refused_by_name():
    frame = frame_of([(0, "a", "b", "SUCCESS")])
    with pytest.raises(ValueError, match="keys: expected no nulls"):
        tally(frame.with_columns(user=pl.lit(None, pl.String)), width=MINUTE, lo=0, hi=1, keys=["user"])
    with pytest.raises(TypeError, match="keys: expected Int64, UInt64, Datetime"):
        tally(frame.with_columns(user=pl.lit(1.5)), width=MINUTE, lo=0, hi=1, keys=["user"])
    with pytest.raises(TypeError, match="us and lines: expected Int64"):  # UInt64 is for keys only
        tally(frame.with_columns(line=pl.col("line").cast(pl.UInt64)), width=MINUTE, lo=0, hi=1)


@settings(max_examples=200, deadline=None)
@given(records=rows, cuts=st.lists(st.integers(0, 120), max_size=3), keys=st.sampled_from([[], ["service"], ["user"]]),
       flagging=st.booleans())
def test_tallies_of_parts_folded_by_weights_equal_the_tally_of_the_whole(records, cuts, keys, flagging):
    frame = frame_of(records)
    params = dict(width=MINUTE, lo=-(2**62), hi=2**62, keys=keys, flag=("status", ["ERROR"]) if flagging else None,
                  tables=("groups",))
    bounds = [0, *sorted(min(c, frame.height) for c in cuts), frame.height]
    parts = [as_frames(tally(frame.slice(a, b - a), **params))["groups"]
             for a, b in zip(bounds, bounds[1:], strict=False)]
    folded = tally(pl.concat(parts), width=1, lo=-(2**62), hi=2**62, keys=keys, time="window", line=None,
                   weights=Weights("count", "flagged", "first", "last"), sample_limit=0, top=0, tables=("groups",))
    by = [*keys, "window"]
    assert_frame_equal(as_frames(folded)["groups"].sort(by), as_frames(tally(frame, **params))["groups"].sort(by))


STATS = Table({"kind": pl.String(), "count": pl.Int64(), "first": pl.Int64(), "last": pl.Int64(), "worst": pl.Int64()},
              keys=("kind",), sums=("count",), mins=("first",), maxs=("last", "worst"), windowed=False)
LOCATIONS = Table({"kind": pl.String(), "file": pl.Categorical(), "line": pl.Int64()}, keys=("kind",), samples=True,
                  windowed=False)
maybe = st.one_of(st.none(), st.integers(-(2**40), 2**40))
stat_rows = st.tuples(st.sampled_from(["future", "late", "é"]), st.integers(0, 9), maybe, maybe, maybe)
location_rows = st.tuples(st.sampled_from(["future", "late"]), st.sampled_from(["b.log", "a.log", "ä.log"]),
                          st.integers(1, 40))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(stat_rows, max_size=8), min_size=1, max_size=4),
       st.lists(st.lists(location_rows, max_size=12), min_size=1, max_size=4))
@pytest.mark.slow
def test_small_tables_folded_in_python_equal_the_polars_fold(stat_parts, location_parts):
    stat_parts = [list({row[0]: row for row in part}.values()) for part in stat_parts]  # parts come folded
    for table, parts in ((STATS, stat_parts), (LOCATIONS, location_parts)):
        frames = [pl.DataFrame(part, schema=table.schema, orient="row") for part in parts]
        in_python = table.reduce(frames)
        assert sum(f.height for f in frames) <= SMALL_ROWS  # the Python fold is the one under test
        in_polars = table.fold(pl.concat(frames)).select(list(table.schema))
        assert in_python.schema == in_polars.schema
        assert sorted(in_python.rows(), key=_nulls_first) == sorted(in_polars.rows(), key=_nulls_first)


COUNTS = Table({"key": pl.String(), "window": pl.Int64(), "count": pl.Int64(), "first": pl.Int64(),
                "last": pl.Int64()}, keys=("key", "window"), sums=("count",), mins=("first",), maxs=("last",),
               tallied=Weights(counts="count", first="first", last="last"))
KEPT = Table({"key": pl.String(), "window": pl.Int64(), "file": pl.Categorical(), "line": pl.Int64()},
             keys=("key", "window"), samples=True, keep_all=True)
count_rows = st.tuples(st.sampled_from(["u1", "u2", "é"]), st.integers(-3, 12), st.integers(1, 9),
                       st.integers(-50, 50), st.integers(-50, 50))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(count_rows, max_size=15), min_size=2, max_size=5), st.lists(st.booleans(), min_size=5,
       max_size=5), st.integers(-4, 13), st.integers(-4, 13))
@pytest.mark.slow
def test_folding_parts_by_shared_windows_keeps_every_row_and_the_window_order(parts, ordered, lo, hi):
    # Parts come folded (a row per key and window) and, as tallies are, ordered by window; one
    # that is not is filtered instead of sliced. Split at every size, the fold is the group-by's,
    # and ordered parts fold into an ordered table, which later cuts slice (window_rows).
    frames, locations = [], []
    for part, in_order in zip(parts, ordered, strict=False):
        rows = list({(key, window): (key, window, n, a, b) for key, window, n, a, b in part}.values())
        rows.sort(key=lambda row: row[1], reverse=not in_order)
        frames.append(pl.DataFrame(rows, schema=COUNTS.schema, orient="row"))
        locations.append(pl.DataFrame([(key, window, "a.log", n) for key, window, n, _, _ in rows],
                                      schema=KEPT.schema, orient="row"))
    with patch.object(plugins.windows, "SPLIT_ROWS", 0):
        folded, kept = COUNTS.reduce(frames), KEPT.reduce(locations)
    every = pl.concat(frames)
    expected = every.group_by("key", "window").agg(pl.col("count").sum(), pl.col("first").min(),
                                                   pl.col("last").max())
    assert sorted(folded.rows()) == sorted(expected.select(list(COUNTS.schema)).rows())
    assert sorted(kept.rows()) == sorted(pl.concat(locations).rows())
    if all(f["window"].is_sorted() for f in frames):
        assert folded["window"].is_sorted() and kept["window"].is_sorted()
    for table in (folded, every):
        cut = table.filter((pl.col("window") >= lo) & (pl.col("window") < hi))
        assert sorted(window_rows(table, lo, hi).rows()) == sorted(cut.rows())
        assert sorted(window_rows(table, lo, None).rows()) == sorted(table.filter(pl.col("window") >= lo).rows())


def _nulls_first(row: tuple) -> tuple:
    return tuple((value is not None, value) if value is not None else (False, 0) for value in row)


def test_rules_that_read_the_same_counts_share_one_tally_of_a_batch():
    # Error spikes and silent services both count services by ten minutes: the second reads the
    # first's tally (made with the failure flag, which changes nothing it reads) and gets the
    # state it would get alone.
    from plugins.error_spike import ErrorSpike
    from plugins.flatline import Flatline
    from tests.detector_data import batches, mixed

    lines = mixed()
    spike, quiet = ErrorSpike("spike", by="service"), Flatline("quiet")
    [batch] = batches(lines)
    spike.empty().update(batch)
    together = quiet.empty()
    together.update(batch)
    assert len(batch.tallies) == 1  # one tally made, for both
    alone = quiet.empty()
    alone.update(batches(lines)[0])
    assert together.result().value == alone.result().value
    assert together._bands.keys() == alone._bands.keys()
    for band, [(_, mine)] in together._bands.items():
        [(_, theirs)] = alone._bands[band]
        assert all(mine[name].equals(theirs[name]) for name in mine)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32), cut=st.integers(0, 3000), one_in=st.sampled_from([2, 8, 64]),
       keys=st.sampled_from([[], ["user"], ["service", "user"]]))
def test_sampled_rows_are_picked_by_their_keys_and_time_whatever_the_split(seed, cut, one_in, keys):
    # 3000 records, many per (user, minute): the rows that can be samples must be the same in a
    # tally of the whole, of two parts, and with other line numbers, and about 1 in one_in.
    rng = __import__("random").Random(seed)
    records = [(rng.randrange(20 * MINUTE), rng.choice(WORDS[:6]), f"u{rng.randrange(40)}", "ERROR")
               for _ in range(3000)]
    options = dict(width=MINUTE, lo=-(2**62), hi=2**62, keys=keys, sample_limit=1000, top=0)

    def picked(frame: pl.DataFrame, **more) -> set[tuple]:
        samples = tally(frame, **options, sample_one_in=one_in, **more).samples
        return set(zip(*(samples[name].to_list() for name in [*keys, "us"]), strict=True))

    whole = frame_of(records)
    everything = picked(whole)
    assert everything == picked(whole[:cut]) | picked(whole[cut:])
    assert everything == picked(frame_of(records, shuffle_lines=True))
    distinct = {(*(dict(zip(["service", "user"], r[1:3], strict=True))[k] for k in keys), r[0]) for r in records}
    mean = len(distinct) / one_in  # within 5 standard deviations of a binomial count
    assert abs(len(everything) - mean) <= 5 * mean**0.5
    # And each group's samples are the ones with the smallest lines among its picked rows.
    few = tally(whole, **{**options, "sample_limit": 2}, sample_one_in=one_in).samples
    every = tally(whole, **options, sample_one_in=one_in).samples.frame(
        **{c: c for c in [*keys, "window", "line"]})
    smallest = every.sort("line").group_by([*keys, "window"], maintain_order=True).head(2)
    assert sorted(few["line"].to_list()) == sorted(smallest["line"].to_list())
    with pytest.raises(ValueError, match="power of two"):
        tally(whole, **options, sample_one_in=3)


@settings(max_examples=200, deadline=None)
@given(records=rows, skipped=st.lists(st.sampled_from([*STATUSES, "absent"]), max_size=3),
       keys=st.sampled_from([[], ["status"], ["user", "service"]]), width=st.sampled_from([MINUTE, 2**62]))
def test_skipping_rows_by_a_value_tallies_the_others_as_if_they_were_alone(records, skipped, keys, width):
    frame = frame_of(records)
    options = dict(width=width, lo=-(2**62), hi=2**62, keys=keys, sample_limit=3, top=4)
    found = as_frames(tally(frame, skip=("status", skipped), **options))
    alone = as_frames(tally(frame.filter(~pl.col("status").is_in(skipped)), **options))
    assert found["newest"] == alone["newest"]
    for name in ("groups", "samples", "totals"):
        assert_frame_equal(found[name], alone[name])
    with pytest.raises(ValueError, match="flag and skip"):
        tally(frame, flag=("status", ["ERROR"]), skip=("status", skipped), **options)


def _many_records(n: int, seed: int, in_time_order: bool) -> pl.DataFrame:
    rng = __import__("random").Random(seed)
    records = [(rng.randrange(30 * MINUTE), rng.choice(WORDS), f"user{rng.randrange(n // 2)}", rng.choice(STATUSES))
               for _ in range(n)]
    return frame_of(sorted(records) if in_time_order else records)


def test_threads_tallying_side_by_side_get_what_one_thread_gets():
    # The tally runs without the GIL: tallies of several sizes, in time order (whose groups need no
    # sorting) and not, interleaved on four threads at once, must each give what it gave alone.
    frames = [_many_records(n, seed, ordered) for seed, (n, ordered) in
              enumerate([(50, True), (40_000, True), (40_000, False), (300_000, False), (3_000, True)])]
    options = dict(width=MINUTE, lo=-(2**62), hi=2**62, keys=["user"], flag=("status", ["ERROR"]), sample_limit=3,
                   top=5, tables=("groups", "samples", "totals"))
    alone = [as_frames(tally(frame, **options)) for frame in frames]
    for frame, expected in zip(frames[:3] + frames[4:], alone[:3] + alone[4:], strict=True):  # and as Polars says
        wanted = reference(frame, **{k: v for k, v in options.items() if k != "tables"})
        assert_frame_equal(expected["groups"], wanted["groups"], check_dtypes=False)

    def work(shift: int) -> list[dict]:
        order = [(shift + i) % len(frames) for i in range(3 * len(frames))]
        return [(i, as_frames(tally(frames[i], **options))) for i in order]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = [r for done in pool.map(work, range(4)) for r in done]
    assert len(results) == 4 * 3 * len(frames)
    for i, found in results:
        assert found["newest"] == alone[i]["newest"]
        for name in ("groups", "samples", "totals"):
            assert_frame_equal(found[name], alone[i][name])

