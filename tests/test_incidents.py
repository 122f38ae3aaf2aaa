"""Incidents as users read them: ranking and cuts, realert, sample texts and their redaction, the noise model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.cli import main
from plugins import incidents
from plugins.detection import Detector
from plugins.seasonal import deviance_z
from tests.conftest import Workspace

CARD = "4111111111111111"  # Luhn-valid


def _flag(key: str, window: int, score: float, kind: str = "spike") -> dict:
    start = f"2025-07-21T{window // 6:02d}:{window % 6 * 10:02d}:00Z"
    return {"key": key, "kind": kind, "_w": window, "score": score, "window_start": start, "window_end": start,
            "observed": 10, "expected": 1.0, "count": 10, "samples": [f"a.log:{window}"], "first_seen": start}


def test_flagged_windows_within_the_gap_are_one_incident_and_a_longer_gap_starts_another():
    flags = [_flag("svc", w, 5.0) for w in (1, 2, 5, 20)] + [_flag("other", 2, 9.0)]
    runs = incidents.join(flags, gap=2)
    assert [[f["_w"] for f in run] for run in runs] == [[2], [1, 2, 5], [20]]
    made = incidents.incident(runs[1], newest=30, gap=2, subject={"service": "svc"})
    assert made["windows"] == 3
    assert made["score"] == pytest.approx(15 / math.sqrt(3), abs=1e-3)  # Stouffer
    assert made["status"] == "resolved"
    assert incidents.incident(runs[2], newest=21, gap=2, subject={})["status"] == "open"


def test_severity_levels_follow_the_score():
    assert [incidents.level(s) for s in (0, 9.9, 10, 19.9, 20, 39.9, 40)] == [
        "low", "low", "medium", "medium", "high", "high", "critical"]


class _Probe(Detector):
    type_name = "probe"


def _incident(key: str, start: str, end: str, score: float) -> dict:
    return {"key": key, "window_start": start, "window_end": end, "score": score,
            "severity": incidents.level(score), "samples": []}


def test_publish_ranks_cuts_and_counts_what_it_suppressed():
    found = [_incident(f"k{i}", f"2025-07-21T0{i}:00:00Z", f"2025-07-21T0{i}:10:00Z", s)
             for i, s in enumerate((5, 45, 12, 25, 3))]
    result = _Probe("probe", max_incidents=2, min_severity="medium").publish(found)
    assert [i["key"] for i in result.value] == ["k1", "k3"]
    assert result.detail["incidents"] == {"found": 5, "listed": 2, "suppressed": 3}


def test_realert_hides_an_incident_of_the_same_key_within_the_period():
    found = [_incident("svc", "2025-07-21T00:00:00Z", "2025-07-21T00:30:00Z", 30),
             _incident("svc", "2025-07-21T01:00:00Z", "2025-07-21T01:10:00Z", 30),
             _incident("svc", "2025-07-21T05:00:00Z", "2025-07-21T05:10:00Z", 30),
             _incident("other", "2025-07-21T01:00:00Z", "2025-07-21T01:10:00Z", 30)]
    result = _Probe("probe", realert="1h").publish(found)
    assert sorted(i["window_start"] for i in result.value if i["key"] == "svc") == [
        "2025-07-21T00:00:00Z", "2025-07-21T05:00:00Z"]
    assert result.detail["incidents"]["suppressed"] == 1


@settings(max_examples=200, deadline=None)
@given(st.floats(0.5, 200), st.integers(0, 400))
def test_the_deviance_z_orders_counts_as_the_exact_poisson_tail_does(mean, count):
    """z is monotone in the count and its upper tail is close to the exact Poisson tail's order."""
    z = float(deviance_z(np.array([count]), np.array([mean]))[0])
    bigger = float(deviance_z(np.array([count + 1]), np.array([mean]))[0])
    assert bigger > z
    if count > mean + 3 * math.sqrt(mean) + 3:  # far in the upper tail: the normal tail of z is the Poisson tail's
        exact = _poisson_upper_log10(count, mean)
        assert abs(exact - _normal_upper_log10(z)) < 0.25 * abs(exact) + 1


def _normal_upper_log10(z: float) -> float:
    """log10 P(Z >= z) for a standard normal; the asymptotic form where erfc underflows."""
    if z < 30:
        return math.log10(0.5 * math.erfc(z / math.sqrt(2)))
    return (-z * z / 2 - math.log(z * math.sqrt(2 * math.pi))) / math.log(10)


def _poisson_upper_log10(k: int, mean: float) -> float:
    """log10 P(X >= k) for X ~ Poisson(mean), summed in log space."""
    terms = [i * math.log(mean) - mean - math.lgamma(i + 1) for i in range(k, k + 400)]
    top = max(terms)
    return (top + math.log(sum(math.exp(t - top) for t in terms))) / math.log(10)


def test_a_card_number_in_a_sampled_line_never_reaches_an_output(workspace: Workspace):
    """A duplicated payment line carrying a card number: the incident shows the line, masked."""
    line = f"2025-07-21T10:00:00Z SUCCESS PaymentService u1 Payment ord-123456 paid with card {CARD}"
    other = "\n".join(f"2025-07-21T10:{m:02d}:00Z INFO Svc u{m} hello" for m in range(1, 50))
    workspace.write("pay.log", f"{line}\n{line}\n{other}\nno timestamp here {CARD}\n")
    assert main(["--settings", str(workspace.settings), "--quiet"]) == 0
    found = json.loads((workspace.output / "anomalies.json").read_text(encoding="utf-8"))
    duplicate = [i for i in found["anomalies"] if i["type"] == "duplicate_event"]
    assert len(duplicate) == 1
    texts = [s["text"] for s in duplicate[0]["samples"]]
    assert [s["location"] for s in duplicate[0]["samples"]] == ["pay.log:1", "pay.log:2"]
    assert all(t is not None and "[card ****1111]" in t and "ord-123456" in t for t in texts)
    assert duplicate[0]["subject"] == {  # the duplicated record's fields, in the log's own terms
        "ts": "2025-07-21T10:00:00Z", "status": "SUCCESS", "service": "PaymentService", "user": "u1",
        "message": "Payment ord-123456 paid with card [card ****1111]"}
    for path in workspace.output.rglob("*"):
        if path.is_file():
            assert CARD.encode() not in path.read_bytes(), path


def test_sample_texts_are_kept_in_the_state_when_the_file_is_gone(workspace: Workspace):
    line = "2025-07-21T10:00:00Z SUCCESS PaymentService u1 Payment ord-654321 captured"
    workspace.write("a.log", f"{line}\n{line}\n")
    assert main(["--settings", str(workspace.settings), "--quiet"]) == 0
    (workspace.data / "a.log").rename(workspace.data / "a.log.gone")  # no longer read: not *.log
    workspace.write("b.log", "2025-07-21T11:00:00Z INFO Svc u2 later\n")
    assert main(["--settings", str(workspace.settings), "--quiet"]) == 0
    found = json.loads((workspace.output / "anomalies.json").read_text(encoding="utf-8"))
    duplicate = [i for i in found["anomalies"] if i["type"] == "duplicate_event"]
    assert [s["text"] for s in duplicate[0]["samples"]] == [line, line]
