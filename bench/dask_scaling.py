"""Wall time and peak RSS of the driver and of each worker: worker threads against 1 and 2 Dask worker processes.

    python bench/dask_scaling.py --data /tmp/big/data [--rounds 3] [--processes 1 2]

Each run is ``runpipeline --reset`` on the shipped settings (every default rule) over the data folder,
in a subprocess; ``--executor dask`` starts a LocalCluster of worker processes (children of the
driver), whose memory is read from ``/proc/PID/status`` (``VmHWM``, the kernel's high-water mark)
every 50 ms until the run ends. Rounds alternate the set-ups, and the table shows each one's median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent


def high_water_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def is_worker(process: psutil.Process) -> bool:
    """A Dask worker process (spawned by multiprocessing), not its resource tracker."""
    try:
        cmdline = " ".join(process.cmdline())
    except psutil.Error:
        return False
    return "multiprocessing" in cmdline and "resource_tracker" not in cmdline


def run(data: Path, out: Path, executor: list[str]) -> dict[str, object]:
    argv = [sys.executable, "-m", "core.cli", "--settings", str(REPO / "settings.yaml"), "--data-dir", str(data),
            "--output-dir", str(out), "--reset", "-q", *executor]
    started = time.perf_counter()
    driver = subprocess.Popen(argv, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    parent = psutil.Process(driver.pid)
    peaks: dict[int, float] = {}
    cpu: dict[int, float] = {}  # user + system seconds, as last seen
    workers: dict[int, psutil.Process] = {}
    while driver.poll() is None:
        for child in parent.children(recursive=True):
            if child.pid not in workers and is_worker(child):
                workers[child.pid] = child
        for pid, process in ((driver.pid, parent), *workers.items()):
            mark = high_water_mb(pid)
            if mark is not None:
                peaks[pid] = mark
            try:
                times = process.cpu_times()
                cpu[pid] = times.user + times.system
            except psutil.Error:
                pass
        time.sleep(0.05)
    wall = time.perf_counter() - started
    if driver.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {driver.returncode}")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return {
        "wall": wall,
        "elapsed": summary["run"]["elapsed_seconds"],
        "lines": summary["totals"]["lines"],
        "driver_mb": summary["run"]["peak_rss_mb"],
        "cpu": sum(cpu.values()),  # driver and workers: a machine shared with other work slows the wall time more
        "workers_mb": sorted((peaks[pid] for pid in workers if pid in peaks), reverse=True),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="data folder (e.g. one bench/generate.py file)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="Dask worker processes to try")
    args = parser.parse_args(argv)
    setups = {"threads (2)": ["--executor", "threads"]}
    for n in args.processes:
        setups[f"dask, {n} process{'es' if n > 1 else ''}"] = ["--executor", "dask", "--settings-workers", str(n)]
    results: dict[str, list[dict[str, object]]] = {name: [] for name in setups}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, executor in setups.items():
                settings = _settings(Path(tmp), executor)
                result = run(args.data, Path(tmp) / "out", settings)
                results[name].append(result)
                print(f"round {round_ + 1} {name}: {result}", flush=True)
    print(f"\n{'set-up':<22} {'wall s':>7} {'elapsed s':>9} {'lines/s':>10} {'CPU s':>6} {'driver MB':>9}  workers MB")
    for name, rounds in results.items():
        wall = statistics.median(r["wall"] for r in rounds)
        elapsed = statistics.median(r["elapsed"] for r in rounds)
        driver = statistics.median(r["driver_mb"] for r in rounds)
        count = len(rounds[0]["workers_mb"])
        per_worker = [statistics.median(r["workers_mb"][i] for r in rounds) for i in range(count)]
        lines = rounds[0]["lines"]
        cpu = statistics.median(r["cpu"] for r in rounds)
        print(f"{name:<22} {wall:>7.2f} {elapsed:>9.2f} {lines / elapsed:>10,.0f} {cpu:>6.1f} {driver:>9.0f}  "
              + (", ".join(f"{mb:.0f}" for mb in per_worker) or "-"))


def _settings(tmp: Path, executor: list[str]) -> list[str]:
    """The executor's options; the number of local worker processes goes through a settings file of its own."""
    if "--settings-workers" not in executor:
        return executor
    workers = executor[executor.index("--settings-workers") + 1]
    settings = yaml.safe_load((REPO / "settings.yaml").read_text(encoding="utf-8"))
    settings.update(rule_files=[f"{REPO}/rules/*.yaml"], executor={"type": "dask", "workers": int(workers)})
    path = tmp / f"settings-{workers}.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return ["--settings", str(path)]


if __name__ == "__main__":
    main()
