"""Closed windows folded into runs give the incidents their flags give, and stay within the rule's share."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import safestate
from plugins import incidents, runs
from tests.conftest import Workspace, without_run
from tests.test_degrade import counted, shipped

GAP = 2


@st.composite
def flag_lists(draw):
    """Flags of a few keys and kinds, several to a window, with random scores, counts, samples and times."""
    flags = []
    for at in range(draw(st.integers(1, 30))):
        window = draw(st.integers(0, 60))
        score = draw(st.one_of(st.none(), st.floats(0.1, 50, allow_nan=False), st.sampled_from([0.1, 0.2, 10.0])))
        start = f"2025-07-21T{window // 6:02d}:{window % 6 * 10:02d}:{at % 60:02d}Z"
        seen = draw(st.one_of(st.none(), st.just(start)))
        flags.append({
            "key": draw(st.sampled_from(["a", "b"])), "kind": draw(st.sampled_from(["", "spike"])), "_w": window,
            "score": score, "window_start": start, "window_end": f"{start}.{at}", "observed": at,
            "expected": 1.0, "count": draw(st.integers(0, 9)), "first_seen": seen,
            "last_seen": draw(st.one_of(st.none(), st.just(start))),
            "samples": draw(st.lists(st.sampled_from([f"f:{i}" for i in range(14)]), max_size=5, unique=True)),
        })
    return flags


@settings(max_examples=150, deadline=None)
@given(flags=flag_lists(), cuts=st.lists(st.integers(0, 62), max_size=6), extra=st.lists(st.integers(0, 39)),
       newest=st.integers(0, 70))
def test_runs_folded_seal_by_seal_give_the_incidents_of_every_flag_joined_at_once(flags, cuts, extra, newest):
    # Seals close windows below each horizon, in their order; flags the rule keeps outside its
    # tables (``extra``) and those of open windows are joined with the runs when results are read.
    kept = [f for i, f in enumerate(flags) if i not in set(extra)]
    outside = [f for i, f in enumerate(flags) if i in set(extra)]
    horizons = sorted(set(cuts))
    folded: runs.Runs = {}
    closed: list[dict] = []
    low = None
    for horizon in horizons:
        batch = [f for f in kept if (low is None or f["_w"] >= low) and f["_w"] < horizon]
        runs.extend(folded, batch, GAP)
        closed += batch
        low = horizon
    still_open = [f for f in kept if low is None or f["_w"] >= low]
    every = closed + still_open + outside
    want = [incidents.incident(run, newest, GAP, {}) for run in incidents.join(every, GAP)] if every else []
    got = [run.incident(newest, GAP, {}) for run in runs.joined(folded, still_open + outside, GAP)]
    assert got == want
    # Saved and read back in the safe format, the runs give the same.
    loaded = safestate.loads(safestate.dumps(folded, safestate.classes()), safestate.classes())
    assert [r.incident(newest, GAP, {}) for r in runs.joined(loaded, still_open + outside, GAP)] == want


@settings(max_examples=100, deadline=None)
@given(flags=flag_lists(), cut=st.integers(0, 62))
def test_runs_of_two_states_that_closed_different_windows_merge_into_the_runs_of_one(flags, cut):
    first, second, whole = {}, {}, {}
    early = [f for f in flags if f["_w"] < cut]
    late = [f for f in flags if f["_w"] >= cut]
    runs.extend(first, early, GAP)
    runs.extend(second, late, GAP)
    runs.extend(whole, early, GAP)
    runs.extend(whole, late, GAP)
    for a, b in ((first, second), (second, first)):
        merged = {key: runs.merged(a.get(key, []), b.get(key, []), GAP) for key in set(a) | set(b)}
        assert {k: [r.incident(99, GAP, {}) for r in v] for k, v in merged.items()} == {
            k: [r.incident(99, GAP, {}) for r in v] for k, v in whole.items()}


@settings(max_examples=100, deadline=None)
@given(a=flag_lists(), b=flag_lists())
def test_runs_of_states_that_closed_the_same_windows_merge_the_same_in_either_order(a, b):
    mine, theirs = {}, {}
    runs.extend(mine, a, GAP)
    runs.extend(theirs, b, GAP)

    def merge(x, y):
        return {key: [r.incident(99, GAP, {}) for r in runs.merged(x.get(key, []), y.get(key, []), GAP)]
                for key in sorted(set(x) | set(y))}

    assert merge(mine, theirs) == merge(theirs, mine)
    assert merge(mine, mine) == {key: [r.incident(99, GAP, {}) for r in found] for key, found in sorted(mine.items())}


def duplicated_log(dense_minutes: int, sparse_runs: int, seed: int = 5) -> str:
    """A dense stretch with 30 % of lines written twice, then a line a minute with a few repeats every 15 minutes.

    Every message carries an order id, so every repeat is a duplicate event; the sparse repeats are
    apart by more than duplicate-events' ``max_gap``: each is an incident of its own.
    """
    rng = random.Random(seed)
    lines, order = [], 0

    def line(minute: int, second: int) -> str:
        nonlocal order
        order += 1
        hours, rest = divmod(minute, 60)
        user = f"user-{rng.randrange(500):03d}-" + "x" * 52
        return (f"2025-07-{20 + hours // 24:02d}T{hours % 24:02d}:{rest:02d}:{second:02d}Z INFO PaymentService "
                f"{user} Payment ord-{order:07d} processed amount {rng.randrange(100, 99999) / 100:.2f}")

    for minute in range(dense_minutes):
        block = []
        for _ in range(150):
            text = line(minute, rng.randrange(60))
            block += [text, text] if rng.random() < 0.3 else [text]
        rng.shuffle(block)
        lines += block
    for run in range(sparse_runs):
        start = dense_minutes + 30 + run * 15
        for minute in range(start, start + 15):
            lines.append(line(minute, 0))
        for _ in range(1 + run % 4):  # 1 to 4 repeats: scores 10 to 20, ranked
            text = line(start + 7, rng.randrange(1, 60))
            lines += [text, text]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def duplicated() -> str:
    return duplicated_log(dense_minutes=120, sparse_runs=200)


def test_closed_duplicates_stay_within_the_share_and_the_incidents_listed_are_those_of_an_unbounded_run(
        tmp_path, duplicated):
    summary, anomalies = counted(shipped(tmp_path / "small"), duplicated.encode(), "limits: {memory_mb: 200}\n")
    reference, whole = counted(shipped(tmp_path / "large"), duplicated.encode(), "limits: {memory_mb: 4000}\n")
    state = summary["run"]["rule_state"]["duplicate-events"]
    assert state["peak_bytes"] <= state["limit_bytes"]
    degraded = summary["rules"]["duplicate-events"]["degraded"]
    assert degraded == ("more finished incidents than its share of limits.memory_mb holds: the 179 highest ranked "
                        "kept, 12 others dropped (12 of them listable, counted as found and suppressed)")
    assert reference["rules"]["duplicate-events"]["degraded"] is None
    # The dense stretch is one incident of every repeat, the sparse ones one each: the 20 listed are
    # the highest ranked, which were kept; found and suppressed count the dropped ones too.
    listed = [a for a in anomalies["anomalies"] if a["rule"] == "duplicate-events"]
    assert listed == [a for a in whole["anomalies"] if a["rule"] == "duplicate-events"]
    assert listed[0]["windows"] > 1000
    assert summary["rules"]["duplicate-events"] == {**reference["rules"]["duplicate-events"], "degraded": degraded}


@pytest.mark.parametrize("split", ["chunk_bytes: 262144\nworkers: 1\n",
                                   "chunk_bytes: 524288\nworkers: 2\nqueue_size: 3\n"])
def test_which_closed_runs_are_kept_does_not_depend_on_how_the_input_was_split(tmp_path, duplicated, split):
    results = []
    for name, settings_text in (("a", "chunk_bytes: 2097152\nworkers: 2\n"), ("b", split)):
        results.append(counted(shipped(tmp_path / name), duplicated.encode(),
                               f"limits: {{memory_mb: 200}}\n{settings_text}"))
    (first, first_anomalies), (second, second_anomalies) = results
    assert first["rules"]["duplicate-events"]["degraded"] is not None
    assert without_run(first) == without_run(second)
    assert json.dumps(first_anomalies["anomalies"]) == json.dumps(second_anomalies["anomalies"])


def test_a_state_saved_with_closed_runs_gives_the_same_incidents_when_resumed(workspace: Workspace, duplicated):
    half = duplicated.splitlines(keepends=True)
    workspace.write("a.log", "".join(half[: len(half) // 2]))
    workspace.configure("limits: {memory_mb: 200}\n")
    assert workspace.run("--reset").returncode == 0
    workspace.write("b.log", "".join(half[len(half) // 2:]))
    assert workspace.run().returncode == 0
    resumed = json.loads((workspace.output / "anomalies.json").read_text(encoding="utf-8"))
    degraded = workspace.summary()["rules"]["duplicate-events"]["degraded"]
    assert workspace.run("--reset").returncode == 0
    once = json.loads((workspace.output / "anomalies.json").read_text(encoding="utf-8"))
    assert degraded is not None and degraded == workspace.summary()["rules"]["duplicate-events"]["degraded"]
    assert [a for a in resumed["anomalies"] if a["rule"] == "duplicate-events"] == [
        a for a in once["anomalies"] if a["rule"] == "duplicate-events"]
