"""The report's cost: seconds to render report.html from a run's documents, and its size.

Reads ``summary.json`` and ``anomalies.json`` from an output folder (a run of the shipped rules,
e.g. on ``bench/generate.py --lines 10000000 --days 3``), renders the page ``--repeat`` times and
prints the import time of the renderer (pygal's, once per process), the fastest and the median
render, and the page's size. Budget (issue 16): well under 0.2 s after import, and under 1 MB,
for a 10M-line, three-day run's documents.

    python bench/report.py OUTPUT_DIR [--repeat 10] [--write report.html]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--write", type=Path, help="also write the page here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    started = time.perf_counter()
    from plugins.report import render_report

    imported = time.perf_counter() - started
    summary, anomalies = (json.loads((args.output_dir / f"{name}.json").read_text(encoding="utf-8"))
                          for name in ("summary", "anomalies"))
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        page = render_report(summary, anomalies)
        times.append(time.perf_counter() - started)
    if args.write:
        args.write.write_text(page, encoding="utf-8")
    points = len(summary.get("timeline", {}).get("points", []))
    print(f"{summary['totals']['lines']:,} lines, {points} timeline points, {len(anomalies['anomalies'])} incidents")
    print(f"import {imported:.3f} s; render min {min(times):.3f} s, median {statistics.median(times):.3f} s; "
          f"{len(page.encode()):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
