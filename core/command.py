"""The ``runpipeline`` command itself: arguments, settings, runs, exit codes, what it prints.

Started through ``core.cli``, which sets the process-wide settings first."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from core import __version__, budget
from core.alertconfig import AlertConfig, load_alerts
from core.discover import check_data_dir
from core.errors import ConfigError, DataDirError, ForeignState, OutputValidationError, PipelineError, StateLocked
from core.guard import plugin_of
from core.lock import StateLock
from core.objectstore import is_url
from core.plugins import get_plugin_manager, rule_types
from core.profile import RunProfile
from core.ruleset import load_rules
from core.settings import Settings, load_settings

if TYPE_CHECKING:
    from core.serve import OutputServer

try:
    from core import ruletest
    from core.checkpoint import state_dir
    from core.runner import RunReport, run_batch
except ImportError as exc:  # a compiled module's stand-in does not fit (core/compiled.py): say so, no traceback
    if not str(exc).startswith("core._"):
        raise
    sys.exit(f"runpipeline: {exc}")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_PARTIAL = 3
#: sysexits' EX_TEMPFAIL: the output folder is busy; the same command may succeed later.
EXIT_LOCKED = 75
#: A run stopped by a signal exits 128 + its number, as the shell reports one it ended: 130 for
#: SIGINT, 143 for SIGTERM (a batch run; a watcher stopped by a signal has done its job: 0).
EXIT_INTERRUPTED = 128 + signal.SIGINT

EPILOG = """\
exit codes:
  0    every file and every rule was processed; outputs written (--watch: stopped by a signal)
  1    the run could not finish (an output failed its schema, or an internal error)
  2    configuration problem: settings, rule files, plugins, the data folder, or an output folder
       that holds the counts of another data folder
  3    outputs written, but a rule or a plugin's hook raised, or a file could not be read (see summary.json)
  75   another run holds the output folder (its pid and command are named); see --wait-lock
  130  interrupted by Ctrl-C (SIGINT): what was read is committed and the outputs are written
  143  stopped by SIGTERM: what was read is committed and the outputs are written
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runpipeline",
        description="Read payment log files from the data folder, apply the enabled rules and write "
        "output/summary.json.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--settings", default="settings.yaml", metavar="PATH",
                        help="settings file (default: ./settings.yaml); relative paths in it are "
                        "resolved against its folder")
    parser.add_argument("--data-dir", metavar="DIR", help="read log files from DIR instead of settings' data_dir")
    parser.add_argument("--output-dir", metavar="DIR", help="write outputs to DIR instead of settings' output_dir")
    parser.add_argument("--executor", choices=("threads", "dask"),
                        help="where the chunks are worked on: threads of this process (default), or the worker "
                        "processes of a Dask cluster (a local one, started for the run, unless --scheduler)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run the chunks on the Dask cluster whose scheduler is at ADDRESS, e.g. "
                        "tcp://127.0.0.1:8786 (implies --executor dask)")
    parser.add_argument("--watch", action="store_true",
                        help="process what is in the data folder, then keep watching it and fold in new and "
                        "grown files as they are ready; stop with Ctrl-C or SIGTERM")
    parser.add_argument("--poll", action="store_true",
                        help="with --watch: poll the folder instead of using native file events")
    parser.add_argument("--metrics-port", type=_port, metavar="PORT",
                        help="with --watch: serve Prometheus metrics on http://127.0.0.1:PORT/metrics")
    parser.add_argument("--metrics-addr", default="127.0.0.1", metavar="ADDR",
                        help="with --metrics-port: the address to listen on (default: 127.0.0.1, this host only)")
    parser.add_argument("--reset", action="store_true",
                        help="forget what earlier runs counted (output/.state) and start from nothing")
    parser.add_argument("--wait-lock", action="store_true",
                        help="if another run holds the output folder, wait for it to finish instead of "
                        "exiting with code 75")
    parser.add_argument("--profile", action="store_true",
                        help="profile the run on every thread; write profile.txt and profile.pstats to the "
                        "output folder (batch runs only)")
    parser.add_argument("--serve", type=_port, metavar="PORT",
                        help="serve report.html, summary.json and anomalies.json on http://127.0.0.1:PORT/ "
                        "(0: any free port): while watching, or after a batch run until Ctrl-C or SIGTERM")
    parser.add_argument("--alerts", action="store_true",
                        help="send alerts in a batch run too (as alerts.batch: true does); a watcher always sends them")
    parser.add_argument("--check", action="store_true",
                        help="validate settings, rule files, plugins and the data folder, report every problem, "
                        "and exit")
    parser.add_argument("--version", action="version", version=f"runpipeline (Oh My Payments) {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more: -v one line per file, -vv debug detail")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return parser


def build_test_parsers() -> dict[str, argparse.ArgumentParser]:
    """``runpipeline test-rule`` and ``runpipeline test``: rules tried on sample lines, and declared rule tests."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--settings", default="settings.yaml", metavar="PATH",
                        help="settings file (default: ./settings.yaml): its rule files, plugins and limits")
    common.add_argument("-v", "--verbose", action="count", default=0, help="log more")
    try_rule = argparse.ArgumentParser(
        prog="runpipeline test-rule", parents=[common],
        description="Run one rule over sample lines, without touching the saved state or the outputs, and "
        "print what it outputs, or the incidents it finds with the lines that caused them.")
    try_rule.add_argument("rule", metavar="NAME", help="a rule defined in the rule files (enabled or not)")
    try_rule.add_argument("--sample", required=True, metavar="FILE", help="log lines to run it over")
    try_rule.add_argument("--json", action="store_true", help="print the same as JSON")
    tests = argparse.ArgumentParser(
        prog="runpipeline test", parents=[common],
        description="Run the rule tests declared in YAML files (each: input lines, optional generated "
        "background traffic and settings, and the expected output or incidents); exit 1 if any fails.")
    tests.add_argument("files", nargs="*", metavar="FILE",
                       help=f"rule test files (default: {ruletest.DEFAULT_TESTS} beside the settings file)")
    return {"test-rule": try_rule, "test": tests}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    subcommand = _subcommand(argv)
    if subcommand is not None:
        rest = argv[:subcommand] + argv[subcommand + 1:]
        args = build_test_parsers()[argv[subcommand]].parse_args(rest)
        args.command, args.quiet = argv[subcommand], False
    else:
        args = build_parser().parse_args(argv)
        args.command = None
    _configure_logging(args.verbose, args.quiet)
    command = shlex.join(["runpipeline", *argv])
    try:
        if args.command == "test-rule":
            return _test_rule(args)
        if args.command == "test":
            return _test(args)
        return _run(args, command)
    except StateLocked as exc:
        print(f"runpipeline: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except ForeignState as exc:
        print(f"runpipeline: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        _say_problems("configuration error", exc.problems)
        return EXIT_CONFIG
    except DataDirError as exc:
        print(f"runpipeline: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OutputValidationError as exc:
        _say_problems(f"{exc.output} failed its schema and was not written", exc.problems)
        return EXIT_ERROR
    except PipelineError as exc:
        print(f"runpipeline: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:  # a second signal, or one before the run began: stop at once
        print("runpipeline: interrupted; the last commit stands, and the next run goes on from it",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # the file system refused (output folder is a file, disk full, read-only): say where
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"runpipeline: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # the last line of defence: a message, and the traceback only on request
        print(f"runpipeline: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if args.verbose:
            traceback.print_exc()
        else:
            print("run again with -v to see the traceback, and please report it", file=sys.stderr)
        return EXIT_ERROR


def _run(args: argparse.Namespace, command: str) -> int:
    settings = load_settings(args.settings, _overrides(args))
    # Process-wide, so here and not in the engine: else glibc's heap grows with the lines read.
    budget.return_freed_buffers(settings.chunk_bytes)
    if args.check:
        return _check(settings, quiet=args.quiet)
    pm = get_plugin_manager(settings.plugins, search_path=settings.source.parent)
    rules, alerts = _load_config(settings, pm)
    if args.watch and args.profile:
        raise ConfigError(["--profile: expected a batch run, got --watch; profile one batch run instead"])
    if args.metrics_port is not None and not args.watch:
        raise ConfigError(["--metrics-port: expected --watch, got a batch run; a batch run's figures are in "
                           "summary.json's run block"])
    if args.profile and settings.executor != "threads":
        raise ConfigError([f"--profile: profiles the threads of this process, but executor '{settings.executor}' "
                           "works on the chunks elsewhere; profile a run with --executor threads instead"])
    check_data_dir(settings.data_dir)  # a missing data folder is refused before the output folder is made
    _check_output_dir(settings)
    # One process per output folder, from before the state is read until after it is last written.
    with StateLock(state_dir(settings), settings.output_dir, command) as lock:
        lock.acquire(wait=args.wait_lock)
        with _graceful_stop() as stop, _serving(settings, args) as server:
            if args.watch:
                return _watch(settings, pm, rules, args, stop.event, alerts, lock)
            code = _batch(settings, pm, rules, args, stop, alerts if args.alerts or alerts.batch else None)
            if server is not None and stop.signum is None:
                stop.event.wait()  # the outputs stay served until Ctrl-C or SIGTERM
            return code


def _check_output_dir(settings: Settings) -> None:
    """Raise ``DataDirError`` where the output folder, or its state folder, is something else than a folder."""
    for folder, what in ((settings.output_dir, "output folder"), (state_dir(settings), "state folder")):
        if isinstance(folder, Path) and (folder.exists() or folder.is_symlink()) and not folder.is_dir():
            raise DataDirError(f"{what} '{folder}' is not a folder; move it away, or choose another output folder")


@contextlib.contextmanager
def _serving(settings: Settings, args: argparse.Namespace) -> Iterator[OutputServer | None]:
    """``--serve``: the output folder's published files over HTTP while the block runs."""
    if args.serve is None:
        yield None
        return
    from core.serve import OutputServer  # http.server: 8 ms of start-up a run without --serve need not pay

    with OutputServer(settings.output_dir, args.serve) as server:
        if not args.quiet:
            until = "while watching" if args.watch else "after the run, until Ctrl-C or SIGTERM"
            print(f"runpipeline: serving the report on {server.url} {until}", file=sys.stderr, flush=True)
        yield server


def _port(text: str) -> int:
    """An argparse type: a TCP port number, 0 for any free one."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return int(text)


def _load_config(settings: Settings, pm: Any) -> tuple[list[Any], AlertConfig]:
    """The enabled rules and the alerts' destinations; the problems of both at once."""
    problems: list[str] = []
    rules: list[Any] | None = None
    try:
        rules = load_rules(settings, rule_types(pm))
    except ConfigError as exc:
        problems += exc.problems
    try:
        alerts = load_alerts(settings, pm, None if rules is None else [rule.name for rule in rules])
    except ConfigError as exc:
        problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return rules or [], alerts


def _subcommand(argv: list[str]) -> int | None:
    """Where ``test-rule`` or ``test`` stands in ``argv``: the first word that is not an option or an option's value."""
    takes_value = {option for action in build_parser()._actions if action.nargs != 0
                   for option in action.option_strings}
    index = 0
    while index < len(argv):
        word = argv[index]
        if word in takes_value:
            index += 2
        elif word.startswith("-"):
            index += 1
        else:
            return index if word in ("test-rule", "test") else None
    return None


def _test_rule(args: argparse.Namespace) -> int:
    outcome = ruletest.run_rule(args.settings, args.rule, ruletest.read_sample(args.sample))
    print(json.dumps(outcome.as_dict(), indent=2, ensure_ascii=False) if args.json else ruletest.describe(outcome))
    return EXIT_PARTIAL if outcome.errors else EXIT_OK


def _test(args: argparse.Namespace) -> int:
    if args.files:
        paths = [Path(f) for f in args.files]
    else:
        base = Path(args.settings).resolve().parent
        paths = sorted(base.glob(ruletest.DEFAULT_TESTS))
        if not paths:
            raise ConfigError([f"no rule tests found: {base / ruletest.DEFAULT_TESTS} matches no file"])
    cases = ruletest.load_tests(paths)
    results = []
    for case in cases:
        result = ruletest.run_test(args.settings, case)
        print(ruletest.report_line(result), flush=True)
        results.append(result)
    failed = sum(not r.passed for r in results)
    print(f"{len(results)} tests: {len(results) - failed} passed, {failed} failed")
    return EXIT_ERROR if failed else EXIT_OK


def _batch(settings: Settings, pm: Any, rules: list[Any], args: argparse.Namespace, stop: _Stop,
           alerts: AlertConfig | None = None) -> int:
    profile = RunProfile() if args.profile else None
    report = _run_with_progress(settings, pm, rules, show=not args.quiet and sys.stderr.isatty(),
                               reset=args.reset, profile=profile, stop=stop.event, alerts=alerts)
    if profile is not None:
        written = profile.write(settings.output_dir)
        if not args.quiet:
            print(f"profile: {written} (and {written.with_suffix('.pstats').name})")
    # Rule and file failures were logged as they happened; summary.json lists them again.
    if not args.quiet:
        print(human_summary(report, settings))
    if stop.signum is not None:
        print(f"runpipeline: stopped by {signal.Signals(stop.signum).name}: what was read is committed and the "
              "outputs are written; run again to read the rest", file=sys.stderr)
        return 128 + stop.signum
    return EXIT_PARTIAL if report.failed else EXIT_OK


def _check(settings: Settings, quiet: bool) -> int:
    """``--check``: what a run checks at start-up, the data folder included, every problem at once.

    Stricter than a run: a rule whose setup raised is a problem, not a rule left out.
    """
    try:
        check_data_dir(settings.data_dir)  # what the run needs first, checked without reading a file
        folder_problems = []
    except DataDirError as exc:
        folder_problems = [f"{settings.source.name}: data_dir: {exc}"]
    try:
        pm = get_plugin_manager(settings.plugins, search_path=settings.source.parent)
        rules, _ = _load_config(settings, pm)
    except ConfigError as exc:
        raise ConfigError(exc.problems + folder_problems) from None
    problems = [
        f"rule '{rule.name}' (plugin '{plugin_of(rule)}'): setup raised {rule.setup_error}; a run would go on "
        "without this rule and exit 3"
        for rule in rules if rule.setup_error is not None
    ]
    if problems + folder_problems:
        raise ConfigError(problems + folder_problems)
    if not quiet:
        names = ", ".join(rule.name for rule in rules) or "none"
        print(f"{settings.source}: configuration is valid; {len(rules)} rules enabled: {names}")
    return EXIT_OK


def _watch(settings: Settings, pm: Any, rules: list[Any], args: argparse.Namespace, stop: threading.Event,
           alerts: AlertConfig | None = None, lock: StateLock | None = None) -> int:
    from core.reload import ConfigWatch, on_sighup
    from core.watch import WatchLoop

    if not args.quiet and not args.verbose:
        logging.getLogger().setLevel(logging.INFO)  # a service logs each file and a status line
    metrics = None
    if args.metrics_port is not None:
        from core.metrics import Metrics

        metrics = Metrics()
        server = metrics.serve(args.metrics_port, args.metrics_addr)
    config = ConfigWatch(settings, pm, _overrides(args), check=lambda changed: _check(changed, quiet=True))
    loop = WatchLoop(settings, pm, rules, stop, poll=args.poll, reset=args.reset, alerts=alerts, metrics=metrics,
                     config=config, lock=lock)
    try:
        with on_sighup(config.hup):  # SIGHUP: read the configuration again
            loop.run()
    finally:
        if metrics is not None:
            server.shutdown()
            server.server_close()
    logging.getLogger(__name__).info("stopped after %d commits; outputs are complete", loop.commits)
    return EXIT_OK


class _Stop:
    """A signal handler: the first SIGINT or SIGTERM asks for a graceful stop, a second one stops at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None

    def __call__(self, signum: int, _frame: object) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt  # main() says so; the last commit stands
        self.signum = signum
        self.event.set()


@contextlib.contextmanager
def _graceful_stop() -> Iterator[_Stop]:
    """SIGINT and SIGTERM set ``stop.event`` while the block runs; the earlier handlers come back after it."""
    stop = _Stop()
    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    # Command-line paths are relative to where the user stands, not to the settings file.
    executor = getattr(args, "executor", None)
    scheduler = getattr(args, "scheduler", None)
    if scheduler and executor == "threads":
        raise ConfigError([f"--scheduler {scheduler}: runs on a Dask cluster, but --executor threads was given; "
                           "hint: leave out --executor (--scheduler implies dask)"])
    return {
        "data_dir": (args.data_dir if is_url(args.data_dir) else str(Path(args.data_dir).resolve()))
        if args.data_dir else None,
        "output_dir": str(Path(args.output_dir).resolve()) if args.output_dir else None,
        "executor": {"type": "dask" if scheduler else executor, "scheduler": scheduler},
    }


def _run_with_progress(settings: Settings, pm: Any, rules: list[Any], show: bool, reset: bool,
                       profile: RunProfile | None = None, stop: threading.Event | None = None,
                       alerts: AlertConfig | None = None) -> RunReport:
    if not show:
        return run_batch(settings, pm, rules, reset=reset, profile=profile, stop=stop, alerts=alerts)
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress("[progress.description]{task.description}", *columns, transient=True) as bar:
        task = bar.add_task("reading", total=None)
        return run_batch(
            settings, pm, rules, reset=reset, profile=profile, stop=stop, alerts=alerts,
            on_progress=lambda n: bar.advance(task, n),
            on_start=lambda total: bar.update(task, total=total),
        )


def human_summary(report: RunReport, settings: Settings) -> str:
    """A few lines a person reads after a run; the full detail is in summary.json."""
    summary, totals, run = report.summary, report.summary["totals"], report.summary["run"]
    lines = [
        f"{totals['files']} files, {totals['lines']:,} lines: {totals['records']:,} records, "
        f"{totals['malformed']:,} malformed, {totals['blank']:,} blank",
    ]
    for rule in summary["rules"].values():
        if rule["key"] in summary:
            lines.append(f"{rule['key']}: {_short(summary[rule['key']])}")
    found = {name: n for name, n in report.anomalies["counts"].items() if n}
    if report.anomalies["counts"]:
        hidden = sum(rule.get("suppressed", 0) for rule in report.anomalies.get("rules", {}).values())
        lines.append(f"incidents: {sum(found.values()):,}" + (f" ({_short(found)})" if found else "")
                     + (f", {hidden:,} more suppressed" if hidden else ""))
        lines += [f"  {_incident_line(incident)}" for incident in report.anomalies["anomalies"][:SHOWN_INCIDENTS]]
    if "alerts" in summary:
        lines.append(_alerts_line(summary["alerts"]))
    for name, rule in summary["rules"].items():
        if rule.get("degraded"):  # the state outgrew its share of limits.memory_mb
            lines.append(f"{name}: {rule['degraded']}")
    lines.append(
        f"{run['elapsed_seconds']:.2f} s, {run['lines_per_second']:,} lines/s, "
        f"{run['bytes_per_second'] / 1e6:.1f} MB/s, peak RSS {run['peak_rss_mb']:.0f} MB"
    )
    lines.append(f"wrote {settings.output_dir / 'summary.json'} and anomalies.json")
    return "\n".join(lines)


def _alerts_line(alerts: dict[str, Any]) -> str:
    """``alerts: 2 sent, 1 queued (ops: RuntimeError: ...)``: what this run sent, and what waits."""
    queued = alerts["queued"]
    failing = [f"{name}: {d['last_error']}" for name, d in alerts["destinations"].items() if d["queued"]
               and d["last_error"]]
    return (f"alerts: {alerts['sent_total']:,} sent" + (f", {len(queued):,} queued" if queued else "")
            + (f" ({'; '.join(failing)})" if failing else ""))


#: Incidents the console summary shows, most severe first (anomalies.json has them all).
SHOWN_INCIDENTS = 3


def _incident_line(incident: dict[str, Any]) -> str:
    """``high silent-services: drop NotificationService 2025-07-23T15:00:00Z..16:30:00Z (0, expected 9)``."""
    start, end = incident.get("window_start"), incident.get("window_end")
    when = "" if not start else f" {start}" + (f"..{end[11:]}" if end and end[:10] == start[:10] else f"..{end}")
    kind = f"{incident['kind']} " if incident.get("kind") else ""
    subject = incident.get("subject") or {}
    what = incident["key"]
    if "message" in subject:  # a record (a duplicate): who logged what
        what = f"{subject.get('service', '')} {subject.get('user', '')} {subject['message'][:60]!r}"
    expected = incident.get("expected")
    seen = f" ({incident['observed']}" + (f", expected {expected}" if isinstance(expected, (int, float)) else "") + ")"
    return f"{incident['severity']} {incident['rule']}: {kind}{what}{when}{seen}"


def _short(value: Any) -> str:
    if isinstance(value, dict):
        items = list(value.items())
        text = ", ".join(f"{k} {_brief(v)}" for k, v in items[:8])
        return text + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
    if isinstance(value, list):
        return ", ".join(map(str, value[:10])) + (" ..." if len(value) > 10 else "")
    return str(value)


def _brief(value: Any) -> str:
    """One value of a rule's output in a line: a number with separators, a few plain values as they
    are, anything larger as how many entries it has (summary.json has them)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (list, tuple, dict)):
        plain = all(isinstance(v, (str, int, float)) for v in (value.values() if isinstance(value, dict) else value))
        if not plain or len(value) > 5:
            return f"({len(value):,} entries)"
        return ", ".join(map(str, value))
    return str(value)


def _say_problems(title: str, problems: list[str]) -> None:
    print(f"runpipeline: {title} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
