"""Many small files: seconds to count a folder of thousands of them, in a batch run and in a watcher catching up.

Target (issue 14, item 17): 5,000 files of 10 lines each in under 15 s, both ways. Each shape
cuts a log from bench/generate.py into consecutive files (so file names follow event time) and
times, as a user sees them, the whole ``runpipeline`` process of a batch run, and a
``runpipeline --watch`` started on the full folder until summary.json counts every line:

- ``uniform``: 5,000 files of 10 lines, the generator's default traffic;
- ``heavy``: 5,000 files of 10 lines, heavy-tailed users (Zipf-like, a 2 % uniform tail), dirty lines;
- ``mixed``: 10,000 files of 1 to 19 lines, with a 50,000-line file every 1,000 files.

    python bench/small_files.py [--shapes uniform,heavy,mixed] [--seeds 1,2] [--keep]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 15.0
SHAPES = {
    # name: (files, lines per file (lo, hi), generator options, a big file every N files (0: none))
    "uniform": (5_000, (10, 10), ["--no-bad"], 0),
    "heavy": (5_000, (10, 10), ["--seen-users", "20000", "--user-tail", "0.02"], 0),
    "mixed": (10_000, (1, 19), [], 1_000),
}
BIG_LINES = 50_000


def make_folder(root: Path, shape: str, seed: int) -> int:
    """Write the shape's files into ``root/data``; returns the lines written."""
    files, (lo, hi), options, big_every = SHAPES[shape]
    rng = random.Random(seed)
    sizes = [rng.randint(lo, hi) for _ in range(files)]
    bigs = files // big_every if big_every else 0
    total = sum(sizes) + bigs * BIG_LINES
    log = root / "all.log"
    subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), "--lines", str(total), "--out", str(log),
                    "--seed", str(seed), "--days", "2", "--long-every", "0", "--no-anomalies", *options],
                   check=True, stdout=subprocess.DEVNULL)
    lines = log.read_bytes().split(b"\n")[:-1]
    data = root / "data"
    data.mkdir()
    start = 0
    for n, size in enumerate(sizes):
        if big_every and n % big_every == big_every - 1:
            size = BIG_LINES + size
        (data / f"part-{n:05d}.log").write_bytes(b"\n".join(lines[start:start + size]) + b"\n")
        start += size
    log.unlink()
    return start


def workspace(root: Path) -> None:
    shutil.copy(REPO / "settings.yaml", root / "settings.yaml")
    shutil.copytree(REPO / "rules", root / "rules")


def batch_seconds(root: Path) -> float:
    shutil.rmtree(root / "output", ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "core.cli", "-q"], cwd=root, check=False,
                   env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def watch_seconds(root: Path, lines: int) -> float:
    """From starting a watcher on the full folder until summary.json counts every line."""
    shutil.rmtree(root / "output", ignore_errors=True)
    summary = root / "output" / "summary.json"
    started = time.perf_counter()
    watcher = subprocess.Popen([sys.executable, "-m", "core.cli", "--watch", "-q"], cwd=root,
                               env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - started < 600:
            try:
                if json.loads(summary.read_text(encoding="utf-8"))["totals"]["lines"] >= lines:
                    return time.perf_counter() - started
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        return float("inf")
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--keep", action="store_true", help="keep the temp folders")
    args = parser.parse_args(argv)
    met = True
    print(f"{'shape':8} {'seed':>4} {'files':>6} {'lines':>8} {'batch s':>8} {'watch s':>8}  target < {TARGET_SECONDS:.0f} s")
    for shape in args.shapes.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            root = Path(tempfile.mkdtemp(prefix=f"omp-small-{shape}-"))
            try:
                workspace(root)
                lines = make_folder(root, shape, seed)
                batch, watch = batch_seconds(root), watch_seconds(root, lines)
                ok = batch < TARGET_SECONDS and watch < TARGET_SECONDS
                met &= ok
                print(f"{shape:8} {seed:>4} {SHAPES[shape][0]:>6} {lines:>8,} {batch:>8.2f} {watch:>8.2f}  "
                      f"{'MET' if ok else 'NOT MET'}", flush=True)
            finally:
                if not args.keep:
                    shutil.rmtree(root, ignore_errors=True)
    print("every shape within target:", "MET" if met else "NOT MET")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
