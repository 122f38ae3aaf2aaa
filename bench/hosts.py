"""One log file per host over the same days: the layout README's "Files out of order" warns about.

    python bench/hosts.py --out DIR [--lag-minutes 0] [--seed 1]

Writes ``DIR/host-a.log`` and ``DIR/host-b.log``: three days of traffic (about 1M lines in all,
with a daily cycle, 2 % errors), services 0-9 logged by host a and 10-19 by host b, the last lines
about 2.3 hours into the third day. With ``--lag-minutes N``, host b's file ends N minutes before
host a's, as a host that flushes late would leave it. A batch run reads the two files one after
the other, so host b's records older than a detector's horizon come after host a has moved the
watermark on; merged by time (``LC_ALL=C sort -m -k1,1 DIR/host-*.log``) they do not.
"""

from __future__ import annotations

import argparse
import datetime
import math
import random
from pathlib import Path

START = datetime.datetime(2025, 7, 20, tzinfo=datetime.timezone.utc).timestamp()
SPAN = 3 * 86400 - 3600 * 2.3  # ends mid-day, off a window boundary
SERVICES = 20


def write(out: Path, lag_minutes: int, seed: int) -> None:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    end = START + SPAN
    files = {host: open(out / f"host-{host}.log", "w") for host in "ab"}
    try:
        t = START
        while t < end:
            hour = (t - START) / 3600 % 24
            rate = 4 + 3 * math.sin((hour - 6) / 24 * 2 * math.pi)  # lines a second, all services
            t += rng.expovariate(rate)
            service = rng.randrange(SERVICES)
            host = "a" if service < SERVICES // 2 else "b"
            if host == "b" and t > end - lag_minutes * 60:
                continue
            stamp = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            status = "ERROR" if rng.random() < 0.02 else "INFO"
            files[host].write(f"{stamp} {status} Service{service:02d} user{rng.randrange(3000)} Request handled ok\n")
    finally:
        for handle in files.values():
            handle.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for host-a.log and host-b.log")
    parser.add_argument("--lag-minutes", type=int, default=0, help="host b's file ends this much earlier")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    write(args.out, args.lag_minutes, args.seed)


if __name__ == "__main__":
    main()
