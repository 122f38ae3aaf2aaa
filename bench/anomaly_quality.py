"""Recall and false positives of the default detector rules on a generated log with planted anomalies.

    python bench/anomaly_quality.py --lines 1000000 --seed 42
    python bench/anomaly_quality.py --generator traffic --profile heavy --plant --seeds 1,2,3
    python bench/anomaly_quality.py --generator traffic --no-plant --lines 2000000
    python bench/anomaly_quality.py --table [--big]

Generates the log with bench/generate.py or bench/traffic.py (unless --log names an existing one
with its manifest), runs the shipped settings.yaml and rules/ on it through the real CLI in a
temporary folder, and matches output/anomalies.json against the manifest: recall per planted kind,
then every incident that matches nothing, with the reason it was raised.

--table runs a fixed set of rows (generate.py 1M lines, traffic.py heavy with planted anomalies
1M lines, traffic.py heavy without anomalies 2M lines, and 10M lines with --big), prints one
markdown table and the targets, and exits 0 iff every target is met.

anomalies.json may be the incident format (per-rule `rules` with `suppressed`, samples as
`{"location", "text"}`) or the older one (`counts` only, samples as "file:line"); missing fields
fall back to the older meaning.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parent.parent

#: Which detector type finds which planted kind.
FINDERS = {
    "spamming_user": "frequency",
    "failure_spike": "error_spike",
    "unknown_status": "unknown_status",
    "future_timestamp": "timestamp",
    "epoch_timestamp": "timestamp",
    "silent_service": "flatline",
    "duplicate_event": "duplicate_event",
}
_TIMESTAMP_KEYS = {"future_timestamp": "future", "epoch_timestamp": "before_min_time"}

#: Incidents of these rule types count against a log without anomalies (suppressed ones included);
#: the others (e.g. `timestamp`'s `unparseable` count) are listed but not counted.
COUNTED_TYPES = ("error_spike", "frequency", "flatline", "duplicate_event")
MAX_CLEAN_INCIDENTS = 3


# ---- reading anomalies.json, new format or old


def instant(text: str | None) -> datetime | None:
    """An ISO timestamp (any offset, any fraction) as an aware UTC datetime; None stays None."""
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def overlaps(anomaly: dict[str, Any], start: str, end: str) -> bool:
    """The incident's [window_start, window_end) meets the planted [start, end).

    A window of one instant (a duplicate's) meets it when the instant lies in it; no window, never.
    """
    first, last = instant(anomaly.get("window_start")), instant(anomaly.get("window_end"))
    if first is None or last is None:
        return False
    if first == last:
        return instant(start) <= first < instant(end)
    return first < instant(end) and last > instant(start)


def location(sample: str | dict[str, Any]) -> str:
    """`file:line` of a sample, an object ({"location", "text"}) or the older plain string."""
    return sample["location"] if isinstance(sample, dict) else sample


def line_number(sample: str | dict[str, Any]) -> int:
    """The line number a sample points at."""
    return int(location(sample).rsplit(":", 1)[1])


def sample_text(sample: str | dict[str, Any], lines: dict[int, str]) -> str | None:
    """A sample's line text: its own `text` when it carries one, else the line read from the log."""
    if isinstance(sample, dict) and sample.get("text") is not None:
        return sample["text"]
    return lines.get(line_number(sample))


def sample_lines(log: Path, anomalies: list[dict[str, Any]]) -> dict[int, str]:
    """The text of every line a sample without its own text points at (one pass over the log)."""
    wanted = {line_number(s) for a in anomalies for s in a.get("samples", [])
              if not (isinstance(s, dict) and s.get("text") is not None)}
    found: dict[int, str] = {}
    if not wanted:
        return found
    last = max(wanted)
    with open(log, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number in wanted:
                found[number] = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if number >= last:
                break
    return found


def count_of(anomaly: dict[str, Any]) -> Any:
    """The incident's count (the older `observed` when there is none)."""
    return anomaly.get("count", anomaly.get("observed"))


def rule_table(document: dict[str, Any], summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per rule: type, listed, suppressed (None when the document does not say).

    A rule's type comes from anomalies.json's `rules`, else from its incidents, else from summary.json.
    """
    listed_types = {rule: info.get("type") for rule, info in summary.get("rules", {}).items()}
    listed_types.update({a["rule"]: a["type"] for a in document["anomalies"]})
    listed = {rule: 0 for rule in document.get("counts", {})}
    for anomaly in document["anomalies"]:
        listed[anomaly["rule"]] = listed.get(anomaly["rule"], 0) + 1
    rules = document.get("rules") or {}
    table = {}
    for rule in sorted(set(listed) | set(rules)):
        info = rules.get(rule, {})
        table[rule] = {"type": info.get("type", listed_types.get(rule)), "listed": listed.get(rule, 0),
                       "suppressed": info.get("suppressed")}
    return table


# ---- matching against the manifest


def event(text: str) -> tuple[Any, ...]:
    """A line's five fields with the timestamp as a UTC instant (what duplicate_event compares)."""
    fields = text.split(" ", 4)
    fields += [""] * (5 - len(fields))
    try:
        moment = instant(fields[0])
    except ValueError:
        moment = fields[0]
    return (moment, *fields[1:])


def finds(anomaly: dict[str, Any], planted: dict[str, Any], lines: dict[int, str]) -> bool:
    """Whether ``anomaly`` reports the ``planted`` manifest entry."""
    kind, key = planted["kind"], planted["key"]
    if anomaly["type"] != FINDERS[kind]:
        return False
    if kind in ("spamming_user", "silent_service"):
        return anomaly["key"] == key and overlaps(anomaly, planted["start"], planted["end"])
    if kind == "failure_spike":
        return anomaly["key"] in ("all", key) and overlaps(anomaly, planted["start"], planted["end"])
    if kind == "unknown_status":
        return anomaly["key"] == key and count_of(anomaly) >= planted["counts"]["records"]
    if kind in _TIMESTAMP_KEYS:
        return anomaly["key"] == _TIMESTAMP_KEYS[kind] and count_of(anomaly) >= planted["counts"]["records"]
    texts = {sample_text(s, lines) for s in anomaly.get("samples", [])}
    return count_of(anomaly) == planted["counts"]["occurrences"] and texts == {key}


def explain(anomaly: dict[str, Any], manifest: dict[str, Any], lines: dict[int, str],
            summary: dict[str, Any]) -> tuple[bool, str]:
    """Why an incident that matches no planted entry was raised, and whether it is a false positive."""
    kind, key = anomaly["type"], anomaly["key"]
    if key == "late_events":
        return True, "records that arrived after their window was closed (see retention in docs/anomalies.md)"
    if kind == "timestamp" and key == "unparseable":
        expected = summary["totals"]["malformed_reasons"].get("bad_timestamp", 0)
        if count_of(anomaly) == expected:
            return False, (f"by design: the {expected} lines with a malformed timestamp (the generator's ts_* "
                           "oddities and prose lines), as summary.json counts them")
        return True, f"unparseable count {count_of(anomaly)} differs from summary.json's bad_timestamp {expected}"
    if kind == "duplicate_event":
        texts = [sample_text(s, lines) or "?" for s in anomaly.get("samples", [])]
        if len({event(t) for t in texts}) > 1:
            return True, "NOT the same event: a hash collision"
        how = "identical lines" if len(set(texts)) == 1 else "the same event written with different UTC offsets"
        inside = [p["kind"] for p in manifest["anomalies"]
                  if p["kind"] in ("spamming_user", "failure_spike") and overlaps(anomaly, p["start"], p["end"])]
        where = f"inside the planted {inside[0]} burst" if inside else "by chance"
        return True, f"{how} the generator wrote {where}, not listed in the manifest as duplicates"
    return True, _UNPLANTED.get(kind, "unexplained")


#: Why the windowed detectors flag what was not planted (the usual reasons; not a diagnosis).
_UNPLANTED = {
    "frequency": "a busy user of the ordinary traffic, no planted burst (Zipf's head users)",
    "error_spike": "a failure spike where none was planted",
    "flatline": "a service below its baseline where no silence was planted (e.g. the evening fall of traffic)",
}


def evaluate(manifest: dict[str, Any], anomalies: list[dict[str, Any]], lines: dict[int, str]) -> dict[str, Any]:
    """Recall per planted kind, and the incidents that match no planted entry."""
    recall: dict[str, list[int]] = {}
    matched: set[str] = set()
    missed = []
    for planted in manifest["anomalies"]:
        hits = [a["id"] for a in anomalies if finds(a, planted, lines)]
        found, total = recall.setdefault(planted["kind"], [0, 0])
        recall[planted["kind"]] = [found + bool(hits), total + 1]
        matched.update(hits)
        if not hits:
            missed.append(planted)
    unmatched = [a for a in anomalies if a["id"] not in matched]
    return {"recall": recall, "missed": missed, "unmatched": unmatched, "matched": len(matched)}


# ---- one run: generate, run the CLI, judge


# NamedTuples, not dataclasses: tests load this script by path, without a sys.modules entry, which
# dataclasses need to resolve postponed annotations.
class Case(NamedTuple):
    """One log to generate and judge."""

    generator: str  # "generate" or "traffic"
    profile: str | None  # traffic.py's profile; None for generate.py
    plant: bool
    lines: int
    seed: int


class Outcome(NamedTuple):
    """What one run found, and how it compares with the manifest."""

    case: Case
    manifest: dict[str, Any]
    document: dict[str, Any]
    summary: dict[str, Any]
    lines: dict[int, str]
    report: dict[str, Any]
    wall: float
    rules: dict[str, dict[str, Any]]  # rule_table()


def generate_log(case: Case, log: Path) -> None:
    """Write ``log`` and its manifest with the case's generator."""
    script = REPO / "bench" / f"{case.generator}.py"
    command = [sys.executable, str(script), "--lines", str(case.lines), "--out", str(log), "--seed", str(case.seed)]
    if case.generator == "traffic":
        command += ["--profile", case.profile or "heavy"] + (["--plant"] if case.plant else [])
    elif not case.plant:
        command += ["--no-anomalies"]
    subprocess.run(command, check=True)


def shipped_workspace(log: Path, workdir: Path) -> dict[str, str]:
    """``workdir`` with the shipped settings.yaml and rules/ and ``log`` in its data/; the CLI's environment."""
    shutil.copy(REPO / "settings.yaml", workdir / "settings.yaml")
    shutil.copytree(REPO / "rules", workdir / "rules")
    (workdir / "data").mkdir()
    os.symlink(log.resolve(), workdir / "data" / log.name)
    return {**os.environ, "PYTHONPATH": str(REPO)}


def run_cli(log: Path, workdir: Path) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Run the shipped configuration on ``log`` with the real CLI; return (anomalies, summary, wall seconds)."""
    env = shipped_workspace(log, workdir)
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "core.cli", "-q"], cwd=workdir, env=env, check=True)
    wall = time.perf_counter() - began
    out = workdir / "output"
    return (json.loads((out / "anomalies.json").read_text(encoding="utf-8")),
            json.loads((out / "summary.json").read_text(encoding="utf-8")), wall)


def measure(case: Case, log: Path | None = None) -> Outcome:
    """Generate (unless ``log`` is given), run and judge one case."""
    with tempfile.TemporaryDirectory(prefix="omp-quality-") as tmp:
        work = Path(tmp)
        if log is None:
            log = work / "generated.txt"
            generate_log(case, log)
        manifest = json.loads(Path(f"{log}.manifest.json").read_text(encoding="utf-8"))
        (work / "run").mkdir()
        document, summary, wall = run_cli(log, work / "run")
        lines = sample_lines(log, document["anomalies"])
    report = evaluate(manifest, document["anomalies"], lines)
    return Outcome(case, manifest, document, summary, lines, report, wall, rule_table(document, summary))


# ---- reports


def suppressed_total(outcome: Outcome) -> int | None:
    """Suppressed incidents over every rule; None when the document does not report them."""
    values = [r["suppressed"] for r in outcome.rules.values() if r["suppressed"] is not None]
    return sum(values) if values else None


def counted_incidents(outcome: Outcome) -> int:
    """Listed plus suppressed incidents of the COUNTED_TYPES rules (what a clean log is judged on)."""
    return sum(r["listed"] + (r["suppressed"] or 0) for r in outcome.rules.values() if r["type"] in COUNTED_TYPES)


def by_type(outcome: Outcome) -> str:
    """`type listed(+suppressed)` for every rule type, counted ones first."""
    totals: dict[str, list[int]] = {}
    for rule in outcome.rules.values():
        listed, suppressed = totals.setdefault(rule["type"] or "?", [0, 0])
        totals[rule["type"] or "?"] = [listed + rule["listed"], suppressed + (rule["suppressed"] or 0)]
    order = sorted(totals, key=lambda t: (t not in COUNTED_TYPES, t))
    parts = [f"{t} {n}" + (f" (+{s} suppressed)" if s else "") + ("" if t in COUNTED_TYPES else " [not counted]")
             for t in order for n, s in [totals[t]]]
    return ", ".join(parts)


def false_positives(outcome: Outcome) -> list[tuple[tuple[bool, str], list[dict[str, Any]]]]:
    """Unmatched incidents grouped by (is a false positive, reason)."""
    reasons: dict[tuple[bool, str], list[dict[str, Any]]] = {}
    for anomaly in outcome.report["unmatched"]:
        reasons.setdefault(explain(anomaly, outcome.manifest, outcome.lines, outcome.summary), []).append(anomaly)
    return sorted(reasons.items())


def print_run(outcome: Outcome, show: int) -> None:
    """The single-run report: recall per kind, misses, then unmatched incidents by reason."""
    anomalies, report, manifest = outcome.document["anomalies"], outcome.report, outcome.manifest
    source = f"{manifest.get('generator', 'bench/generate.py')} {manifest.get('profile', '')}".rstrip()
    print(f"{source}, {manifest['lines']:,} lines, seed {manifest['args']['seed']}: {len(anomalies)} incidents, "
          f"{report['matched']} match a planted anomaly; CLI wall time {outcome.wall:.2f} s")
    suppressed = suppressed_total(outcome)
    print(f"suppressed: {'not reported' if suppressed is None else suppressed}; by type: {by_type(outcome)}")
    print("\nrecall per planted kind:" if report["recall"] else "\nno planted anomaly")
    for kind, (found, total) in report["recall"].items():
        print(f"  {kind:18s} {found}/{total}")
    for planted in report["missed"]:
        print(f"  MISSED: {planted['kind']} {planted['key']!r} {planted['start']}..{planted['end']}")
    groups = false_positives(outcome)
    false = sum(len(group) for (is_false, _), group in groups if is_false)
    print(f"\nincidents matching no planted entry: {len(report['unmatched'])}, of which false positives: {false}")
    for (is_false, reason), group in groups:
        print(f"  {len(group):5d} x {'FALSE POSITIVE: ' if is_false else ''}{reason}")
        for anomaly in group[:show]:
            where = ", ".join(f"{location(s)} {(sample_text(s, outcome.lines) or '')[:90]!r}"
                              for s in anomaly.get("samples", [])[:2])
            print(f"          {anomaly['id']}  count={count_of(anomaly)}  {where}")
        if len(group) > show:
            print(f"          ... and {len(group) - show} more")


# ---- the table


KINDS = ("spamming_user", "failure_spike", "silent_service", "duplicate_event", "unknown_status",
         "future_timestamp", "epoch_timestamp")


def table_cases(seeds: list[int], big: bool) -> list[Case]:
    """The rows of --table."""
    cases = [Case("generate", None, True, 1_000_000, s) for s in seeds]
    cases += [Case("traffic", "heavy", True, 1_000_000, s) for s in seeds]
    cases += [Case("traffic", "heavy", False, 2_000_000, 1)]
    return cases + ([Case("traffic", "heavy", False, 10_000_000, 1)] if big else [])


def target(outcome: Outcome) -> tuple[bool, str]:
    """Whether a row meets its target, and the target in words."""
    if outcome.case.plant:
        missed = len(outcome.report["missed"])
        return not missed, f"every planted anomaly found ({missed} missed)"
    counted = counted_incidents(outcome)
    return counted <= MAX_CLEAN_INCIDENTS, (f"<= {MAX_CLEAN_INCIDENTS} incidents of {', '.join(COUNTED_TYPES)} "
                                            f"incl. suppressed (has {counted})")


def table_row(outcome: Outcome) -> str:
    """One markdown row."""
    case, recall = outcome.case, outcome.report["recall"]
    kinds = [f"{recall[k][0]}/{recall[k][1]}" if k in recall else "-" for k in KINDS]
    groups = false_positives(outcome)
    false = sum(len(group) for (is_false, _), group in groups if is_false)
    suppressed = suppressed_total(outcome)
    cells = [case.generator, case.profile or "-", "yes" if case.plant else "no", str(case.seed), f"{case.lines:,}",
             *kinds, str(len(outcome.document["anomalies"])), f"{len(outcome.report['unmatched'])} ({false})",
             "n/a" if suppressed is None else str(suppressed), str(counted_incidents(outcome)), f"{outcome.wall:.1f}"]
    return "| " + " | ".join(cells) + " |"


class Failed(NamedTuple):
    """A row whose generator or CLI run failed: reported as such, its target not met."""

    case: Case
    error: str


def attempt(case: Case) -> Outcome | Failed:
    """measure(case), or what went wrong (the other rows still run)."""
    try:
        return measure(case)
    except subprocess.CalledProcessError as error:
        what = "core.cli" if "-m" in error.cmd else Path(error.cmd[1]).name
        return Failed(case, f"{what} exited {error.returncode}")


def name(case: Case) -> str:
    """A row's name in the lists under the table."""
    return (f"{case.generator} {case.profile or ''} {'planted' if case.plant else 'no anomaly'} "
            f"seed {case.seed} {case.lines:,}").replace("  ", " ")


TABLE_HEAD = ["generator", "profile", "planted", "seed", "lines", "spam user", "failure spike", "silent service",
              "duplicate", "unknown status", "future ts", "epoch ts", "incidents", "no planted match (FP)",
              "suppressed", "counted", "CLI wall s"]


def print_table(outcomes: list[Outcome | Failed]) -> bool:
    """The markdown table, the legend, each row's incidents by type, and the targets; True iff all met."""
    print("| " + " | ".join(TABLE_HEAD) + " |")
    print("|" + "|".join("---" for _ in TABLE_HEAD) + "|")
    for o in outcomes:
        failed = [o.case.generator, o.case.profile or "-", "yes" if o.case.plant else "no", str(o.case.seed),
                  f"{o.case.lines:,}", f"FAILED: {o.error}" if isinstance(o, Failed) else ""]
        print(table_row(o) if isinstance(o, Outcome) else "| " + " | ".join(failed) + " |")
    print("\nplanted kinds: found/total. incidents: listed in anomalies.json. FP: unmatched and not by design. "
          f"counted: listed + suppressed incidents of {', '.join(COUNTED_TYPES)}. n/a: not in anomalies.json.")
    print("\nincidents by type:")
    for o in outcomes:
        print(f"  {name(o.case)}: {by_type(o) if isinstance(o, Outcome) else 'FAILED: ' + o.error}")
    print("\ntargets:")
    results = [target(o) if isinstance(o, Outcome) else (False, f"the run failed: {o.error}") for o in outcomes]
    for o, (ok, words) in zip(outcomes, results):
        print(f"  {'MET    ' if ok else 'NOT MET'}  {name(o.case)}: {words}")
    met = all(ok for ok, _ in results)
    print(f"\n{sum(ok for ok, _ in results)} of {len(results)} targets met: {'ALL MET' if met else 'NOT ALL MET'}")
    return met


# ---- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", help="several seeds, comma-separated (e.g. 1,2,3); one run each")
    parser.add_argument("--generator", choices=("generate", "traffic"), default="generate",
                        help="bench/generate.py (default) or bench/traffic.py")
    parser.add_argument("--profile", choices=("heavy",), default="heavy", help="traffic.py's profile")
    parser.add_argument("--plant", action=argparse.BooleanOptionalAction, default=True,
                        help="plant anomalies (default); --no-plant for a log without any")
    parser.add_argument("--log", type=Path, help="an existing generated log (its manifest beside it)")
    parser.add_argument("--show", type=int, default=3, help="incidents listed per reason (default 3)")
    parser.add_argument("--table", action="store_true", help="run the fixed rows and print one markdown table")
    parser.add_argument("--big", action="store_true", help="with --table: add the 10M-line row (slow)")
    args = parser.parse_args(argv)
    args.seed_list = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        return 0 if print_table([attempt(c) for c in table_cases(args.seed_list or [1, 2, 3], args.big)]) else 1
    profile = args.profile if args.generator == "traffic" else None
    missed = False
    for i, seed in enumerate([args.seed] if args.log else args.seed_list or [args.seed]):
        outcome = measure(Case(args.generator, profile, args.plant, args.lines, seed), args.log)
        print("\n" + "=" * 100 + "\n" if i else "", end="")
        print_run(outcome, args.show)
        missed |= bool(outcome.report["missed"])
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
