"""Watch-mode latency: seconds from a file's rename into data/ until output/summary.json reflects it.

Starts ``runpipeline --watch`` on a temp workspace (a copy of settings.yaml and rules/), drops
small files one by one (each written under a hidden temp name in data/, then renamed), and for
each measures the time from the rename until summary.json counts its lines, polling every 5 ms.
Prints p50, p95 and max. Then renames a 1 GB file into data/ and prints the time until it is
fully reflected. Targets (issue 3): p95 under 1 s; the 1 GB file under 60 s. Last, a few more
small files show the latency once the state holds the big file.

    python bench/latency.py [--files 100] [--lines-per-file 200] [--big-bytes 1e9] [--big PATH]
                            [--after 10] [--keep]

The log files come from bench/generate.py (generated before the watcher starts, so that the
generator does not compete with it for the CPU); ``--big`` reuses an existing file instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POLL_SECONDS = 0.005


def generate(lines: int, out: Path, seed: int) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "generate.py"), "--lines", str(lines), "--out", str(out),
         "--seed", str(seed), "--manifest", str(out.with_suffix(".manifest.json"))],
        check=True, stdout=subprocess.DEVNULL,
    )


def count_newlines(path: Path) -> int:
    total = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            total += block.count(b"\n")
    return total


def workspace() -> Path:
    root = Path(tempfile.mkdtemp(prefix="omp-latency-"))
    shutil.copy(REPO / "settings.yaml", root / "settings.yaml")
    shutil.copytree(REPO / "rules", root / "rules")
    (root / "data").mkdir()
    return root


def small_files(root: Path, files: int, lines_per_file: int) -> list[bytes]:
    source = root / "small-source.log"
    generate(files * lines_per_file, source, seed=1)
    lines = [line + b"\n" for line in source.read_bytes().split(b"\n")[:-1]]
    return [b"".join(lines[i * lines_per_file:(i + 1) * lines_per_file]) for i in range(files)]


def big_file(root: Path, target_bytes: float, reuse: str | None, sample: list[bytes]) -> Path:
    """A file of about ``target_bytes`` outside data/, on the same file system (so renaming is atomic)."""
    path = root / "big.log"
    if reuse:
        try:
            os.link(reuse, path)
        except OSError:
            shutil.copyfile(reuse, path)
        return path
    average = sum(map(len, sample)) / sum(chunk.count(b"\n") for chunk in sample)
    generate(math.ceil(target_bytes / average), path, seed=2)
    return path


class Summary:
    """Reads output/summary.json only when it changed."""

    def __init__(self, root: Path) -> None:
        self.path = root / "output" / "summary.json"
        self.log = root / "watch.log"
        self._seen: tuple[int, int] | None = None
        self.lines = -1

    def poll(self) -> int:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return self.lines
        if (info.st_mtime_ns, info.st_size) != self._seen:
            self._seen = (info.st_mtime_ns, info.st_size)
            try:
                self.lines = json.loads(self.path.read_bytes())["totals"]["lines"]
            except (FileNotFoundError, ValueError):  # replaced between stat and read: next poll
                self._seen = None
        return self.lines

    def wait_for(self, lines: int, watcher: subprocess.Popen[bytes], timeout: float) -> float:
        """Seconds until summary.json counts ``lines``, polling every 5 ms."""
        started = time.perf_counter()
        while self.poll() < lines:
            if watcher.poll() is not None:
                tail = self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:]
                raise SystemExit(f"the watcher exited with {watcher.returncode}:\n" + "\n".join(tail))
            if time.perf_counter() - started > timeout:
                raise SystemExit(f"summary.json did not reach {lines} lines within {timeout} s")
            time.sleep(POLL_SECONDS)
        return time.perf_counter() - started


def drop(data: Path, name: str, content: bytes) -> float:
    """Write under a hidden temp name, rename into place; the moment of the rename."""
    temp = data / f".{name}.tmp"
    temp.write_bytes(content)
    os.rename(temp, data / name)
    return time.perf_counter()


def drop_one_by_one(root: Path, contents: list[bytes], summary: Summary, watcher: subprocess.Popen[bytes],
                    expected: int, prefix: str = "small") -> tuple[list[float], int]:
    """Drop each file, wait until summary.json counts it; the delays, and the lines counted in all."""
    delays = []
    for index, content in enumerate(contents):
        expected += content.count(b"\n")
        renamed = drop(root / "data", f"{prefix}-{index:03d}.log", content)
        summary.wait_for(expected, watcher, timeout=60)
        delays.append(time.perf_counter() - renamed)
    return delays, expected


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100, help="small files to drop one by one")
    parser.add_argument("--lines-per-file", type=int, default=200)
    parser.add_argument("--big-bytes", type=float, default=1e9, help="size of the big file (0: skip it)")
    parser.add_argument("--big", metavar="PATH", help="use this log file as the big file instead of generating one")
    parser.add_argument("--after", type=int, default=10, help="small files dropped after the big one (at least 1)")
    parser.add_argument("--keep", action="store_true", help="keep the temp workspace")
    args = parser.parse_args()

    root = workspace()
    print(f"workspace {root}; {os.cpu_count()} CPUs", flush=True)
    smalls = small_files(root, args.files, args.lines_per_file)
    big = big_file(root, args.big_bytes, args.big, smalls) if args.big_bytes or args.big else None
    big_lines = count_newlines(big) if big else 0
    log = open(root / "watch.log", "wb")
    watcher = subprocess.Popen([sys.executable, "-m", "core.cli", "--watch"], cwd=root,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=log, stderr=subprocess.STDOUT)
    try:
        summary = Summary(root)
        summary.wait_for(0, watcher, timeout=60)  # the catch-up commit of an empty folder
        delays, expected = drop_one_by_one(root, smalls, summary, watcher, expected=0)
        print(f"{len(delays)} small files ({args.lines_per_file} lines each), rename -> summary.json: "
              f"p50 {percentile(delays, 0.5):.3f} s, p95 {percentile(delays, 0.95):.3f} s, "
              f"max {max(delays):.3f} s (target: p95 < 1 s)", flush=True)
        if big:
            size = big.stat().st_size
            os.rename(big, root / "data" / "big.log")
            renamed = time.perf_counter()
            expected += big_lines
            summary.wait_for(expected, watcher, timeout=900)
            seconds = time.perf_counter() - renamed
            print(f"big file ({size / 1e9:.2f} GB, {big_lines:,} lines), rename -> summary.json: "
                  f"{seconds:.1f} s, {size / 1e6 / seconds:.0f} MB/s (target: 1 GB < 60 s)", flush=True)
            # Each commit rewrites the whole checkpoint: how small files fare once the state is big.
            after, _ = drop_one_by_one(root, smalls[:args.after], summary, watcher, expected, prefix="after")
            state_mb = (root / "output" / ".state" / "checkpoint.omp").stat().st_size / 1e6
            print(f"{len(after)} small files after it (checkpoint {state_mb:.0f} MB): "
                  f"p50 {percentile(after, 0.5):.3f} s, max {max(after):.3f} s", flush=True)
        watcher.send_signal(signal.SIGTERM)
        code = watcher.wait(timeout=30)
        final = json.loads((root / "output" / "summary.json").read_text(encoding="utf-8"))
        print(f"watcher stopped on SIGTERM with exit code {code}; peak RSS {final['run']['peak_rss_mb']:.0f} MB")
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        log.close()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
