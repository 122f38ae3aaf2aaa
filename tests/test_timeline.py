"""The ``timeline`` rule: records and failures per hour of event time, in summary.json."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timezone

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from core.parse import Batch
from plugins.timeline import BUCKET_BYTES, MAX_POINTS, Timeline
from tests.conftest import REPO, load_bench

reference = load_bench("reference")
_HOUR = 3_600_000_000


def batch(micros: list[int], statuses: list[str], now: int) -> Batch:
    frame = pl.DataFrame({"ts": pl.Series(micros, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
                          "status": statuses})
    return Batch("x.log", frame, now=now)


def oracle(micros: list[int], statuses: list[str], width: int, lo: int, hi: int) -> tuple[dict[int, list[int]], int]:
    """Per bucket of ``width``: records and failures, for buckets from ``lo``'s to ``hi``'s; the rest outside."""
    buckets: dict[int, list[int]] = {}
    outside = 0
    for us, status in zip(micros, statuses, strict=True):
        window = us // width
        if lo // width <= window <= hi // width:
            bucket = buckets.setdefault(window, [0, 0])
            bucket[0] += 1
            bucket[1] += status in ("FAILURE", "ERROR")
        else:
            outside += 1
    return buckets, outside


def test_the_shipped_sample_s_timeline_matches_a_plain_python_count(workspace):
    sample = (REPO / "data").glob("*")
    for path in sample:
        workspace.write(path.name, path.read_bytes())
    assert workspace.main("-q") == 0
    summary = workspace.summary()
    timeline = summary["timeline"]
    counts: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    outside = 0
    for path in sorted(workspace.data.iterdir()):
        for raw in reference.iter_lines(path):
            kind, record = reference.classify(raw) if raw is not None else ("malformed", None)
            if kind != "record":
                continue
            ts, status = record[0], record[1]
            if not datetime(2000, 1, 1, tzinfo=timezone.utc) <= ts <= datetime.now(timezone.utc):
                outside += 1
                continue
            hour = ts.strftime("%Y-%m-%dT%H:00:00Z")
            counts[hour] += 1
            failures[hour] += status in ("FAILURE", "ERROR")
    assert timeline["every_seconds"] == 3600
    assert timeline["outside"] == outside > 0  # the sample has a few implausible clocks
    assert {p["start"]: (p["records"], p["failures"]) for p in timeline["points"]} == {
        hour: (counts[hour], failures[hour]) for hour in counts
    }
    assert sum(p["records"] for p in timeline["points"]) + outside == summary["totals"]["records"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40 * 24), st.integers(0, _HOUR - 1), st.sampled_from(["OK", "ERROR"])),
                min_size=1, max_size=300),
       st.integers(1, 6), st.randoms(use_true_random=False), st.sampled_from([None, 8 * BUCKET_BYTES]))
def test_any_split_and_merge_order_give_the_counts_of_one_pass(rows, parts, rng: random.Random, bound):
    # Hours from 2025-01-01 over 40 days; with a bound of 8 buckets the state joins buckets two by
    # two (as many times as it must), and the result is the one-pass count at the width it reached.
    start = 1_735_689_600_000_000
    micros = [start + h * _HOUR + us for h, us, _ in rows]
    statuses = [s for _, _, s in rows]
    now = start + 50 * 24 * _HOUR
    order = list(range(len(rows)))
    rng.shuffle(order)
    cuts = sorted(rng.sample(range(1, len(rows)), min(parts, len(rows)) - 1)) if len(rows) > 1 else []
    pieces = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)]
    partials = []
    for piece in pieces:
        rule = Timeline("t", statuses=["FAILURE", "ERROR"], min_time="2000-01-01", max_future="5m")
        rule.state_bytes = bound
        rule.update(batch([micros[i] for i in piece], [statuses[i] for i in piece], now))
        partials.append(rule)
    rng.shuffle(partials)
    merged = partials[0]
    for other in partials[1:]:
        merged.merge(other)
    value = merged.result().value
    width = value["every_seconds"] * 1_000_000
    expected, outside = oracle(micros, statuses, width, 0, now)
    assert value["outside"] == outside == 0
    assert {p["start"]: [p["records"], p["failures"]] for p in value["points"]} == {
        datetime.fromtimestamp(w * width / 1e6, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"): c
        for w, c in expected.items()
    }
    if bound is not None:
        assert len(merged.buckets) * BUCKET_BYTES <= bound
    else:
        assert width == _HOUR


def test_implausible_clocks_are_counted_outside_and_never_stretch_the_axis():
    now = 1_767_225_600_000_000  # 2026-01-01
    micros = [now - _HOUR, now + 10 * 365 * 24 * _HOUR, 0, now + 60_000_000]
    rule = Timeline("t")
    rule.update(batch(micros, ["OK", "ERROR", "OK", "ERROR"], now))
    value = rule.result().value
    assert value["outside"] == 2  # 2036 and 1970; a minute ahead is within max_future
    assert [p["records"] for p in value["points"]] == [1, 1]


def test_years_of_hours_are_joined_to_at_most_the_points_summary_json_holds():
    now = 1_767_225_600_000_000
    micros = [now - h * _HOUR for h in range(5 * 365 * 24)]  # five years, one record an hour
    rule = Timeline("t")
    rule.update(batch(micros, ["OK"] * len(micros), now))
    value = rule.result().value
    assert len(value["points"]) <= MAX_POINTS
    assert value["every_seconds"] in (3600 * 2**k for k in range(1, 8))
    assert sum(p["records"] for p in value["points"]) == len(micros)
    assert rule.width == _HOUR  # the state keeps its hours; only the output is joined
