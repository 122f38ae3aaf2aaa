"""Watch-mode soak: does the time from rename to summary.json grow with the number of files seen?

Starts ``runpipeline --watch`` on a temp workspace (a copy of settings.yaml and rules/), then drops
``--files`` files of ``--lines-per-file`` lines one at a time, each as soon as summary.json counts
the one before (each written under a hidden temp name in data/, then renamed into place). The
latency of a file is the time from its rename until summary.json counts its lines, polling every
5 ms. Every ``--every`` files it prints the median latency of the last 100, the watcher's RSS,
the sizes of summary.json, anomalies.json, the checkpoint and the whole state folder, and the
bytes the watcher wrote per file since the last report (``/proc/<pid>/io``'s ``wchar``: outputs
and state). Target (issue 14, item 18): the median latency of the last 100 files is within 1.5x
of the first 100.

    python bench/soak.py [--files 2000] [--lines-per-file 2000] [--minutes-per-file 20] [--every 250]
                         [--keep]

The lines come from bench/generate.py, generated before the watcher starts into one source file
outside data/ (so that the generator does not compete with the watcher for the CPU); each drop
copies its slice of that file. The generated span grows with the files, ``--minutes-per-file`` of
traffic each (60 by default: 100 files are four days), so that the traffic's daily cycle is alike
in the first and in the last 100 files. Before the first drop, the watcher catches up on
``--warmup-days`` of the same traffic in one file (28 by default: the seasonal detectors keep
four weeks of history), so that the rule states have their full size from the first drop on: what
the soak measures is what grows with the files seen, not the detectors filling their history.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import REPO, Summary, workspace  # noqa: E402  (bench/ holds scripts, not a package)

WINDOW = 100
TARGET = 1.5


def generate(lines: int, days: float, out: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "generate.py"), "--lines", str(lines), "--days", f"{days:.6g}",
         "--out", str(out), "--seed", "3", "--manifest", str(out.with_suffix(".manifest.json"))],
        check=True, stdout=subprocess.DEVNULL,
    )


def slices(source: Path, lines_per_file: int) -> list[tuple[int, int]]:
    """(start, end) byte offsets of each run of ``lines_per_file`` lines in ``source``."""
    bounds, start, count, at = [], 0, 0, 0
    with open(source, "rb") as handle:
        for line in handle:
            at += len(line)
            count += 1
            if count == lines_per_file:
                bounds.append((start, at))
                start, count = at, 0
    return bounds


def process_figures(pid: int) -> tuple[float, int]:
    """The watcher's resident memory (MiB) and the bytes it has written so far (``wchar``)."""
    rss = 0.0
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    with open(f"/proc/{pid}/io", encoding="ascii") as io:
        written = next(int(line.split()[1]) for line in io if line.startswith("wchar:"))
    return rss, written


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class Soak:
    """The drops, their latencies, and a report line every ``every`` files."""

    def __init__(self, root: Path, source: Path, bounds: list[tuple[int, int]],
                 watcher: subprocess.Popen[bytes], every: int) -> None:
        self.root, self.source, self.bounds, self.watcher, self.every = root, source, bounds, watcher, every
        self.summary = Summary(root)
        self.delays: list[float] = []
        self._written = process_figures(watcher.pid)[1]

    def run(self, expected: int) -> None:
        """Drop the files one at a time; ``expected`` is what summary.json counts before the first."""
        with open(self.source, "rb") as handle:
            for index, (start, end) in enumerate(self.bounds):
                content = os.pread(handle.fileno(), end - start, start)
                expected += content.count(b"\n")
                temp, final = self.root / "data" / f".soak-{index:06d}.log.tmp", self.root / "data" / f"soak-{index:06d}.log"
                temp.write_bytes(content)
                os.rename(temp, final)
                renamed = time.perf_counter()
                self.summary.wait_for(expected, self.watcher, timeout=120)
                self.delays.append(time.perf_counter() - renamed)
                if len(self.delays) % self.every == 0 or len(self.delays) == len(self.bounds):
                    self.report()

    def report(self) -> None:
        rss, written = process_figures(self.watcher.pid)
        since = self.every if len(self.delays) % self.every == 0 else len(self.delays) % self.every
        per_file = (written - self._written) / since
        self._written = written
        output = self.root / "output"
        print(f"{len(self.delays):6d} files: median of last {WINDOW} {median(self.delays[-WINDOW:]):.3f} s, "
              f"RSS {rss:.0f} MB, summary.json {(output / 'summary.json').stat().st_size / 1e3:.0f} KB, "
              f"anomalies.json {(output / 'anomalies.json').stat().st_size / 1e3:.0f} KB, "
              f"checkpoint {(output / '.state' / 'checkpoint.omp').stat().st_size / 1e6:.2f} MB "
              f"(state folder {folder_bytes(output / '.state') / 1e6:.2f} MB), written {per_file / 1e3:.0f} KB/file",
              flush=True)

    def verdict(self) -> bool:
        first, last = median(self.delays[:WINDOW]), median(self.delays[-WINDOW:])
        met = last <= TARGET * first
        print(f"median latency: first {WINDOW} files {first:.3f} s, last {WINDOW} files {last:.3f} s "
              f"({last / first:.2f}x); target: last within {TARGET}x of first: {'MET' if met else 'NOT MET'}")
        return met


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000, help="files to drop one at a time")
    parser.add_argument("--lines-per-file", type=int, default=2000)
    parser.add_argument("--minutes-per-file", type=float, default=60, help="minutes of traffic in each file")
    parser.add_argument("--warmup-days", type=float, default=28, help="days of traffic read at the start (0: none)")
    parser.add_argument("--every", type=int, default=250, help="report every this many files")
    parser.add_argument("--keep", action="store_true", help="keep the temp workspace")
    args = parser.parse_args()

    root = workspace()
    print(f"workspace {root}; {os.cpu_count()} CPUs; code from {REPO}", flush=True)
    source = root / "soak-source.log"
    warmup_files = round(args.warmup_days * 1440 / args.minutes_per_file)
    generate((warmup_files + args.files) * args.lines_per_file,
             (warmup_files + args.files) * args.minutes_per_file / 1440, source)
    bounds = slices(source, args.lines_per_file)
    warmup_bytes = bounds[warmup_files - 1][1] if warmup_files else 0
    with open(source, "rb") as handle, open(root / "data" / "warmup.log", "wb") as out:
        out.write(handle.read(warmup_bytes))
    bounds = bounds[warmup_files : warmup_files + args.files]
    print(f"generated a warm-up file of {warmup_files * args.lines_per_file:,} lines ({args.warmup_days:g} days), "
          f"then {len(bounds)} files of {args.lines_per_file} lines ({args.minutes_per_file:g} minutes, "
          f"{(bounds[-1][1] - bounds[0][0]) / len(bounds) / 1e3:.0f} KB each)", flush=True)
    log = open(root / "watch.log", "wb")
    watcher = subprocess.Popen([sys.executable, "-m", "core.cli", "--watch"], cwd=root,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=log, stderr=subprocess.STDOUT)
    try:
        soak = Soak(root, source, bounds, watcher, args.every)
        warmup_lines = warmup_files * args.lines_per_file
        soak.summary.wait_for(warmup_lines, watcher, timeout=600)  # the catch-up commit
        started = time.perf_counter()
        soak.run(warmup_lines)
        print(f"{len(soak.delays)} files in {time.perf_counter() - started:.0f} s", flush=True)
        met = soak.verdict()
        watcher.send_signal(signal.SIGTERM)
        print(f"watcher stopped on SIGTERM with exit code {watcher.wait(timeout=60)}")
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        log.close()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
