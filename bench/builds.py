"""Time two builds of the engine in alternation on the same file: did a change cost speed?

    python bench/builds.py --old /path/to/old/checkout --new . --data DIR --rounds 5

Each round runs the old build, then the new one (the order flips every round), each twice: with
the Tier 1-2 rules, and with every rule the old build enables by default, so both run the same
rules. Each run starts from nothing (``--reset``) in its own output folder, as a separate process
with the checkout on ``PYTHONPATH`` (its compiled modules must be built or copied in). Printed:
the median and the range of the whole process's wall time and of ``run.elapsed_seconds``, and
the peak RSS, per build and rule set.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

TIER_1_2 = ["payment-statuses", "top-services", "top-users", "peak-hours"]


def prepare(tree: Path, rules: list[str], folder: Path) -> Path:
    """A settings file of ``tree``'s own, enabling ``rules``, with ``tree``'s rule files beside it."""
    folder.mkdir(parents=True)
    shutil.copytree(tree / "rules", folder / "rules")
    settings = yaml.safe_load((tree / "settings.yaml").read_text(encoding="utf-8"))
    settings["rules"] = rules
    (folder / "settings.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    return folder / "settings.yaml"


def run(tree: Path, settings: Path, data: Path, output: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "core.cli", "--settings", str(settings), "--data-dir", str(data),
                    "--output-dir", str(output), "--reset", "-q"], cwd=tree, env=env, check=True)
    wall = time.perf_counter() - started
    summary = json.loads((output / "summary.json").read_text(encoding="utf-8"))["run"]
    return {"wall": wall, "elapsed": summary["elapsed_seconds"], "rss": summary["peak_rss_mb"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--new", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="a data folder both builds read")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    everything = yaml.safe_load((args.old / "settings.yaml").read_text(encoding="utf-8"))["rules"]
    sets = {"tier 1-2": TIER_1_2, "all rules": everything}
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="omp-builds-") as scratch:
        root = Path(scratch)
        settings = {(build, name): prepare(tree, rules, root / build / name.replace(" ", "-"))
                    for build, tree in (("old", args.old.resolve()), ("new", args.new.resolve()))
                    for name, rules in sets.items()}
        for round_ in range(args.rounds):
            order = ("old", "new") if round_ % 2 == 0 else ("new", "old")
            for build in order:
                tree = (args.old if build == "old" else args.new).resolve()
                for name in sets:
                    out = root / "out" / f"{build}-{name.replace(' ', '-')}-{round_}"
                    measured = run(tree, settings[build, name], args.data.resolve(), out)
                    shutil.rmtree(out)
                    results.setdefault((build, name), []).append(measured)
                    print(f"round {round_ + 1} {build:3} {name:9}: {measured['wall']:.2f} s wall, "
                          f"{measured['elapsed']:.2f} s run, {measured['rss']:.0f} MB", flush=True)
    print(f"\n{'rules':9} {'build':5} {'wall median (range)':>24} {'run median (range)':>24} {'peak RSS':>9}")
    for name in sets:
        for build in ("old", "new"):
            rows = results[build, name]
            wall = [r["wall"] for r in rows]
            elapsed = [r["elapsed"] for r in rows]
            print(f"{name:9} {build:5} {statistics.median(wall):>8.2f} s ({min(wall):.2f}-{max(wall):.2f})"
                  f" {statistics.median(elapsed):>8.2f} s ({min(elapsed):.2f}-{max(elapsed):.2f})"
                  f" {max(r['rss'] for r in rows):>6.0f} MB")
        old = statistics.median(r["wall"] for r in results["old", name])
        new = statistics.median(r["wall"] for r in results["new", name])
        print(f"{name:9} new/old wall median: {new / old:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
