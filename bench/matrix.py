"""The --matrix and --flatness runs of bench/compare.py: the engine against mawk on every shape of traffic.

Each cell is a generated file, cached under bench/.cache/<generator and its options>/ with
reference.py's counts for it. --matrix times mawk, the Tier 1-2 rules and all default rules on every
cell, round after round (the order rotated each round), checks the Tier 1-2 results against
reference.py's and prints one table. --flatness runs all default rules on a cell at a tenth, once and
three times its size and prints how far peak RSS moves.
"""

import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import compare


class Cell(NamedTuple):
    """One shape of traffic: the generator, its lines over days of event time, and its own options."""

    title: str
    generator: str  # bench/<generator>.py
    lines: int
    days: float
    options: tuple = ()
    seen_users: int = 0  # distinct users the file should hold (generate.py --seen-users), scaled with the lines


CELLS = {
    "a": Cell("default traffic", "generate", 10_000_000, 3),
    "b": Cell("heavy-tailed users, planted", "traffic", 10_000_000, 3, ("--profile", "heavy", "--plant")),
    "c": Cell("2M distinct users", "generate", 10_000_000, 3, seen_users=2_000_000),
    # 20M of 30M lines from distinct users: only a large share of one-off users gets there.
    "d": Cell("20M distinct users (sketch)", "generate", 30_000_000, 9, ("--user-tail", "0.6"), 20_000_000),
    "e": Cell("dense: 6 hours", "generate", 10_000_000, 0.25),
    "f": Cell("long messages", "generate", 10_000_000, 3, ("--message-bytes", "246")),  # ~300 bytes a line
    "g": Cell("heavy-tailed users, no anomaly", "traffic", 10_000_000, 3, ("--profile", "heavy")),
}
FLATNESS_CELLS = "a,b"
FLATNESS_SIZES = (0.1, 1, 3)  # times a cell's lines and span: 1M, 10M and 30M lines for (a) and (b)
FLATNESS_TARGET = 0.15  # peak RSS may move at most this much (max / min - 1) across the sizes
RSS_TARGET_MB = 400
WALL_TARGETS = {"tier12": 0.5, "default": 1.0}  # at most this many times mawk's median wall time
OUTPUT_SHARE_TARGET = 0.05  # building, checking and writing the outputs: under this share of the all-rules run
SHORT = {"awk": "mawk", "tier12": "T1-2", "default": "all"}


@dataclass
class Trial:
    """One cell in a run: its file, reference.py's counts, the commands timed and what they took."""

    key: str
    cell: Cell
    path: Path
    reference: Path  # reference.py's output, read only once every run is timed (see reference_output)
    tmp: Path
    commands: dict = field(default_factory=dict)  # run name -> argv
    names: dict = field(default_factory=dict)  # "awk", "tier12", "default" -> run name
    times: dict = field(default_factory=dict)  # run name -> [(wall s, peak RSS MB)]
    shares: list = field(default_factory=list)  # output_seconds / elapsed_seconds of each all-rules run

    def wall(self, key):
        return statistics.median(w for w, _ in self.times[self.names[key]])

    def rss(self, key):
        return max(r for _, r in self.times[self.names[key]])


# ---- cells and their files


def scaled(cell, factor):
    """The cell with its lines, span and distinct users multiplied by factor (its density stays)."""
    return cell._replace(lines=max(1, round(cell.lines * factor)), days=float(f"{cell.days * factor:.6g}"),
                         seen_users=round(cell.seen_users * factor))


def generator_argv(cell, seed):
    """The generator's options for a cell, without --out and --manifest."""
    argv = ["--lines", str(cell.lines), "--days", f"{cell.days:g}", "--seed", str(seed), *cell.options]
    return argv + (["--seen-users", str(cell.seen_users)] if cell.seen_users else [])


def folder_name(cell, seed):
    """The cache folder of a cell's file, e.g. traffic-lines10000000-days3-seed42-profileheavy-plant."""
    parts = [cell.generator]
    for token in generator_argv(cell, seed):
        if token.startswith("--"):
            parts.append(token[2:])
        else:
            parts[-1] += token
    return "-".join(parts)


def niced(argv):
    """A command run at lower priority: generating and counting are not timed, the machine may be."""
    return ["nice", "-n", "10", *argv]


def cell_file(cell, seed, cache_dir):
    """Generate the cell's file once, in a folder named after its parameters; return its path."""
    folder = cache_dir / folder_name(cell, seed)
    path = folder / "data" / "input.log"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(".log.part")  # an excluded name: never read as data
        print(f"generating {cell.lines:,} lines into {path} ...", flush=True)
        start = time.perf_counter()
        script = compare.REPO / "bench" / f"{cell.generator}.py"
        subprocess.run(niced([compare.PYTHON, str(script), *generator_argv(cell, seed), "--out", str(part),
                              "--manifest", str(folder / "manifest.json")]), check=True, stdout=subprocess.DEVNULL)
        os.replace(part, path)
        print(f"  generated in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def reference_output(path):
    """reference.py's output for a file, computed once and kept beside it (under reference.py's hash).

    Returns the JSON file's path. The timed runs come first: a child's peak RSS counts what its
    parent held when it forked, and the counts of 20M users take gigabytes.
    """
    script = compare.REPO / "bench" / "reference.py"
    saved = path.parent.parent / f"reference-{hashlib.sha256(script.read_bytes()).hexdigest()[:12]}.json"
    if not saved.exists():
        print(f"reference.py over {path} ...", flush=True)
        start = time.perf_counter()
        part = saved.with_suffix(".part")
        with open(part, "wb") as out:
            subprocess.run(niced([compare.PYTHON, str(script), str(path)]), check=True, stdout=out)
        os.replace(part, saved)
        print(f"  reference.py took {time.perf_counter() - start:.0f} s", flush=True)
    return saved


def chosen_cells(text):
    """The cells named in --cells, in the order given."""
    keys = [key.strip() for key in text.split(",") if key.strip()]
    unknown = [key for key in keys if key not in CELLS]
    if unknown or not keys:
        sys.exit(f"--cells: expected letters from {', '.join(CELLS)}, found {text!r}")
    return keys


# ---- runs


def prepare(keys, args, tmp):
    """Generate (or reuse) every cell's file and reference counts; return key -> Trial."""
    trials = {}
    for key in keys:
        cell = scaled(CELLS[key], args.scale)
        path = cell_file(cell, args.seed, args.cache_dir)
        trial = Trial(key, cell, path, reference_output(path), tmp / key)
        trial.tmp.mkdir()
        commands = compare.runs(path, trial.tmp)
        every = dict(zip(compare.RUN_KEYS, commands, strict=True))
        trial.names = {k: every[k] for k in ("awk", "tier12", "default")}
        trial.commands = {name: commands[name] for name in trial.names.values()}
        trial.times = {name: [] for name in trial.commands}
        trials[key] = trial
    return trials


def output_share(summary_path):
    """run.output_seconds / run.elapsed_seconds of a summary.json, or None before the field exists."""
    run = json.loads(summary_path.read_text())["run"]
    seconds = run.get("output_seconds")
    return None if seconds is None else seconds / run["elapsed_seconds"]


def time_matrix(trials, rounds):
    """Every round, every cell: warm its file, run mawk and the engine in the round's order."""
    for r in range(rounds):
        for trial in trials.values():
            compare.warm(trial.path)
            compare.run_round(trial.commands, trial.tmp, r, trial.times, label=f"{trial.key}: ")
            trial.shares.append(output_share(trial.tmp / "out-default" / "summary.json"))


# ---- the table


def machine():
    """The CPU model and the number of cores."""
    with open("/proc/cpuinfo") as f:
        models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return f"{models[0] if models else 'unknown CPU'}, {os.cpu_count()} cores"


def load_text(load):
    return " ".join(f"{x:.2f}" for x in load)


def span_text(days):
    return f"{days:g} d" if days >= 1 else f"{days * 24:g} h"


def missed_targets(trial):
    """The targets a cell misses: Tier 1-2 <= 0.5x mawk, all rules <= 1.0x mawk, both <= 400 MB, outputs < 5 %."""
    missed = []
    for key, factor in WALL_TARGETS.items():
        if trial.wall(key) > factor * trial.wall("awk"):
            missed.append(f"{SHORT[key]} wall")
        if trial.rss(key) > RSS_TARGET_MB:
            missed.append(f"{SHORT[key]} RSS")
    share = median_share(trial.shares)
    if share is not None and share >= OUTPUT_SHARE_TARGET:
        missed.append("output share")
    return missed


def results_text(verdict):
    """The results column: equal, or which fields differ; for a sketched top list, its bound."""
    parts = [f"{key} approximate, max error {error:,}, counts within it: {'yes' if not off else 'NO'}"
             for key, (error, off) in verdict.approximate.items()]
    wrong = [key for key in verdict.bad if key in verdict.expected]
    parts.append(f"WRONG: {', '.join(wrong)}" if wrong else "rest equal" if parts else "equal")
    return "; ".join(parts)


def median_share(shares):
    """The median output share of a cell's all-rules runs, or None if a run has none."""
    known = [s for s in shares if s is not None]
    return statistics.median(known) if known and len(known) == len(shares) else None


def share_text(shares):
    share = median_share(shares)
    return "n/a" if share is None else f"{share:.1%}"


def table_row(trial, ref, verdict):
    """One markdown row of the matrix."""
    cell = trial.cell
    awk = trial.wall("awk")
    engine = [f"{trial.wall(k):.2f} | {trial.wall(k) / awk:.2f}x | {trial.rss(k):.0f}" for k in WALL_TARGETS]
    missed = missed_targets(trial)
    return (f"| {trial.key}: {cell.title} | {ref['lines']:,} | {span_text(cell.days)} | "
            f"{trial.path.stat().st_size / 1e6:,.0f} | {len(ref['users']):,} | {awk:.2f} | {' | '.join(engine)} | "
            f"{share_text(trial.shares)} | {results_text(verdict)} | "
            f"{'NOT MET (' + ', '.join(missed) + ')' if missed else 'MET'} |")


def print_matrix(trials, rounds):
    """Print the table, then any wrong result in full; return (wrong cells, cells that miss a target)."""
    print("\n| cell | lines | span | MB | distinct users | mawk s | T1-2 s | T1-2 / mawk | T1-2 RSS MB | "
          "all rules s | all / mawk | all RSS MB | output share | T1-2 results vs reference.py | target |")
    print("|---" * 15 + "|")
    wrong, missed = [], []
    verdicts = {}
    for key, trial in trials.items():
        ref = json.loads(trial.reference.read_text())
        verdicts[key] = compare.judge(ref, json.loads((trial.tmp / "out-tier12" / "summary.json").read_text()))
        print(table_row(trial, ref, verdicts[key]), flush=True)
        del ref  # the next cell's counts may be as large
        wrong += [key] if verdicts[key].bad else []
        missed += [key] if missed_targets(trial) else []
    print(f"\nmedian of {rounds} round(s); peak RSS is the largest of the rounds; output share: summary.json "
          "run.output_seconds / run.elapsed_seconds of the all-rules run (n/a: no such field yet); targets: "
          f"T1-2 <= {WALL_TARGETS['tier12']}x mawk, all <= {WALL_TARGETS['default']}x mawk, "
          f"both <= {RSS_TARGET_MB} MB, output share < {OUTPUT_SHARE_TARGET:.0%}")
    for key in wrong:
        print(f"cell {key}: Tier 1-2 results differ from reference.py's:")
        compare.print_differences(verdicts[key])
    return wrong, missed


def run_matrix(args, tmp):
    """--matrix: prepare, time, print; return the exit status (1 if a result is wrong)."""
    trials = prepare(chosen_cells(args.cells or ",".join(CELLS)), args, tmp)
    load_before = os.getloadavg()
    print(f"{machine()}; {args.rounds} round(s), the cells in turn, each cell's runs in alternation; "
          f"scale {args.scale:g}; load average (1, 5, 15 min) before {load_text(load_before)}", flush=True)
    time_matrix(trials, args.rounds)
    load_after = os.getloadavg()
    wrong, missed = print_matrix(trials, args.rounds)
    print(f"machine: {machine()}; load average (1, 5, 15 min) before {load_text(load_before)}, "
          f"after {load_text(load_after)}")
    print(f"results: {'WRONG in cell ' + ', '.join(wrong) if wrong else 'every cell right'}")
    print(f"every cell within target: {'NOT MET (cells ' + ', '.join(missed) + ')' if missed else 'MET'}")
    return 1 if wrong else 0


# ---- flatness


def flatness_sizes(args):
    """Each cell at each flatness size: run name -> Cell (the cell's key leads the name)."""
    sizes = {}
    for key in chosen_cells(args.cells or FLATNESS_CELLS):
        for factor in FLATNESS_SIZES:
            cell = scaled(CELLS[key], factor * args.scale)
            sizes[f"{key}: {cell.lines:,} lines, all default rules"] = cell
    return sizes


def all_rules_command(path, tmp):
    """The all-default-rules run over one file, writing to tmp."""
    tmp.mkdir()
    commands = compare.runs(path, tmp)
    return commands[dict(zip(compare.RUN_KEYS, commands, strict=True))["default"]]


def time_flatness(sizes, paths, commands, rounds, tmp):
    """Every round, each cell's sizes in alternation; return run name -> [(wall, rss)] and run name -> [state MB]."""
    times = {name: [] for name in sizes}
    states = {name: [] for name in sizes}
    for r in range(rounds):
        for key in dict.fromkeys(name[0] for name in sizes):
            own = {name: commands[name] for name in sizes if name[0] == key}
            for name in own:
                compare.warm(paths[name])
            compare.run_round(own, tmp, r, times)
            for name in own:
                states[name].append(rule_state_mb(output_dir(commands[name]) / "summary.json"))
    return times, states


def output_dir(command):
    """The output folder a runpipeline command line writes to."""
    return Path(command[command.index("--output-dir") + 1])


def rule_state_mb(summary_path):
    """The rules' state at its largest (summary.json's run.rule_state, each rule's peak_bytes, summed), in MB.

    Each rule's largest state after a seal: their sum bounds what the rules held at once. It
    says how much of a larger run's peak RSS is state that grew with the input.
    """
    rules = json.loads(summary_path.read_text())["run"].get("rule_state", {})
    return sum(rule.get("peak_bytes", 0) for rule in rules.values()) / 1e6


def print_flatness(sizes, paths, times, states):
    """The table of sizes, then each cell's peak RSS spread against the target; return True if all are flat."""
    print("\n| cell | lines | span | MB | median wall s | peak RSS MB | rule state at its largest, MB |\n"
          "|---|---|---|---|---|---|---|")
    for name, cell in sizes.items():
        print(f"| {name[0]}: {cell.title} | {cell.lines:,} | {span_text(cell.days)} | "
              f"{paths[name].stat().st_size / 1e6:,.0f} | {statistics.median(w for w, _ in times[name]):.2f} | "
              f"{max(r for _, r in times[name]):.0f} | {max(states[name]):.1f} |")
    print()
    flat = True
    for key in dict.fromkeys(name[0] for name in sizes):
        rss = [max(r for _, r in times[name]) for name in sizes if name[0] == key]
        spread = max(rss) / min(rss) - 1
        flat = flat and spread <= FLATNESS_TARGET
        print(f"cell {key}: peak RSS {' / '.join(f'{r:.0f}' for r in rss)} MB, spread (max / min - 1) "
              f"{spread:.1%} (target <= {FLATNESS_TARGET:.0%}): {'MET' if spread <= FLATNESS_TARGET else 'NOT MET'}")
    return flat


def run_flatness(args, tmp):
    """--flatness: all default rules on each cell at three sizes; print peak RSS and its spread."""
    sizes = flatness_sizes(args)
    paths = {name: cell_file(cell, args.seed, args.cache_dir) for name, cell in sizes.items()}
    commands = {name: all_rules_command(paths[name], tmp / f"run{i}") for i, name in enumerate(sizes)}
    load_before = os.getloadavg()
    print(f"{machine()}; {args.rounds} round(s); scale {args.scale:g}; load average (1, 5, 15 min) before "
          f"{load_text(load_before)}", flush=True)
    times, states = time_flatness(sizes, paths, commands, args.rounds, tmp)
    load_after = os.getloadavg()
    flat = print_flatness(sizes, paths, times, states)
    print(f"machine: {machine()}; load average (1, 5, 15 min) before {load_text(load_before)}, "
          f"after {load_text(load_after)}")
    print(f"every cell within the flatness target: {'MET' if flat else 'NOT MET'}")
    return 0


def main(args):
    """Run --matrix or --flatness with compare.py's parsed arguments; return the exit status."""
    with tempfile.TemporaryDirectory(prefix="omp-matrix-") as tmp_name:
        return (run_flatness if args.flatness else run_matrix)(args, Path(tmp_name))
