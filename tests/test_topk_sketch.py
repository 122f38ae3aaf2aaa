"""top_k and count_by under a memory bound: exact while the counts fit, a Misra-Gries summary beyond."""

from __future__ import annotations

import itertools
import logging
import pickle
import random
from collections import Counter
from types import SimpleNamespace

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import budget
from core.counts import BYTES_PER_KEY, MIN_CAPACITY, OVERHEAD, KeyCounts
from core.errors import ConfigError
from core.settings import DEFAULTS, load_settings
from tests.conftest import REPO, compiled_memory
from plugins.counts import CountBy
from plugins.top import TopK

BOUND = (MIN_CAPACITY + 76) * BYTES_PER_KEY + OVERHEAD
MAX_KEYS = KeyCounts.capacity_for(BOUND)  # the distinct users that fit (a few more than the 1,100 asked for)
HOT = {f"hot{i}": 1000 - 100 * i for i in range(5)}  # the true heavy hitters


def batch(users: list[str]) -> SimpleNamespace:
    return SimpleNamespace(frame=pl.DataFrame({"user": users}, schema={"user": pl.String}))


def top(bound: int | None = BOUND, limit: int = 5) -> TopK:
    rule = TopK("top-users", field="user", limit=limit)
    if bound is not None:
        rule.limit_state(bound)
    return rule


def traffic(seed: int, tail: int = 3000) -> list[str]:
    """The heavy hitters plus ``tail`` one-off users, shuffled."""
    users = [user for user, count in HOT.items() for _ in range(count)]
    users += [f"tail{seed}-{i}" for i in range(tail)]
    random.Random(seed).shuffle(users)
    return users


def fed(users: list[str], bound: int | None = BOUND, limit: int = 5) -> TopK:
    rule = top(bound, limit)
    for start in range(0, len(users), 500):
        rule.update(batch(users[start:start + 500]))
    return rule


def assert_within_bound(rule: TopK, truth: Counter) -> None:
    result = rule.result()
    detail = result.detail
    assert detail["approximate"] is True and detail["sketch"] == "misra_gries"
    assert detail["total_weight"] == sum(truth.values())
    assert result.value == list(HOT)  # the true heavy hitters, in their true order
    for user, estimate in detail["counts"].items():  # never under, never over by more than the bound
        assert truth[user] <= estimate <= truth[user] + detail["max_error"]


# --- exact below the bound ---------------------------------------------------------------------


def test_below_the_bound_the_result_is_exact_and_the_same_as_unbounded():
    users = [f"u{i % (MAX_KEYS - 1)}" for i in range(5000)] + ["hot"] * 70  # MAX_KEYS distinct
    bounded, unbounded = fed(users), fed(users, bound=None)
    assert not bounded.counts.approximate
    assert bounded.result() == unbounded.result()
    expected = sorted(Counter(users).items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert bounded.result() == ([user for user, _ in expected], dict(expected))


def test_exact_counts_of_one_key_more_than_the_bound_switch_to_the_sketch():
    at_bound = fed([f"u{i}" for i in range(MAX_KEYS)])
    assert not at_bound.counts.approximate
    at_bound.update(batch(["one-more"]))
    assert at_bound.counts.approximate


# --- approximate above it ----------------------------------------------------------------------


def test_above_the_bound_the_list_is_approximate_with_its_error_bound_and_finds_the_heavy_hitters():
    users = traffic(1)
    rule = fed(users)
    assert rule.counts.approximate
    assert rule.result().detail["capacity"] == MAX_KEYS
    assert_within_bound(rule, Counter(users))


def test_once_approximate_a_state_stays_approximate():
    rule = fed(traffic(1))
    rule.update(batch(["hot0"]))
    assert rule.counts.approximate


def test_the_capacity_follows_the_bound():
    assert MIN_CAPACITY + 76 <= MAX_KEYS < 2 * (MIN_CAPACITY + 76)
    assert KeyCounts.capacity_for(2_000_000 * BYTES_PER_KEY + OVERHEAD) >= 2_000_000
    assert KeyCounts.capacity_for(1) == MIN_CAPACITY  # never smaller than a useful summary


@compiled_memory
def test_a_full_table_stays_within_the_bound_it_was_sized_for():
    bound = 3_000_000
    counts = KeyCounts(KeyCounts.capacity_for(bound))
    counts.add(pl.Series([f"user{i}" for i in range(counts.capacity)]))
    assert not counts.approximate and len(counts) == counts.capacity
    assert counts.nbytes <= bound


def test_keys_of_kilobytes_weigh_against_the_bound_and_the_table_stays_within_it():
    # 300 user names of 60 KB are 18 MB of text: a table sized for a 3 MB share by its number of
    # keys (70,000 short ones) held them all, exact and six times over its share. Their bytes now
    # weigh as keys: the table turns approximate, stays within its share, and still finds the
    # heavy hitters within the error it reports.
    bound = 3_000_000
    users = [user for user, count in HOT.items() for _ in range(count)]
    users += [f"long{i}-" + "x" * 60_000 for i in range(300)]
    random.Random(7).shuffle(users)
    rule = fed(users, bound)
    assert rule.counts.approximate
    assert rule.counts.nbytes <= bound
    assert_within_bound(rule, Counter(users))


def test_a_few_long_keys_that_fit_stay_exact():
    users = [f"long{i}-" + "x" * 600 for i in range(50)] * 3  # 30 KB of keys: well within 3 MB
    rule = fed(users, 3_000_000)
    assert not rule.counts.approximate and rule.result().value == sorted(set(users))[:5]


# --- merges ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kinds", list(itertools.product(["exact", "sketch"], repeat=2)))
def test_merge_of_exact_and_sketched_states_in_either_order(kinds):
    parts = [traffic(seed, tail=3000 if kind == "sketch" else 50) for seed, kind in enumerate(kinds)]
    states = [fed(users) for users in parts]
    assert [s.counts.approximate for s in states] == [kind == "sketch" for kind in kinds]
    into, other = states
    into.merge(other)
    truth = Counter(parts[0] + parts[1])
    if "sketch" in kinds:
        assert_within_bound(into, truth)
    else:  # 110 distinct users in all: the union fits, and stays exact
        assert not into.counts.approximate
        assert into.result() == (list(HOT), {user: truth[user] for user in HOT})


def test_two_exact_states_whose_union_outgrows_the_bound_merge_into_a_sketch():
    left = fed([f"a{i}" for i in range(MAX_KEYS - 10)] + ["hot"] * 9)
    right = fed([f"b{i}" for i in range(MAX_KEYS - 10)] + ["hot"] * 9)
    assert not left.counts.approximate and not right.counts.approximate
    left.merge(right)
    assert left.counts.approximate
    assert left.result().value[0] == "hot"


def test_overlapping_exact_states_whose_union_fits_stay_exact():
    left = fed([f"u{i}" for i in range(800)])
    right = fed([f"u{i}" for i in range(200, 1000)])
    left.merge(right)
    assert not left.counts.approximate
    assert left.result() == fed([f"u{i}" for i in range(800)] + [f"u{i}" for i in range(200, 1000)]).result()


def test_every_merge_order_of_mixed_partials_gives_the_same_mode_and_finds_the_heavy_hitters():
    parts = [traffic(0, tail=30), traffic(1, tail=3000), traffic(2, tail=40), traffic(3, tail=2000)]
    truth = Counter(itertools.chain.from_iterable(parts))
    for order in itertools.permutations(range(len(parts))):
        states = [pickle.loads(pickle.dumps(fed(parts[i]))) for i in order]
        merged = states[0]
        for state in states[1:]:
            merged.merge(state)
        assert_within_bound(merged, truth)


def test_partials_below_the_bound_merged_in_any_tree_give_identical_exact_results():
    rng = random.Random(7)
    users = [f"u{rng.randrange(60)}" for _ in range(3000)]
    expected = fed(users).result()
    for _ in range(20):
        parts = [fed(users[i:i + 250]) for i in range(0, len(users), 250)]
        while len(parts) > 1:
            into, other = rng.sample(range(len(parts)), 2)
            parts[into].merge(parts[other])
            parts.pop(other)
        assert parts[0].result() == expected


# --- pickling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tail", [50, 3000])
def test_pickle_round_trip_keeps_the_state(tail):
    rule = fed(traffic(1, tail=tail))
    copy = pickle.loads(pickle.dumps(rule))
    assert copy.counts.approximate == rule.counts.approximate == (tail > MAX_KEYS)
    assert copy.result() == rule.result()
    copy.update(batch(["hot4"] * 5))
    rule.update(batch(["hot4"] * 5))
    assert copy.result() == rule.result()


def test_the_pickled_state_is_the_tables_bytes_not_code():
    state = fed(traffic(1, tail=50)).counts.__getstate__()
    assert list(state) == ["table"] and isinstance(state["table"], bytes) and state["table"][:4] == b"OMPC"


def test_a_corrupt_table_is_refused_with_a_clear_error():
    data = bytearray(fed(traffic(1, tail=50)).counts.__getstate__()["table"])
    for broken in (data[:-1], data[:20], b"junk" + data[4:], data + b"x"):
        with pytest.raises(ValueError, match="not a serialised Counts table"):
            KeyCounts.__new__(KeyCounts).__setstate__({"table": bytes(broken)})


def test_partials_inherit_the_bound():
    assert top().empty().counts.capacity == MAX_KEYS


# --- count_by ----------------------------------------------------------------------------------


def test_count_by_on_a_high_cardinality_field_reports_only_values_above_the_error_bound():
    users = traffic(1)
    rule = CountBy("users", field="user")
    rule.limit_state(BOUND)
    for start in range(0, len(users), 500):
        rule.update(batch(users[start:start + 500]))
    result = rule.result()
    assert result.detail["approximate"] is True
    assert set(result.value) == set(HOT)
    for user, estimate in result.value.items():
        assert HOT[user] <= estimate <= HOT[user] + result.detail["max_error"]


def test_count_by_below_the_bound_is_exact_with_no_detail():
    rule = CountBy("users", field="user")
    rule.limit_state(BOUND)
    rule.update(batch(["a", "b", "a"]))
    assert rule.result() == ({"a": 2, "b": 1}, None)


# --- the summary's bound, on any input and any split ---------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(0, 400), max_size=3000),
    capacity=st.integers(1, 64),
    cuts=st.lists(st.integers(0, 3000), max_size=6),
    seed=st.integers(0, 1000),
)
def test_any_split_merged_in_any_order_keeps_every_count_within_the_bound_it_reports(values, capacity, cuts, seed):
    keys = [f"k{v % 37}" if v % 3 else f"rare{v}" for v in values]  # some heavy keys, many rare ones
    truth = Counter(keys)
    bounds = sorted({0, len(keys), *[c % (len(keys) + 1) for c in cuts]})
    parts = []
    for lo, hi in zip(bounds, bounds[1:]):
        part = KeyCounts(capacity)
        part.add(pl.Series(keys[lo:hi], dtype=pl.String))
        parts.append(part)
    random.Random(seed).shuffle(parts)
    merged = KeyCounts(capacity)
    for part in parts:
        merged.merge(part)
    # Exact or not depends on the distinct keys alone, never on the split or the order.
    assert merged.approximate == (len(truth) > capacity)
    assert merged.total == len(keys) and len(merged) <= capacity
    kept = dict(merged.top(capacity))
    for key, count in truth.items():
        if key in kept:
            assert count <= kept[key] <= count + merged.max_error
        else:
            assert count <= merged.max_error
    if not merged.approximate:
        assert kept == dict(truth) and merged.max_error == 0
    for key, estimate in merged.certain():  # certain: above every key the summary dropped
        assert truth[key] > 0 and estimate - merged.max_error > max(
            [n for k, n in truth.items() if k not in kept] or [0]) - merged.max_error


# --- the budget --------------------------------------------------------------------------------


def test_input_that_fits_the_cap_is_left_alone():
    # The shipped defaults (2 cores) fit the default cap as they are.
    chunk, queue = DEFAULTS["chunk_bytes"], DEFAULTS["queue_size"]
    assert budget.fit_input(500, 2, chunk, queue, 65536) == budget.InputPlan(chunk, queue)
    assert budget.fit_input(500, 2, 4 << 20, 4, 65536) == budget.InputPlan(4 << 20, 4)


def test_input_beyond_the_cap_shrinks_queue_then_chunks():
    plan = budget.fit_input(500, 16, 4 << 20, 4, 65536)
    assert plan.queue_size == 4 and plan.chunk_bytes < 4 << 20
    assert budget.input_bytes(16, plan.chunk_bytes, plan.queue_size) <= budget.input_cap(500)
    assert plan.changes == (f"chunk_bytes {4 << 20} -> {plan.chunk_bytes}",)
    plan = budget.fit_input(300, 2, 4 << 20, 64, 65536)
    assert plan.queue_size == 2


def test_rule_states_share_their_part_of_the_cap_by_weight_whatever_the_input():
    shares = budget.rule_state_bytes(500, [1, 6, 6, 1])
    pool = (500 - budget.BASE_MB) * budget.MIB * budget.STATE_SHARE
    assert shares == [int(pool * w / 14) for w in (1, 6, 6, 1)]
    assert budget.input_cap(500) + sum(shares) < (500 - budget.BASE_MB) * budget.MIB


def test_the_default_rules_count_two_million_users_exactly_under_the_default_cap(pm):
    from core.plugins import rule_types
    from core.ruleset import load_rules

    rules = load_rules(load_settings(REPO / "settings.yaml"), rule_types(pm))
    shares = dict(zip([r.name for r in rules], budget.rule_state_bytes(500, [r.state_weight() for r in rules])))
    assert KeyCounts.capacity_for(shares["top-users"]) >= 2_000_000
    assert KeyCounts.capacity_for(shares["top-services"]) >= 2_000_000


def test_settings_shrink_chunks_to_fit_the_cap_and_say_so(tmp_path, caplog):
    path = tmp_path / "settings.yaml"
    path.write_text("workers: 32\nlimits: {memory_mb: 500}\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        settings = load_settings(path)
    assert settings.chunk_bytes < DEFAULTS["chunk_bytes"]
    assert budget.input_bytes(32, settings.chunk_bytes, settings.queue_size) <= budget.input_cap(500)
    assert f"limits.memory_mb 500: chunk_bytes {DEFAULTS['chunk_bytes']} ->" in caplog.text


def test_a_cap_too_small_for_the_workers_is_a_config_error(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text("workers: 64\nlimits: {memory_mb: 200}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "limits.memory_mb: expected at least" in str(caught.value)
    assert "got 200; hint: raise limits.memory_mb" in str(caught.value)


@settings(max_examples=60, deadline=None)
@given(distinct=st.integers(1, 7000), long_every=st.integers(1, 5), seed=st.integers(0, 2**16), parts=st.integers(1, 4))
def test_an_unbounded_table_counts_every_key_exactly_as_it_grows_past_the_small_tables_loop(
    distinct, long_every, seed, parts
):
    # Small tables (in cache) add keys one by one and larger ones fetch ahead; short keys (up to 12
    # bytes) are read from their views in place and longer ones hashed from their bytes. Whatever
    # the path, every count is the true one, and the same keys added in other cuts give the same bytes.
    rng = random.Random(seed)
    keys = [f"u{i}" if i % long_every else f"long-user-name-{i}-é" for i in range(distinct)]
    values = [rng.choice(keys) for _ in range(3 * distinct)] + keys
    rng.shuffle(values)
    counted, cut = KeyCounts(KeyCounts.capacity_for(1 << 30)), KeyCounts(KeyCounts.capacity_for(1 << 30))
    counted.add(pl.Series(values, dtype=pl.String))
    step = -(-len(values) // parts)
    for start in range(0, len(values), step):
        cut.add(pl.Series(values[start:start + step], dtype=pl.String))
    assert not counted.approximate
    assert dict(counted.top(len(keys))) == Counter(values)
    assert sorted(cut.top(len(keys))) == sorted(counted.top(len(keys)))
