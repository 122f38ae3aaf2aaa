"""Log lines and batch helpers shared by the detector tests (not a test module itself)."""

from __future__ import annotations

import pickle
import random
from datetime import datetime, timedelta, timezone
from typing import Any

from core import safestate
from core.parse import Batch, Chunk, parse_chunk
from core.rules import Rule

BASE = datetime(2025, 7, 21, tzinfo=timezone.utc)


def at(minute: float, *, offset: str = "Z") -> str:
    """The timestamp ``minute`` minutes after BASE (UTC), to the microsecond when needed."""
    moment = BASE + timedelta(minutes=minute)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{moment.microsecond:06d}" if moment.microsecond else "")
    if offset == "Z":
        return text + "Z"
    sign = 1 if offset[0] == "+" else -1
    shift = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])) * sign
    local = (moment + shift).strftime("%Y-%m-%dT%H:%M:%S")
    return local + offset


def rec(minute: float, status: str = "SUCCESS", service: str = "PaymentService", user: str = "user1",
        message: str | None = None) -> str:
    """One record line; the message is unique per timestamp unless given."""
    return f"{at(minute)} {status} {service} {user} {message or f'op at {minute:.6f}'}"


def background(minutes: range, per_minute: int = 20, fail_every: int = 20,
               services: tuple[str, ...] = ("PaymentService", "NotificationService")) -> list[str]:
    """Steady traffic: ``per_minute`` records a minute over ``services``, one in ``fail_every`` a FAILURE (0: none)."""
    lines = []
    for minute in minutes:
        for i in range(per_minute):
            status = "FAILURE" if fail_every and i % fail_every == 0 else "SUCCESS"
            service = services[i % len(services)]
            lines.append(rec(minute + i / per_minute, status, service, f"user{(minute * 7 + i) % 10}"))
    return lines


def mixed() -> list[str]:
    """Two hours of traffic with one of everything the detectors look for (in time order).

    - minutes 40-49: ``spammer`` sends 320 records (frequency);
    - minutes 70-79: 40 extra failures on top of 10 (error_spike);
    - minutes 100-109: NotificationService is silent (flatline);
    - three PENDING records (unknown_status); an epoch, a future and an unparseable timestamp;
    - one line written twice at minute 30.5, one three times at minute 60.5 (duplicate_event).
    """
    lines = [
        line for line in background(range(120))
        if not (100 <= float(_minute(line)) < 110 and "NotificationService" in line)
    ]
    lines += [rec(40 + i / 32, user="spammer", message=f"request {i}") for i in range(320)]
    lines += [rec(70 + i / 4, "ERROR", user=f"user{i % 10}", message=f"timeout {i}") for i in range(40)]
    lines += [rec(m, "PENDING", "FraudService", "user3") for m in (5, 50, 90)]
    lines += [rec(30.5, message="paid order 1")] * 2 + [rec(60.5, "INFO", user="user2", message="paid order 2")] * 3
    lines.sort(key=_minute)
    lines.insert(200, "1970-01-01T00:00:00Z INFO SettlementService user4 imported")
    lines.insert(400, "2099-01-01T00:00:00Z SUCCESS LedgerService user5 scheduled")
    lines.insert(600, "2025-02-30T00:00:00Z SUCCESS LedgerService user5 scheduled")
    return lines


def _minute(line: str) -> float:
    moment = datetime.fromisoformat(line.split(" ", 1)[0].replace("Z", "+00:00"))
    return (moment - BASE).total_seconds() / 60


def batches(lines: list[str], path: str = "a.txt", sizes: list[int] | None = None) -> list[Batch]:
    """``lines`` as the batches the engine would hand to rules: parsed chunks of ``sizes`` lines."""
    sizes = sizes or [len(lines)]
    found, start = [], 0
    for size in sizes:
        data = "".join(f"{line}\n" for line in lines[start:start + size]).encode()
        found.append(parse_chunk(Chunk(path, data, start + 1, 0, len(data)), 65536, 10)[0])
        start += size
    return found


def random_sizes(total: int, rng: random.Random, pieces: int = 8) -> list[int]:
    cuts = sorted(rng.sample(range(1, total), pieces - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total])]


def evaluate(rule: Rule, parts: list[Batch]) -> list[dict[str, Any]]:
    """Fold batches into one state in order, the way the engine merges chunk partials, and read it out."""
    state = rule.empty()
    for batch in parts:
        partial = rule.empty()
        partial.update(batch)
        state.merge(partial)
    return state.result().value


def scrambled(rule: Rule, parts: list[Batch], rng: random.Random) -> list[dict[str, Any]]:
    """Spread batches over a few partials at random, pickle them (or save them as a checkpoint does), and merge
    them in a random tree."""
    partials = [rule.empty() for _ in range(rng.randint(1, 4))]
    for batch in parts:
        rng.choice(partials).update(batch)
    known = safestate.classes([type(rule)])
    partials = [pickle.loads(pickle.dumps(p)) if rng.random() < 0.5
                else safestate.loads(safestate.dumps(p, known), known) for p in partials]
    while len(partials) > 1:
        rng.shuffle(partials)
        left, right = partials.pop(), partials.pop()
        left.merge(right)
        partials.append(left)
    return partials[0].result().value


def strip_samples(anomalies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in a.items() if k != "samples"} for a in anomalies]


#: Ten-minute windows: a day of them.
DAY_WINDOWS = 144


def daily_cycle(days: int = 3, low: float = 1.0, high: float = 6.0) -> "np.ndarray":
    """Per ten-minute window over ``days``: a smooth daily shape from ``low`` at midnight to ``high`` at noon."""
    import numpy as np

    phase = np.arange(days * DAY_WINDOWS) % DAY_WINDOWS / DAY_WINDOWS
    return low + (high - low) * (1 - np.cos(2 * np.pi * phase)) / 2


def synthetic(rng: Any, counts: Any, *, failures: Any = None, service: str = "PaymentService",
              users: Any = None, message: str = "User login successful", width_minutes: float = 10) -> list[str]:
    """Records of ``service``: ``counts[i]`` of them at uniform times in window ``i`` (``width_minutes`` each
    from BASE), of which ``failures[i]`` are FAILURE; ``users``, when given, names each record's user
    (an array as long as the records), else users ``u0..u49`` at random. Whole-second stamps; unsorted."""
    import numpy as np

    counts = np.asarray(counts, dtype=np.int64)
    window = np.repeat(np.arange(len(counts)), counts)
    seconds = (window * width_minutes * 60 + rng.uniform(0, width_minutes * 60, len(window))).astype(np.int64)
    base = np.datetime64(BASE.replace(tzinfo=None), "s")
    stamps = np.datetime_as_string(base + seconds.astype("timedelta64[s]"), unit="s")
    failed = np.zeros(len(window), dtype=bool)
    if failures is not None:
        failures = np.minimum(np.asarray(failures, dtype=np.int64), counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(len(window)) - starts[window]
        failed = rank < failures[window]
    status = np.where(failed, "FAILURE", "SUCCESS")
    if users is None:
        users = np.char.add("u", rng.integers(0, 50, len(window)).astype(str))
    return [f"{t}Z {s} {service} {u} {message}" for t, s, u in zip(stamps, status, users)]


def in_time_order(*parts: list[str]) -> list[str]:
    """Lines of several ``synthetic`` calls merged in time order (the stamps sort as text)."""
    return sorted(line for part in parts for line in part)
