"""How fast can the driver merge? The committer against partial states arriving as 64 workers would send them.

    python bench/committer_sim.py --file /tmp/big/data/gen.log [--workers 64] [--chunks 600]

1. Reads ``--sample`` chunks of ``chunk_bytes`` spread over the file, runs the chunk work on each
   (all default rules, one thread) and pickles the outcomes, as a worker sends them: the per-core
   rate is measured here, on this machine, as it is now.
2. Feeds the real ``core.committer.Committer`` ``--chunks`` outcomes, each unpickled on arrival (the
   driver's cost in ``DaskExecutor``) and merged in order with its ledger advance and seals, at the
   rate ``--workers`` workers produce them (``workers / seconds per chunk``), and then flat out.
   Outcomes are the sample's in rotation: states grow with their keys up to what the sample holds.

It prints the driver's merge rate, the rate the workers would produce, and the number of workers at
which the driver saturates (merge rate x seconds per chunk per core).
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import time
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("POLARS_MAX_THREADS", "1")  # one core's work, as one worker process of one thread

from core import budget  # noqa: E402
from core.checkpoint import Checkpoint  # noqa: E402
from core.committer import Committer, Entry, FileRun  # noqa: E402
from core.guard import PluginHooks  # noqa: E402
from core.ledger import Ledger  # noqa: E402
from core.parse import RECORD_COLUMNS, Chunk  # noqa: E402
from core.plugins import get_plugin_manager, rule_types  # noqa: E402
from core.redact import Redactor  # noqa: E402
from core.ruleset import load_rules  # noqa: E402
from core.settings import load_settings  # noqa: E402
from core.state import RunState  # noqa: E402
from core.stats import FileStats  # noqa: E402
from core.work import WorkSpec, chunk_work  # noqa: E402


def sample_chunks(path: Path, chunk_bytes: int, count: int) -> list[tuple[int, bytes]]:
    """``count`` chunks of whole lines spread evenly over the file: (offset, bytes)."""
    size = path.stat().st_size
    chunks = []
    with open(path, "rb") as handle:
        for i in range(count):
            handle.seek(i * max(1, (size - chunk_bytes) // max(1, count - 1)))
            block = handle.read(chunk_bytes + 65536)
            start = block.index(b"\n") + 1 if handle.tell() > len(block) else 0
            end = block.rindex(b"\n", 0, start + chunk_bytes) + 1
            chunks.append((handle.tell() - len(block) + start, block[start:end]))
    return chunks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, required=True, help="a log file, e.g. from bench/generate.py")
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--chunks", type=int, default=600, help="outcomes merged per phase")
    parser.add_argument("--sample", type=int, default=16, help="distinct chunks worked on to make the outcomes")
    args = parser.parse_args(argv)

    settings = replace(load_settings(REPO / "settings.yaml"), data_dir=args.file.parent,
                       output_dir=Path("/nonexistent"))
    pm = get_plugin_manager(settings.plugins)
    rules = load_rules(settings, rule_types(pm))
    redactor = Redactor.from_settings(settings)
    for rule in rules:
        rule.use_redactor(redactor)
    columns = frozenset(c for rule in rules for c in rule.columns or RECORD_COLUMNS)
    spec = WorkSpec(tuple(rules), frozenset(), columns, settings.max_line_bytes, settings.malformed_samples,
                    redactor, time.time_ns() // 1000, settings.stray_us)

    blobs, seconds, lines = [], [], []
    for offset, data in sample_chunks(args.file, settings.chunk_bytes, args.sample):
        started = time.perf_counter()
        outcome = chunk_work(spec, [(Chunk(args.file.name, data, 1, offset, offset + len(data)), True)])
        seconds.append(time.perf_counter() - started)
        lines.append(outcome.stats[0].lines)
        blobs.append(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
    per_chunk = statistics.median(seconds)
    lines_per_chunk = statistics.mean(lines)
    print(f"chunk work: {len(blobs)} chunks of {settings.chunk_bytes >> 20} MiB, {lines_per_chunk:,.0f} lines each, "
          f"median {per_chunk * 1000:.0f} ms on one core = {lines_per_chunk / per_chunk:,.0f} lines/s per core; "
          f"outcome pickled: median {statistics.median(map(len, blobs)) / 1024:,.0f} KiB")
    sizes = {name: len(pickle.dumps(rule, protocol=pickle.HIGHEST_PROTOCOL)) // 1024
             for name, rule in pickle.loads(blobs[0]).partial.rules.items()}
    print("pickled partial state per rule (KiB): " + ", ".join(f"{n} {k:,}" for n, k in sorted(
        sizes.items(), key=lambda item: -item[1])))
    pickle.loads(blobs[0])
    started = time.perf_counter()
    for blob in blobs:
        pickle.loads(blob)
    print(f"unpickling an outcome: {(time.perf_counter() - started) / len(blobs) * 1000:.1f} ms")
    arrival = args.workers / per_chunk
    print(f"{args.workers} workers would send {arrival:,.0f} outcomes/s = {arrival * lines_per_chunk / 1e6:,.1f}M "
          "lines/s")

    merge(settings, rules, args.file, blobs, len(blobs), None)  # warm-up: first calls, first allocations
    for rule in rules:  # from here on: the driver's merges and seals, not the chunk work's
        timed(type(rule))
    for label, rate in ((f"paced at {args.workers} workers", arrival), ("flat out", None)):
        merged, elapsed, lag = merge(settings, rules, args.file, blobs, args.chunks, rate)
        print(f"{label}: merged {merged} outcomes in {elapsed:.2f} s = {merged / elapsed:,.1f} outcomes/s "
              f"= {merged * lines_per_chunk / elapsed / 1e6:,.2f}M lines/s; behind the workers by {lag:.2f} s at "
              "the end")
    print("driver time per outcome, by rule (ms): " + ", ".join(
        f"{name} {seconds * 1000 / (2 * args.chunks):.1f}" for name, seconds in sorted(
            SPENT.items(), key=lambda item: -item[1])))
    rate = merged / elapsed
    print(f"the driver saturates at {rate * per_chunk:,.1f} workers of this machine's speed "
          f"({rate * lines_per_chunk / 1e6:,.2f}M lines/s, {rate * lines_per_chunk * 3600 / 1e9:,.1f}G lines an hour)")


#: Seconds the driver spent in each rule's merge and seal (both phases).
SPENT: dict[str, float] = {}


def timed(cls: type) -> None:
    """Count the time of ``merge`` and ``seal`` of a rule class, per rule (once per class)."""
    for method in ("merge", "seal"):
        original = getattr(cls, method)
        if getattr(original, "timed", False):
            continue

        def wrapper(self, *args, __original=original, **kwargs):
            started = time.perf_counter()
            try:
                return __original(self, *args, **kwargs)
            finally:
                SPENT[self.name] = SPENT.get(self.name, 0.0) + time.perf_counter() - started

        wrapper.timed = True
        setattr(cls, method, wrapper)


def merge(settings, rules, path: Path, blobs: list[bytes], count: int, rate: float | None) -> tuple[int, float, float]:
    """Merge ``count`` outcomes through the committer, each due at ``i / rate`` s; returns (merged, seconds, lag)."""
    checkpoint = Checkpoint(RunState.empty(rules), Ledger())
    committer = Committer(settings, PluginHooks(get_plugin_manager(settings.plugins)), 8,
                          budget.HeapTrimmer.for_cap(settings.memory_mb))
    committer.begin(checkpoint, frozenset())
    work = checkpoint.ledger.plan(path.name, path)
    run = FileRun(work, FileStats(path.name, settings.malformed_samples), time.perf_counter())
    size, chunk = path.stat().st_size, settings.chunk_bytes
    started = time.perf_counter()
    lag = 0.0
    for i in range(count):
        due = started + (i / rate if rate else 0.0)
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
        lag = max(0.0, time.perf_counter() - due)
        committer.acquire_slot()
        outcome = pickle.loads(blobs[i % len(blobs)])  # what DaskExecutor's future hands over
        start = (i * chunk) % max(chunk, size - chunk)
        part = Chunk(path.name, b"", 1 + i * 10_000, start, start + chunk)
        future: Future = Future()
        future.set_result(outcome)
        committer.enqueue(Entry([(run, part)], future))
        committer.drain()
    committer.finish()
    return count, time.perf_counter() - started, lag


if __name__ == "__main__":
    main()
