"""Generated background traffic for rule tests: days of plausible, steady log lines from a seed.

Seasonal detectors judge a window against the same time on earlier days, so a rule test that
plants a spike needs history around it. This traffic has a daily cycle (busiest at 14:00 UTC),
a few services and users of unequal weight, and a steady share of failures; the same seed gives
the same lines on every machine.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from itertools import accumulate

SERVICES = ("PaymentService", "AuthenticationService", "CheckoutService", "SessionService", "NotificationService",
            "RefundService", "WalletService", "OrderService")
STATUSES = (("SUCCESS", 0.74), ("INFO", 0.16), ("WARN", 0.06), ("FAILURE", 0.03), ("ERROR", 0.01))
USERS = 2_000
#: The busiest hour of the day (UTC), and how far the quietest falls below the mean (0.6: to 40 %).
PEAK_HOUR, SWING = 14, 0.6


def background_lines(start: datetime, days: float, per_day: int, seed: int,
                     quiet: tuple[str, datetime, datetime] | None = None) -> Iterator[str]:
    """``days`` of lines from ``start``, about ``per_day`` a day, in time order.

    With ``quiet`` (a service, from, until), that service logs nothing in that stretch: an outage.
    """
    rng = random.Random(seed)
    services = list(accumulate(1 / (rank + 1) for rank in range(len(SERVICES))))
    users = list(accumulate(1 / (rank + 1) for rank in range(USERS)))
    statuses = list(accumulate(weight for _, weight in STATUSES))
    per_minute = per_day / 1440
    start = start.astimezone(timezone.utc).replace(second=0, microsecond=0)
    for minute in range(round(days * 1440)):
        moment = start + timedelta(minutes=minute)
        hour = moment.hour + moment.minute / 60
        rate = per_minute * (1 + SWING * math.cos(2 * math.pi * (hour - PEAK_HOUR) / 24))
        for second in sorted(rng.randrange(60) for _ in range(_poisson(rng, rate))):
            status = STATUSES[_pick(rng, statuses)][0]
            service = SERVICES[_pick(rng, services)]
            user = f"user{10_000 + _pick(rng, users)}"
            at = moment + timedelta(seconds=second)
            request = rng.randrange(10**6)
            if quiet is not None and service == quiet[0] and quiet[1] <= at < quiet[2]:
                continue
            yield f"{at:%Y-%m-%dT%H:%M:%SZ} {status} {service} {user} background request {request:06d}"


def _pick(rng: random.Random, cumulative: list[float]) -> int:
    """An index drawn with the weights whose running sums are ``cumulative``."""
    target = rng.random() * cumulative[-1]
    low, high = 0, len(cumulative) - 1
    while low < high:
        middle = (low + high) // 2
        if cumulative[middle] < target:
            low = middle + 1
        else:
            high = middle
    return low


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method for small means, a rounded normal for large ones)."""
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def parse_start(text: str) -> datetime:
    """An ISO 8601 instant or date (UTC when no zone is given)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def burst_lines(template: str, times: int, every_seconds: float) -> Iterator[str]:
    """``times`` copies of ``template``, the first at its own timestamp, each ``every_seconds`` later;
    ``{i}`` in it counts 0, 1, 2, ..."""
    stamp, _, rest = template.partition(" ")
    first = parse_start(stamp)
    for i in range(times):
        yield f"{first + timedelta(seconds=i * every_seconds):%Y-%m-%dT%H:%M:%SZ} {rest.replace('{i}', str(i))}"
