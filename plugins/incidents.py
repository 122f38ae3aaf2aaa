"""Incidents: the flagged windows of one rule, key and kind joined into one thing a person can act on.

A detector flags windows; consecutive flagged windows of the same key and kind (at most ``gap``
unflagged windows between two of them) are one incident. The incident is placed at its *peak*,
its most surprising window, and scored by the combined surprise of its windows (Stouffer's
``sum(z) / sqrt(n)``), so a long, steady deviation outranks a single noisy window. It is listed
only once that score reaches the rule's ``min_score``. Its id is ``rule:key@start``: the start of
its first window, which does not move as the incident grows forward.

An incident is *open* until the newest event time seen has passed its last window by more than
``gap`` windows, then *resolved*; judged by event time, never the wall clock, so historical
files do not leave incidents open.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

SEVERITIES = ("low", "medium", "high", "critical")
#: Samples an incident shows: its peak's first, then its other windows', in window order.
SHOWN_SAMPLES = 5
#: Severity levels by score (combined z): at least this score for each level.
LEVELS = (("critical", 40.0), ("high", 20.0), ("medium", 10.0), ("low", 0.0))


def level(score: float) -> str:
    """The severity level of a score."""
    return next(name for name, least in LEVELS if score >= least)


def rank(incident: dict[str, Any]) -> tuple[int, float, str]:
    """Sort key: most severe first, then highest score, then id-like text for a stable order."""
    return (-SEVERITIES.index(incident["severity"]), -(incident.get("score") or 0.0),
            f"{incident['key']}@{incident['window_start']}")


def join(flags: list[dict[str, Any]], gap: int) -> list[list[dict[str, Any]]]:
    """Flagged windows grouped into runs of one key and kind, at most ``gap`` windows apart.

    Each flag carries ``_w``, its window index.
    """
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for flag in flags:
        by_key.setdefault((flag["key"], flag.get("kind", "")), []).append(flag)
    runs: list[list[dict[str, Any]]] = []
    for _, found in sorted(by_key.items()):
        found.sort(key=lambda f: f["_w"])
        run = [found[0]]
        for flag in found[1:]:
            if flag["_w"] - run[-1]["_w"] <= gap + 1:
                run.append(flag)
            else:
                runs.append(run)
                run = [flag]
        runs.append(run)
    return runs


def combined(scores: list[float]) -> float:
    """Stouffer's combined z of the windows' scores.

    Summed exactly (``math.fsum``): the same however the scores were grouped, so that a run folded
    seal by seal (``plugins.runs``, an exact sum) scores as its flags joined at once do.
    """
    return math.fsum(scores) / math.sqrt(len(scores)) if scores else 0.0


def incident(run: list[dict[str, Any]], newest: int | None, gap: int, subject: dict[str, Any]) -> dict[str, Any]:
    """One incident from a run of flagged windows (see the module docstring)."""
    peak = max(run, key=lambda f: (f.get("score") or 0.0, -f["_w"]))
    score = round(combined([f.get("score") or 0.0 for f in run]), 3)
    samples: list[str] = []
    for flag in [peak, *run]:
        samples += [s for s in flag["samples"] if s not in samples]
    firsts = [f["first_seen"] for f in run if f.get("first_seen")]
    lasts = [f.get("last_seen") or f.get("first_seen") for f in run if f.get("last_seen") or f.get("first_seen")]
    return made(run[0]["key"], run[0].get("kind", ""), subject, score,
                resolved=newest is not None and newest > run[-1]["_w"] + gap,
                span=(run[0]["window_start"], run[-1]["window_end"]), windows=len(run), peak=peak,
                count=sum(int(f["count"]) for f in run), samples=samples,
                seen=(min(firsts) if firsts else None, max(lasts) if lasts else None))


def made(key: str, kind: str, subject: dict[str, Any], score: float, *, resolved: bool,
         span: tuple[str | None, str | None], windows: int, peak: dict[str, Any], count: int,
         samples: list[str], seen: tuple[str | None, str | None]) -> dict[str, Any]:
    """An incident's fields, from what its run of flags sums up to (``incident``, ``plugins.runs.Run``)."""
    return {
        "key": key,
        "kind": kind,
        "subject": subject,
        "severity": level(score),
        "score": score,
        "status": "resolved" if resolved else "open",
        "window_start": span[0],
        "window_end": span[1],
        "windows": windows,
        "peak": {
            "window_start": peak["window_start"], "window_end": peak["window_end"],
            "observed": peak["observed"], "expected": peak.get("expected"), "score": peak.get("score"),
        },
        "observed": peak["observed"],
        "expected": peak.get("expected"),
        "count": count,
        "samples": samples[:SHOWN_SAMPLES],
        "first_seen": seen[0],
        "last_seen": seen[1],
        "detail": peak.get("detail") or {},
    }


def single(anomaly: dict[str, Any], score: float) -> dict[str, Any]:
    """An anomaly of a rule without windows (or one that is its own incident), in the incident form."""
    found = {**anomaly, "kind": anomaly.get("kind", ""), "subject": anomaly.get("subject", {}),
             "score": round(score, 3), "status": anomaly.get("status", "open"), "windows": anomaly.get("windows", 1)}
    found.setdefault("expected", None)
    found["peak"] = {"window_start": found["window_start"], "window_end": found["window_end"],
                     "observed": found["observed"], "expected": found["expected"], "score": found["score"]}
    found.setdefault("last_seen", found.get("first_seen"))
    return found


def realert_suppressed(incidents: list[dict[str, Any]], realert_us: int | None) -> set[int]:
    """Indexes of incidents that start within ``realert_us`` after the end of an earlier one of the same key."""
    if not realert_us:
        return set()
    ends: dict[str, str] = {}
    hidden = set()
    order = sorted(range(len(incidents)), key=lambda i: incidents[i]["window_start"] or "")
    for i in order:
        found = incidents[i]
        previous = ends.get(found["key"])
        if previous is not None and _us(found["window_start"]) - _us(previous) < realert_us:
            hidden.add(i)
            continue
        ends[found["key"]] = found["window_end"] or found["window_start"]
    return hidden


def _us(text: str | None) -> int:
    """An anomalies.json instant (``...Z``) in microseconds since the epoch."""
    if not text:
        return 0
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment - EPOCH) // timedelta(microseconds=1)
