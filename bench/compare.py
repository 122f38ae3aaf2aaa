"""Time the project against mawk, plain Python and Polars on one generated file, and check its results.

    python bench/compare.py --lines 10000000                 # one file, every baseline
    python bench/compare.py --matrix --scale 0.05 --rounds 1  # every traffic shape against mawk (bench/matrix.py)
    python bench/compare.py --flatness --rounds 1             # peak RSS at 1M, 10M and 30M lines
"""

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
from typing import NamedTuple

import yaml

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
RUNPIPELINE = shutil.which("runpipeline", path=str(Path(PYTHON).parent)) or shutil.which("runpipeline")
AWK = shutil.which("mawk") or shutil.which("awk")
TIER12_RULES = ["payment-statuses", "top-services", "top-users", "peak-hours"]
TOP_LIMIT, PEAK_LIMIT = 10, 3  # as in rules/summary.yaml
RUN_KEYS = ("tier12", "default", "awk", "python", "polars")  # short names of runs(), in its order

# The one-liner people would write: whitespace-split fields, literal HH of the timestamp, no checks.
AWK_PROGRAM = (
    '{s[$2]++; v[$3]++; u[$4]++; h[substr($1, 12, 2)]++} '
    'END {for (k in s) print "status", k, s[k]; for (k in v) print "service", k, v[k]; '
    'for (k in u) print "user", k, u[k]; for (k in h) print "hour", k, h[k]}'
)

# A Polars streaming one-liner: 4 space-separated fields, non-empty, a parseable timestamp in UTC.
POLARS_PROGRAM = """
import json, sys, polars as pl
cols = ["ts", "status", "service", "user"]
f = pl.scan_csv(sys.argv[1], separator=" ", has_header=False, quote_char=None, truncate_ragged_lines=True,
                encoding="utf8-lossy", schema={c: pl.String for c in cols}, extra_columns="ignore")
f = f.filter(pl.all_horizontal(pl.col(cols).is_not_null() & (pl.col(cols) != "")))
f = f.with_columns(hour=pl.col("ts").str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%#z", time_zone="UTC", strict=False)
                   .dt.hour()).filter(pl.col("hour").is_not_null())
keys = ["status", "service", "user", "hour"]
out = pl.collect_all([f.group_by(k).agg(pl.len()) for k in keys], engine="streaming")
json.dump({k: dict(zip(map(str, d[k]), d["len"])) for k, d in zip(keys, out)}, sys.stdout)
"""


def parse_args(argv):
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lines", type=int, help="lines in the generated file (required unless --matrix or --flatness)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds of each run (at least 3 for the issue)")
    p.add_argument("--distinct-users", type=int, default=20_000)
    p.add_argument("--cache-dir", type=Path, default=REPO / "bench" / ".cache")
    p.add_argument("--python-once-above", type=int, default=2_000_000, metavar="N",
                   help="above N lines, plain Python runs once (for the equality check), not every round")
    p.add_argument("--matrix", action="store_true",
                   help="time the engine against mawk on every cell of the traffic matrix; print one table")
    p.add_argument("--flatness", action="store_true",
                   help="peak RSS of all default rules at a tenth, once and three times a cell's size")
    p.add_argument("--cells", help="with --matrix or --flatness: comma-separated cells (default: all; a,b)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="with --matrix or --flatness: multiply every cell's lines and span (0.05: a quick run)")
    args = p.parse_args(argv)
    if args.lines is None and not (args.matrix or args.flatness):
        p.error("--lines is required, unless --matrix or --flatness")
    if args.matrix and args.flatness:
        p.error("--matrix and --flatness are two runs; pick one")
    if not args.scale > 0:
        p.error(f"--scale must be positive, found {args.scale}")
    return args


def cached_file(args):
    """Generate the input file once per (lines, seed, distinct users); return its path."""
    folder = args.cache_dir / f"lines{args.lines}-seed{args.seed}-users{args.distinct_users}"
    path = folder / "data" / "input.log"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(".log.part")  # an excluded name: never read as data
        print(f"generating {args.lines:,} lines into {path} ...", flush=True)
        subprocess.run([PYTHON, str(REPO / "bench" / "generate.py"), "--lines", str(args.lines),
                        "--out", str(part), "--seed", str(args.seed), "--distinct-users", str(args.distinct_users),
                        "--manifest", str(folder / "manifest.json")], check=True, stdout=subprocess.DEVNULL)
        os.replace(part, path)
    return path


def tier12_settings(tmp):
    """Write a copy of the shipped settings enabling only the Tier 1-2 rules; return its path."""
    settings = yaml.safe_load((REPO / "settings.yaml").read_text())
    settings["rules"] = TIER12_RULES
    settings["rule_files"] = [str(REPO / "rules" / "*.yaml")]
    path = tmp / "settings-tier12.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def runs(data_file, tmp):
    """The timed runs: name -> command line. Each writes its stdout to tmp/<name>.out."""
    def project(settings, out):
        return [RUNPIPELINE, "--reset", "--settings", str(settings), "--data-dir", str(data_file.parent),
                "--output-dir", str(tmp / out), "-q"]
    return {
        "project, Tier 1-2 rules": project(tier12_settings(tmp), "out-tier12"),
        "project, all default rules": project(REPO / "settings.yaml", "out-default"),
        f"{Path(AWK).name} one-liner": [AWK, AWK_PROGRAM, str(data_file)],
        "plain Python (reference.py)": [PYTHON, str(REPO / "bench" / "reference.py"), str(data_file)],
        "Polars streaming one-liner": [PYTHON, "-c", POLARS_PROGRAM, str(data_file)],
    }


def run_once(argv, stdout_path):
    """Run a command to completion; return (wall seconds, the child's own peak RSS in MB)."""
    with open(stdout_path, "wb") as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # ru_maxrss of this child alone, in KiB on Linux
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"{argv[0]} exited {proc.returncode}:\n{err.read().decode(errors='replace')[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def run_round(commands, tmp, r, times, once=(), label=""):
    """Run every command once, the order rotated by round r; append (wall, rss) to times[name]."""
    names = list(commands)
    for name in names[r % len(names):] + names[:r % len(names)]:
        if name in once and times[name]:
            continue
        times[name].append(run_once(commands[name], tmp / f"{name}.out"))
        wall, rss = times[name][-1]
        print(f"  round {r + 1}: {label}{name}: {wall:.2f} s, {rss:.0f} MB", flush=True)


def time_runs(commands, tmp, rounds, once):
    """Time every run in alternation, rotating the order each round; return name -> [(wall, rss)]."""
    times = {name: [] for name in commands}
    for r in range(rounds):
        run_round(commands, tmp, r, times, once)
    return times


def warm(path):
    """Read a file through, so that it is in the page cache before its first timed run."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def ranked(counts, limit=None):
    """(key, count) pairs, most frequent first, ties by key ascending, as the rule types order them."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]


def hour_label(hour):
    """The peak_hours label of a UTC hour: 09:00-10:00, 23:00-00:00."""
    return f"{hour:02d}:00-{(hour + 1) % 24:02d}:00"


def totals(source):
    """Line totals and the malformed reasons seen (reference.py also lists the reasons with zero lines)."""
    reasons = {reason: n for reason, n in source["malformed_reasons"].items() if n}
    return {**{k: source[k] for k in ("lines", "records", "blank", "malformed")}, "malformed_reasons": reasons}


def expected_results(ref):
    """What the Tier 1-2 rules must output, computed from reference.py's counts."""
    hours = {int(h): n for h, n in ref["hours"].items()}
    return {
        "payment_statuses": ranked(ref["statuses"]),
        "top_services": ranked(ref["services"], TOP_LIMIT),
        "top_users": ranked(ref["users"], TOP_LIMIT),
        "peak_hours": [hour_label(h) for h, n in ranked(hours, PEAK_LIMIT) if n > 0],
        "hourly_volume": {hour_label(h): n for h, n in sorted(hours.items())},
        "totals": totals(ref),
    }


def project_results(summary):
    """The same fields, read from the project's summary.json."""
    details = summary["details"]
    return {
        "payment_statuses": list(summary["payment_statuses"].items()),
        "top_services": [(k, details["top_services"].get(k)) for k in summary["top_services"]],
        "top_users": [(k, details["top_users"].get(k)) for k in summary["top_users"]],
        "peak_hours": summary["peak_hours"],
        "hourly_volume": details["peak_hours"]["hourly_volume"],
        "totals": totals(summary["totals"]),
    }


class Verdict(NamedTuple):
    """The project's Tier 1-2 results against reference.py's."""

    expected: dict
    actual: dict
    bad: list  # the fields that differ, or whose sketched counts are outside the bound
    approximate: dict  # top list -> (max_error, listed keys whose count is outside [true, true + max_error])


def outside_bound(detail, true_counts):
    """For a top list the project took from a sketch: the listed keys whose count is not within
    [true, true + max_error]."""
    error = detail["max_error"]
    return [k for k, n in detail["counts"].items() if not true_counts.get(k, 0) <= n <= true_counts.get(k, 0) + error]


def judge(ref, summary):
    """Compare a summary.json's Tier 1-2 results with reference.py's output; return a Verdict."""
    expected = json.loads(json.dumps(expected_results(ref)))  # tuples -> lists, as in the JSON read back
    actual = json.loads(json.dumps(project_results(summary)))
    approximate = {}
    for key, field in (("top_services", "services"), ("top_users", "users")):
        detail = summary["details"][key]
        if detail.get("approximate"):
            del expected[key], actual[key]
            approximate[key] = (detail["max_error"], outside_bound(detail, ref[field]))
    bad = [key for key, (_, off) in approximate.items() if off] + [key for key in expected if expected[key] != actual[key]]
    return Verdict(expected, actual, bad, approximate)


def print_differences(verdict, indent="  "):
    """Print, for each field that differs, what reference.py says and what the project said."""
    for key in verdict.bad:
        if key in verdict.expected:
            print(f"{indent}{key}: expected {str(verdict.expected[key])[:300]}\n"
                  f"{indent}{key}: got      {str(verdict.actual[key])[:300]}")


def check_equal(tmp, names):
    """Compare the project's Tier 1-2 results with reference.py's; print PASS/FAIL; return True on PASS."""
    ref = json.loads((tmp / f"{names['python']}.out").read_text())
    verdict = judge(ref, json.loads((tmp / "out-tier12" / "summary.json").read_text()))
    for key, (error, off) in verdict.approximate.items():
        print(f"{key}: approximate (frequent items sketch, max error {error:,}), so not compared exactly; "
              f"listed counts within the bound: {'yes' if not off else 'NO, ' + ', '.join(off[:5])}")
    if verdict.bad:
        print(f"equality with plain Python: FAIL on {', '.join(verdict.bad)}")
        print_differences(verdict)
    else:
        print(f"equality with plain Python ({', '.join(verdict.expected)}; top lists with counts): PASS")
    return not verdict.bad


def baseline_notes(tmp, names):
    """Say how far the awk and Polars one-liners are from the contract's record count."""
    records = json.loads((tmp / f"{names['python']}.out").read_text())["records"]
    awk_lines = (tmp / f"{names['awk']}.out").read_text(errors="replace").splitlines()
    awk_count = sum(int(line.rsplit(" ", 1)[1]) for line in awk_lines if line.startswith("status "))
    polars_count = sum(json.loads((tmp / f"{names['polars']}.out").read_text())["status"].values())
    print(f"records counted: contract (project, plain Python) {records:,}; {names['awk']} {awk_count:,}, "
          f"every line: it takes the literal HH, not the UTC hour, and skips no malformed line (the baseline "
          f"people write, not a correct implementation); Polars {polars_count:,}: it checks the field count, "
          f"empty fields and the timestamp, not bad characters or invalid UTF-8")


def print_table(times, lines, base_name):
    """Print run, rounds, median wall, lines/s, peak RSS and ratios to the project's Tier 1-2 run."""
    base_wall = statistics.median(w for w, _ in times[base_name])
    base_rss = max(r for _, r in times[base_name])
    print("| run | rounds | median wall s | lines/s | peak RSS MB | wall / project T1-2 | RSS / project T1-2 |")
    print("|---|---|---|---|---|---|---|")
    for name, samples in times.items():
        wall = statistics.median(w for w, _ in samples)
        rss = max(r for _, r in samples)
        print(f"| {name} | {len(samples)} | {wall:.2f} | {lines / wall:,.0f} | {rss:.0f} | "
              f"{wall / base_wall:.2f} | {rss / base_rss:.2f} |")


def print_targets(times, names):
    """Say whether the issue's targets are met: Tier 1-2 <= 0.5x awk, all rules <= 1.0x awk, both <= 400 MB."""
    awk_wall = statistics.median(w for w, _ in times[names["awk"]])
    for name, factor in ((names["tier12"], 0.5), (names["default"], 1.0)):
        wall = statistics.median(w for w, _ in times[name])
        rss = max(r for _, r in times[name])
        ok = wall <= factor * awk_wall and rss <= 400
        print(f"target {name}: wall {wall / awk_wall:.2f}x {names['awk']} (target <= {factor}x), "
              f"peak RSS {rss:.0f} MB (target <= 400): {'MET' if ok else 'NOT MET'}")


def main(argv=None):
    """Generate (or reuse) the file, time every run, print the table, the targets and the equality check."""
    args = parse_args(argv)
    if args.matrix or args.flatness:
        import matrix  # bench/matrix.py: bench/ is on sys.path when compare.py runs as a script

        return matrix.main(args)
    data_file = cached_file(args)
    with tempfile.TemporaryDirectory(prefix="omp-compare-") as tmp_name:
        tmp = Path(tmp_name)
        commands = runs(data_file, tmp)
        names = dict(zip(RUN_KEYS, commands))
        once = {names["python"]} if args.lines > args.python_once_above else set()
        warm(data_file)  # so that round 1 is not the only cold read
        load_before = os.getloadavg()
        print(f"{args.lines:,} lines, {data_file.stat().st_size / 1e6:,.0f} MB, seed {args.seed}, "
              f"{args.distinct_users:,} distinct users; {os.cpu_count()} CPUs; {args.rounds} rounds, in alternation")
        times = time_runs(commands, tmp, args.rounds, once)
        load_after = os.getloadavg()
        print()
        print_table(times, args.lines, names["tier12"])
        print(f"load average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} "
              f"{load_before[2]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
        if once:
            print(f"plain Python ran once (over {args.python_once_above:,} lines): for the equality check")
        print_targets(times, names)
        baseline_notes(tmp, names)
        return 0 if check_equal(tmp, names) else 1


if __name__ == "__main__":
    sys.exit(main())
