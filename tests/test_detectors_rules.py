"""Each detector rule type, in the incident form: hand-made logs for the rules without windows, and
synthetic days of Poisson traffic (numpy, fixed seeds) for the windowed ones: the traffic a rule must
stay quiet on (more volume, a daily cycle, a steady heavy user, chance repeats) and the anomaly it
must report as exactly one incident (a failure-rate burst, an outage, a new burst, a planted copy)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.detection import SAMPLE_LIMIT
from plugins.duplicates import DuplicateEvent
from plugins.error_spike import ErrorSpike
from plugins.flatline import Flatline
from plugins.frequency import Frequency
from plugins.timestamps import TimestampCheck
from plugins.unknown_status import OTHERS, UnknownStatus
from tests.detector_data import (
    DAY_WINDOWS,
    at,
    background,
    batches,
    daily_cycle,
    evaluate,
    in_time_order,
    random_sizes,
    rec,
    scrambled,
    synthetic,
)

NOW = "2026-01-01T00:00:00Z"


def run(rule, lines: list[str], chunk: int | None = None) -> list[dict[str, Any]]:
    if chunk is None:
        return evaluate(rule, batches(lines))
    sizes = [chunk] * (len(lines) // chunk) + ([len(lines) % chunk] if len(lines) % chunk else [])
    return evaluate(rule, batches(lines, sizes=sizes))


def same(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Incidents without their samples: shuffling moves lines, so it moves the locations samples point to."""
    return [{k: v for k, v in a.items() if k != "samples"} for a in found]


def locations(incident: dict[str, Any]) -> list[str]:
    return [sample["location"] for sample in incident["samples"]]


def shuffled(lines: list[str], seed: int) -> list[str]:
    copy = list(lines)
    random.Random(seed).shuffle(copy)
    return copy


def minute_of_window(window: int) -> int:
    """The first minute (after BASE) of ten-minute window ``window``."""
    return window * 10


# -- unknown_status -------------------------------------------------------------------------------


def test_unknown_status_reports_each_unknown_status_with_count_times_and_samples():
    lines = background(range(3)) + [rec(0.5, "PENDING"), rec(2.5, "PENDING"), rec(1, "CHARGEBACK")]
    found = run(UnknownStatus("u"), lines)
    assert [(a["key"], a["count"], a["first_seen"], a["last_seen"]) for a in found] == [
        ("CHARGEBACK", 1, at(1), at(1)),
        ("PENDING", 2, at(0.5), at(2.5)),
    ]
    assert locations(found[1]) == ["a.txt:61", "a.txt:62"]
    assert found[1]["expected"] == "one of SUCCESS, FAILURE, INFO, WARN, ERROR"
    assert found[1]["window_start"] is None


def test_unknown_status_ignores_the_allowed_statuses():
    assert run(UnknownStatus("u"), background(range(3)) + [rec(1, s) for s in ("INFO", "WARN", "ERROR")]) == []


def test_unknown_status_boundary_is_exact_and_case_sensitive():
    rule = UnknownStatus("u", allowed=["SUCCESS", "FAILURE"])
    found = run(rule, [rec(1, "SUCCESS"), rec(2, "Success"), rec(3, "FAILURE"), rec(4, "INFO")])
    assert [a["key"] for a in found] == ["INFO", "Success"]


def test_unknown_status_caps_distinct_statuses_by_name_not_arrival():
    lines = [rec(i, f"S{i:02d}") for i in range(10)]
    for seed in range(3):
        found = run(UnknownStatus("u", allowed=["SUCCESS"], max_statuses=3), shuffled(lines, seed), chunk=2)
        # Incidents of one severity and score are listed by key: "(other statuses)" sorts first.
        assert [(a["key"], a["count"]) for a in found] == [(OTHERS, 7), ("S00", 1), ("S01", 1), ("S02", 1)]


def test_unknown_status_shuffled_input_gives_the_same_anomalies():
    lines = background(range(5)) + [rec(m, "PENDING") for m in (0.3, 2.2, 4.1)]
    expected = same(run(UnknownStatus("u"), lines))
    assert expected[0]["count"] == 3
    for seed in range(3):
        assert same(run(UnknownStatus("u"), shuffled(lines, seed), chunk=17)) == expected


# -- timestamp -------------------------------------------------------------------------------------


def test_timestamp_flags_future_early_and_unparseable():
    lines = background(range(2)) + [
        "2031-01-01T00:00:00Z SUCCESS S u x",
        "1970-01-01T00:00:00.000Z SUCCESS S u x",
        "2025-02-30T00:00:00Z SUCCESS S u x",
        "2025-07-21T25:00:00Z SUCCESS S u x",
    ]
    found = {a["key"]: a for a in run(TimestampCheck("t", now=NOW), lines)}
    assert sorted(found) == ["before_min_time", "future", "unparseable"]
    assert (found["future"]["count"], found["future"]["observed"], locations(found["future"])) == (
        1, "2031-01-01T00:00:00Z", ["a.txt:41"])
    assert (found["before_min_time"]["count"], found["before_min_time"]["threshold"]) == (1, "2000-01-01T00:00:00Z")
    assert found["unparseable"]["count"] == 2


def test_timestamp_is_quiet_on_plausible_timestamps():
    assert run(TimestampCheck("t", now=NOW, max_lateness="1m"), background(range(5))) == []


def test_timestamp_boundaries_are_exact():
    rule = TimestampCheck("t", now=NOW, max_future="5m", min_time="2000-01-01", max_lateness="60s")
    lines = [
        "2026-01-01T00:05:00Z SUCCESS S u at-the-limit",
        "2026-01-01T00:05:00.000001Z SUCCESS S u one-microsecond-over",
        "2000-01-01T00:00:00Z SUCCESS S u at-min-time",
        "1999-12-31T23:59:59.999999Z SUCCESS S u one-microsecond-before",
    ]
    found = {a["key"]: a for a in run(TimestampCheck("t", now=NOW, max_future="5m", min_time="2000-01-01"), lines)}
    assert sorted(found) == ["before_min_time", "future"]
    assert (found["future"]["count"], locations(found["future"])) == (1, ["a.txt:2"])
    assert (found["before_min_time"]["count"], locations(found["before_min_time"])) == (1, ["a.txt:4"])
    # 60 s behind the newest earlier line is not late; 60.6 s is.
    [late] = run(rule, [rec(10), rec(9), rec(8.99)])
    assert (late["key"], late["count"], locations(late), late["observed"]) == ("late", 1, ["a.txt:3"], 60.6)


def test_timestamp_lateness_is_judged_in_line_order_across_chunks_and_files():
    lines = [rec(m) for m in (0, 1, 2, 30, 3, 31, 4, 32)]  # 3 and 4 arrive after 30: late
    rule = TimestampCheck("t", now=NOW, max_lateness="10m")
    for chunk in (1, 2, 3, 8):
        [late] = run(rule, lines, chunk=chunk)
        assert (late["key"], late["count"], locations(late)) == ("late", 2, ["a.txt:5", "a.txt:7"])
    # Another file starts afresh: its first line is not late against the first file.
    both = batches(lines) + batches([rec(1), rec(2)], path="b.txt")
    assert evaluate(rule, both)[0]["count"] == 2


def test_timestamp_shuffled_input_gives_the_same_future_and_early_counts():
    lines = background(range(3)) + ["2031-01-01T00:00:00Z SUCCESS S u x", "1970-01-01T00:00:00Z INFO S u x"] * 3
    expected = [(a["key"], a["count"], a["first_seen"]) for a in run(TimestampCheck("t", now=NOW), lines)]
    for seed in range(3):
        found = run(TimestampCheck("t", now=NOW), shuffled(lines, seed), chunk=13)
        assert [(a["key"], a["count"], a["first_seen"]) for a in found] == expected


# -- error_spike -----------------------------------------------------------------------------------
#
# Days of ten-minute windows; the failure rate is 5 % unless a test changes it. A seasonal model is
# trusted once enough of its residuals are judged: 3 days is what the issue asks for; from 6 days on
# the residuals the daily model made before it had any history are a small part of its last week.

RATE = 0.10


def rate_traffic(seed: int, days: int, volume: np.ndarray | float = 200.0,
                 rate: np.ndarray | float = RATE) -> list[str]:
    """One service's records at ``volume`` a window (Poisson) of which ``rate`` fail (binomial), in time order."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(np.broadcast_to(volume, (days * DAY_WINDOWS,)))
    failures = rng.binomial(counts, np.broadcast_to(rate, counts.shape))
    return in_time_order(synthetic(rng, counts, failures=failures))


def burst_rate(days: int, start: int, length: int, factor: float) -> np.ndarray:
    """The failure rate of every window: RATE, times ``factor`` in ``length`` windows from ``start``."""
    rate = np.full(days * DAY_WINDOWS, RATE)
    rate[start:start + length] *= factor
    return rate


@pytest.mark.parametrize("days", [3, 6])
def test_error_spike_double_volume_at_the_baseline_rate_is_no_incident(days):
    volume = np.full(days * DAY_WINDOWS, 200.0)
    volume[(days - 1) * DAY_WINDOWS:] *= 2  # the last day: twice the records, twice the failures
    assert run(ErrorSpike("spikes"), rate_traffic(1, days, volume)) == []


@pytest.mark.parametrize("days", [3, 6])
def test_error_spike_daily_ramp_at_a_constant_rate_is_no_incident(days):
    # 6x the records at midday than at night; failures follow them at the same 5 %.
    volume = 60 * daily_cycle(days, low=1.0, high=6.0)
    assert run(ErrorSpike("spikes"), rate_traffic(2, days, volume)) == []


@pytest.mark.parametrize("days", [3, 6])
def test_error_spike_rate_burst_is_one_spike_incident_covering_it(days):
    start = (days - 1) * DAY_WINDOWS + 72  # noon of the last day, for 30 minutes
    found = run(ErrorSpike("spikes"), rate_traffic(3, days, rate=burst_rate(days, start, 3, 5.0)))
    assert [(a["key"], a["kind"]) for a in found] == [("all", "spike")]
    [spike] = found
    assert (spike["window_start"], spike["window_end"], spike["windows"]) == (
        at(minute_of_window(start)), at(minute_of_window(start + 3)), 3)
    assert at(minute_of_window(start)) <= spike["peak"]["window_start"] < at(minute_of_window(start + 3))
    assert spike["score"] >= 15 and spike["peak"]["observed"] > 3 * spike["peak"]["expected"]
    assert spike["detail"]["failure_rate"] > 3 * RATE


def test_error_spike_by_service_finds_a_spike_spread_thin_over_every_service_as_all():
    """20 services, each failing three times as often for 30 minutes: too few failures in each to be surprising."""
    days, start = 3, 2 * DAY_WINDOWS + 72
    rng = np.random.default_rng(4)
    rate = burst_rate(days, start, 3, 3.0)
    parts = []
    for index in range(20):
        counts = rng.poisson(np.full(days * DAY_WINDOWS, 40.0))
        parts.append(synthetic(rng, counts, failures=rng.binomial(counts, rate), service=f"Service{index}"))
    lines = in_time_order(*parts)
    found = run(ErrorSpike("spikes", by="service"), lines)
    assert [(a["key"], a["kind"], a["window_start"]) for a in found] == [("all", "spike", at(minute_of_window(start)))]
    assert found[0]["subject"] == {"records": "all", "statuses": ["FAILURE", "ERROR"]}
    # Its samples are failures of any service, inside the incident.
    sampled = [lines[int(location.rsplit(":", 1)[1]) - 1].split() for location in locations(found[0])]
    assert len(sampled) == 5
    for stamp, status, *_ in sampled:
        assert status in ("FAILURE", "ERROR") and found[0]["window_start"] <= stamp < found[0]["window_end"]


# -- merging: a state split any way gives the same incidents -----------------------------------------


def test_rate_burst_split_across_batches_in_any_order_gives_the_same_incidents():
    days = 6
    start = (days - 1) * DAY_WINDOWS + 72
    lines = rate_traffic(3, days, rate=burst_rate(days, start, 3, 5.0))
    whole = run(ErrorSpike("spikes"), lines)
    assert [(a["key"], a["window_start"]) for a in whole] == [("all", at(minute_of_window(start)))]
    rng = random.Random(11)
    for _ in range(3):
        cut = rng.randrange(1, len(lines))
        parts = batches(lines, sizes=[cut, len(lines) - cut])
        rng.shuffle(parts)
        assert same(evaluate(ErrorSpike("spikes"), parts)) == same(whole)
        assert same(scrambled(ErrorSpike("spikes"), parts, rng)) == same(whole)


# -- flatline ---------------------------------------------------------------------------------------
#
# PaymentService is judged; NotificationService logs steadily throughout, so event time moves on
# while PaymentService is silent.


def volume_traffic(seed: int, days: int, volume: np.ndarray | float) -> list[str]:
    """PaymentService at ``volume`` a window and NotificationService at 100 (Poisson), in time order."""
    rng = np.random.default_rng(seed)
    windows = days * DAY_WINDOWS
    payments = synthetic(rng, rng.poisson(np.broadcast_to(volume, (windows,))), service="PaymentService")
    notifications = synthetic(rng, rng.poisson(np.full(windows, 100.0)), service="NotificationService")
    return in_time_order(payments, notifications)


@pytest.mark.parametrize("days", [3, 6])
def test_flatline_end_of_a_burst_is_no_drop(days):
    volume = np.full(days * DAY_WINDOWS, 100.0)
    start = (days - 1) * DAY_WINDOWS + 60
    volume[start:start + 6] *= 3  # an hour at 3x, then back to normal
    found = run(Flatline("flat"), volume_traffic(4, days, volume))
    assert [a for a in found if a["kind"] == "drop"] == []


@pytest.mark.parametrize("days", [3, 6])
def test_flatline_outage_over_a_whole_band_is_one_drop_covering_every_silent_window(days):
    volume = np.full(days * DAY_WINDOWS, 100.0)
    start = (days - 1) * DAY_WINDOWS + 36  # 06:00-12:00 on the last day: one whole 6-hour band
    volume[start:start + 36] = 0
    found = run(Flatline("flat"), volume_traffic(5, days, volume))
    drops = [a for a in found if a["kind"] == "drop"]
    assert [(a["key"], a["count"]) for a in drops] == [("PaymentService", 0)]
    [drop] = drops
    assert (drop["window_start"], drop["window_end"], drop["windows"]) == (
        at(minute_of_window(start)), at(minute_of_window(start + 36)), 36)


@pytest.mark.parametrize("days", [3, 6])
def test_flatline_outage_is_one_drop_incident_on_the_silent_service(days):
    # One drop of the silent service, peaking in the outage, with nothing to sample.
    volume = np.full(days * DAY_WINDOWS, 100.0)
    start = (days - 1) * DAY_WINDOWS + 36
    volume[start:start + 36] = 0
    found = run(Flatline("flat"), volume_traffic(5, days, volume))
    [drop] = found
    assert (drop["key"], drop["kind"], drop["subject"]) == ("PaymentService", "drop", {"service": "PaymentService"})
    assert at(minute_of_window(start)) <= drop["peak"]["window_start"] < at(minute_of_window(start + 36))
    assert drop["peak"]["observed"] == 0 and drop["samples"] == []


@pytest.mark.parametrize("days", [3, 6])
def test_flatline_daily_ramp_down_is_nothing(days):
    # Traffic follows a smooth daily cycle, 20 a window at night to 120 at midday, every day alike.
    assert run(Flatline("flat"), volume_traffic(6, days, 20 * daily_cycle(days, low=1.0, high=6.0))) == []


# -- frequency --------------------------------------------------------------------------------------


def user_traffic(seed: int, days: int = 2, volume: float = 1000.0, heavy_share: float = 0.13) -> list[str]:
    """``volume`` records a window; ``heavy`` sends ``heavy_share`` of them, every window; 200 small users the rest."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(np.full(days * DAY_WINDOWS, volume))
    total = int(counts.sum())
    small = np.char.add("u", rng.integers(0, 200, total).astype(str))
    users = np.where(rng.random(total) < heavy_share, "heavy", small)
    return synthetic(rng, counts, users=users)


def test_frequency_steady_heavy_user_is_nothing():
    lines = user_traffic(7)
    heavy = sum(" heavy " in line for line in lines[:1000])
    assert heavy > 100  # above min_count in a window: only its steadiness keeps it quiet
    assert run(Frequency("freq"), lines) == []


def test_frequency_new_burst_of_a_small_user_is_one_incident():
    minute = 24 * 60 + 303  # 05:03 on day 2
    burst = [rec(minute + i / 500 * 0.99, user="u7", message="request") for i in range(500)]
    found = run(Frequency("freq"), in_time_order(user_traffic(7), burst))
    assert [(a["key"], a["window_start"], a["windows"]) for a in found] == [("u7", at(minute - 3), 1)]
    [busy] = found
    assert busy["count"] >= 500 and busy["subject"] == {"user": "u7"}


# -- duplicate_event --------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.sampled_from(["b.log", "a.log", "é.log"]), st.integers(1, 5)),
                max_size=60))
def test_folding_copies_keeps_the_smallest_locations_and_counts_on_the_first(rows):
    # Each row a record (hash, file, line) standing for n copies; the fold keeps, per hash, its
    # SAMPLE_LIMIT smallest locations in row order, with the hash's copies summed on the smallest.
    rows = [(h, f, i, n) for i, (h, f, n) in enumerate(rows, 1)]
    copies = DuplicateEvent.tables["copies"]
    frame = pl.DataFrame([(h, 0, 0, n, f, line) for h, f, line, n in rows], schema=copies.schema, orient="row")
    kept: dict[int, list[tuple[str, int]]] = {}
    for h, f, line, _ in rows:
        kept.setdefault(h, []).append((f, line))
    smallest = {h: sorted(places)[:SAMPLE_LIMIT] for h, places in kept.items()}
    total = {h: sum(n for g, _, _, n in rows if g == h) for h in kept}
    expected = [(h, f, line, total[h] if (f, line) == smallest[h][0] else 0) for h, f, line, n in rows
                if (f, line) in smallest[h]]
    folded = copies.fold(frame)
    assert list(zip(folded["hash"], folded["file"].cast(pl.String), folded["line"], folded["n"], strict=True)) == \
        expected


def test_duplicate_event_chance_repeats_without_an_id_are_nothing():
    lines = in_time_order(user_traffic(8, days=1))
    heavy = [line for line in lines if " heavy " in line]
    assert len(heavy) - len(set(heavy)) > 100  # the heavy user logs the same login line in the same second
    assert run(DuplicateEvent("dup"), lines) == []
    assert run(DuplicateEvent("dup", ids_only=False), lines) != []


def test_duplicate_event_planted_copies_of_an_order_line_are_one_incident_with_their_locations():
    lines = in_time_order(user_traffic(8, days=1))
    line = f"{at(123)} SUCCESS PaymentService u3 Payment of 12.34 EUR authorized for order ord-8f3a2c"
    lines[1000:1000] = [line]
    lines[5000:5000] = [line]
    lines.append(line)
    found = run(DuplicateEvent("dup"), lines)
    assert [(a["key"], a["kind"], a["count"]) for a in found] == [("events", "duplicate", 3)]
    assert locations(found[0]) == ["a.txt:1001", "a.txt:5001", f"a.txt:{len(lines)}"]
    assert found[0]["window_start"] == found[0]["first_seen"] == at(123)


def test_duplicate_event_a_rare_repeat_of_an_id_less_line_is_one_low_incident():
    """Where id-less lines never repeat by chance (no busy user), a line logged twice is reported, at low severity."""
    rng = np.random.default_rng(9)
    counts = rng.poisson(np.full(DAY_WINDOWS, 200.0))
    users = np.char.add("u", rng.integers(0, 10_000_000, int(counts.sum())).astype(str))
    lines = in_time_order(synthetic(rng, counts, users=users))
    line = f"{at(600)} SUCCESS AuthenticationService u5 User login successful"
    lines[3000:3000] = [line, line]
    found = run(DuplicateEvent("dup"), lines)
    assert [(a["key"], a["kind"], a["count"], a["severity"]) for a in found] == [("events", "duplicate", 2, "low")]
    assert locations(found[0]) == ["a.txt:3001", "a.txt:3002"]
    assert found[0]["detail"]["carries_id"] is False


def test_duplicate_event_an_id_less_repeat_among_chance_repeats_is_nothing():
    """The same planted pair in a log where a busy user repeats lines by chance all day: not reported."""
    lines = in_time_order(user_traffic(8, days=1))
    line = f"{at(600)} SUCCESS PaymentService u5 User login successful"  # the busy user's service
    lines[3000:3000] = [line, line]
    assert run(DuplicateEvent("dup"), lines) == []


@pytest.mark.parametrize("rule", [Flatline("q"), ErrorSpike("s"), Frequency("f"), DuplicateEvent("d")])
def test_windowed_detectors_ignore_implausible_timestamps(rule):
    # A record from 2099 must not open windows nor move the watermark; one from 1970 neither.
    lines = background(range(70)) + ["2099-01-01T00:00:00Z SUCCESS PaymentService u x order 123"] * 150
    lines += ["1970-01-01T00:00:00Z FAILURE PaymentService u x order 123"] * 150
    assert run(rule, lines) == run(rule, background(range(70)))


def test_a_thinned_state_merged_with_one_sealed_whole_thins_what_that_one_brings():
    # Parts thinned at a state's levels are not filtered again (only a partial's are), so the
    # parts of a state sealed whole (a larger bound: no thinning), merged into one that thinned,
    # must be: after the merge no table holds a row its window's level drops.
    lines = user_traffic(3, days=1, volume=600)
    parts = batches(lines, sizes=random_sizes(len(lines), random.Random(3), 12))

    def sealed(batches_: list, max_bytes: int) -> Frequency:
        rule = Frequency("busy", min_count=20)
        rule.limit_state(max_bytes)
        state = rule.empty()
        for batch in batches_:
            partial = rule.empty()
            partial.update(batch)
            state.merge(partial)
            state.seal()
        return state

    whole, thinned = sealed(parts[0::2], 10**9), sealed(parts[1::2], 200_000)
    assert whole.degraded() is None and thinned.degraded() is not None
    thinned.merge(whole)
    data = thinned._data(None, None)
    dropped = ~thinned.kept_keys()
    assert data["counts"].height and data["counts"].filter(dropped).height == 0
    assert data["samples"].height and data["samples"].filter(dropped).height == 0


@pytest.mark.parametrize("rule", [Frequency("f", min_count=20), DuplicateEvent("d")])
def test_thinning_keeps_the_rows_kept_keys_names(rule):
    # _thinned filters with NumPy, not the kept_keys expression (a Polars query): the same rows,
    # string keys (hashed) and hash keys alike, across several level breaks and unordered windows.
    lines = user_traffic(3, days=1, volume=600)
    rule.limit_state(10**9)
    state = rule.empty()
    for batch in batches(lines, sizes=random_sizes(len(lines), random.Random(5), 8)):
        state.update(batch)
    data = state._data(None, None)
    windows = data[rule.events[0]]["window"]
    first, last = int(windows.min()), int(windows.max())
    state._levels = [(first + (last - first) // 4, 1), (first + (last - first) // 2, 3), (last, 7)]
    shuffled = {name: frame.sample(fraction=1.0, shuffle=True, seed=1) for name, frame in data.items()
                if rule.tables[name].windowed}  # what bands hold, and thinning sees
    thinned = state._thinned(shuffled)
    for name, frame in shuffled.items():
        expected = frame.filter(state.kept_keys()) if rule.thin_by in frame.columns and frame.height else frame
        assert thinned[name].equals(expected), name
        assert 0 < thinned[name].height < frame.height or rule.thin_by not in frame.columns or not frame.height


@given(st.lists(st.tuples(st.sampled_from(["u1", "u2", "a-much-longer-user-name", "é"]), st.integers(0, 12),
                          st.integers(1, 500)), max_size=60),
       st.lists(st.tuples(st.sampled_from(["u1", "u2", "a-much-longer-user-name", "é", "absent"]),
                          st.integers(0, 14)), min_size=1, max_size=12),
       st.integers(2, 7))
@settings(max_examples=150, deadline=None)
def test_own_levels_are_the_join_of_each_candidate_to_its_key_s_past_windows(rows, candidates, n):
    # What Frequency.verdicts judges a candidate against, as the Polars join it replaces computed
    # it: rows of a key may repeat in a window (summed), a candidate's key may have no past.
    from plugins.frequency import _own_levels

    past = pl.DataFrame(rows, schema={"key": pl.String(), "window": pl.Int64(), "count": pl.Int64()}, orient="row")
    keys, windows = [key for key, _ in candidates], np.array([window for _, window in candidates], dtype=np.int64)
    judged = pl.DataFrame({"key": keys, "judged": windows, "at": np.arange(len(keys))})
    before = (past.join(judged, on="key")
              .filter((pl.col("window") < pl.col("judged")) & (pl.col("window") >= pl.col("judged") - n))
              .group_by("at").agg(pl.col("count").sum().alias("sum"), pl.col("count").max().alias("max")))
    expected = np.zeros(len(keys))
    expected[before["at"].to_numpy()] = (before["sum"].to_numpy() - before["max"].to_numpy()) / (n - 1)
    assert _own_levels(past, keys, windows, n).tolist() == pytest.approx(expected.tolist())
