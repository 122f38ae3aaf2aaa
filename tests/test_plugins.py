"""The plugin contract: hook specs, the plugin manager factory, isolation, and the README's plugin."""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import shutil
from pathlib import Path

import pluggy
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import hookimpl, hookspecs
from core.errors import ConfigError
from core.parse import Batch
from core.plugins import DEFAULT_PLUGINS, get_plugin_manager, rule_types
from core.ruleset import load_rules
from core.runner import run_batch
from core.settings import load_settings
from plugins.hours import hour_counts
from tests.conftest import COUNTING_PLUGIN, REPO, plugged, run_plugged

HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "ohmypayments_spec")]


def test_every_hook_spec_is_documented():
    for name in HOOKS:
        spec = getattr(hookspecs, name)
        doc = inspect.getdoc(spec) or ""
        for param in inspect.signature(spec).parameters:
            assert f":param {param}:" in doc, f"{name} does not document {param}"
        assert ":returns:" in doc, name
        assert "Called" in doc, f"{name} does not say when it is called"


def test_every_hook_has_a_test():
    source = Path(__file__).read_text(encoding="utf-8")
    for name in HOOKS:
        assert f"def test_hook_{name}" in source, f"no test for hook {name}"


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_can_be_called_with_no_plugins(name):
    pm = pluggy.PluginManager(hookspecs.NAMESPACE)
    pm.add_hookspecs(hookspecs)
    params = inspect.signature(getattr(hookspecs, name)).parameters
    assert getattr(pm.hook, name)(**{p: None for p in params}) == []


def test_core_never_imports_plugins():
    for path in (REPO / "core").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n == "plugins" or n.startswith("plugins.") for n in names), path


def test_builtins_register_through_the_same_path(pm):
    for dotted in DEFAULT_PLUGINS:
        assert pm.has_plugin(dotted)
    assert {"count_by", "top_k", "peak_hours"} <= set(rule_types(pm))


def test_misspelt_hook_fails_loudly(tmp_path, monkeypatch):
    (tmp_path / "typo_plugin.py").write_text(
        "from core import hookimpl\n@hookimpl\ndef register_rule_type(register):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        get_plugin_manager(["typo_plugin"], load_entrypoints=False)
    assert "typo_plugin" in str(caught.value) and "register_rule_type" in str(caught.value)


def test_plugin_that_fails_to_import_is_named(tmp_path, monkeypatch):
    (tmp_path / "exploding.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        get_plugin_manager(["exploding", "no_such_module_anywhere"], load_entrypoints=False)
    text = str(caught.value)
    assert "plugin 'exploding' failed to load: RuntimeError: boom at import" in text
    assert "plugin 'no_such_module_anywhere' failed to load: ModuleNotFoundError" in text


def test_entry_points_are_loaded_only_when_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(pluggy.PluginManager, "load_setuptools_entrypoints", lambda self, group: calls.append(group))
    get_plugin_manager(load_entrypoints=False)
    assert calls == []
    get_plugin_manager()
    assert calls == [hookspecs.NAMESPACE]


def test_a_rule_type_registered_twice_by_two_plugins_is_an_error(pm):
    from plugins.top import TopK

    class Impostor(TopK):
        pass

    class Plugin:
        @hookimpl
        def register_rule_types(self, register):
            register(Impostor)

    with plugged(pm, {"impostor": Plugin()}), pytest.raises(ConfigError, match="rule type 'top_k' is registered twice"):
        rule_types(pm)


class Recorder:
    """A test plugin that writes down every lifecycle hook call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    @hookimpl
    def before_run(self, paths, settings):
        self.calls.append(("before_run", tuple(paths), settings["workers"]))

    @hookimpl
    def before_file(self, path):
        self.calls.append(("before_file", path))

    @hookimpl
    def after_file(self, path, stats):
        self.calls.append(("after_file", path, stats.lines, stats.records, stats.malformed))

    @hookimpl
    def on_error(self, error, path, rule):
        self.calls.append(("on_error", path, rule, type(error).__name__))

    @hookimpl
    def after_run(self, summary, anomalies):
        self.calls.append(("after_run", summary["totals"]["records"], anomalies))


@pytest.fixture
def recorded_run(workspace, pm):
    """Run the shipped rules in-process over two files with a Recorder registered."""
    workspace.write("a.log", "2025-07-22T12:00:00Z INFO S u1 ok\nnot a record\n")
    workspace.write("b.log", "2025-07-22T13:00:00Z FAILURE S u2 bad\n")
    recorder = Recorder()
    run_plugged(workspace.settings, pm, {"recorder": recorder})
    return recorder.calls


def test_hook_register_rule_types(pm):
    class Plugin:
        @hookimpl
        def register_rule_types(self, register):
            register(FailOnUpdate)

    with plugged(pm, {"fail-on-update": Plugin()}):
        assert rule_types(pm)["fail_on_update"] is FailOnUpdate


def test_hook_before_run(recorded_run):
    assert recorded_run[0] == ("before_run", ("a.log", "b.log"), os.cpu_count())


def test_hook_before_file(recorded_run):
    assert [c for c in recorded_run if c[0] == "before_file"] == [("before_file", "a.log"), ("before_file", "b.log")]


def test_hook_after_file(recorded_run):
    after = [c for c in recorded_run if c[0] == "after_file"]
    assert after == [("after_file", "a.log", 2, 1, 1), ("after_file", "b.log", 1, 1, 0)]


def test_hook_after_run(recorded_run):
    assert recorded_run[-1] == ("after_run", 2, [])


def test_hook_register_output_writers(workspace, pm):
    class Lines:
        name = "lines.txt"
        min_interval = 0

        def render(self, summary, anomalies, *, watching):
            return f"{summary['totals']['lines']} lines, {len(anomalies['anomalies'])} incidents"

    class Registers:
        @hookimpl
        def register_output_writers(self, register):
            register(Lines())

    workspace.write("a.log", "2025-07-22T12:00:00Z INFO S u1 ok\n")
    report = run_plugged(workspace.settings, pm, {"lines-writer": Registers()})
    assert not report.failed
    assert (workspace.output / "lines.txt").read_text(encoding="utf-8") == "1 lines, 0 incidents"


def test_hook_register_alerters(workspace, pm):
    from core.alertconfig import Alerter, alerter_types, load_alerts

    sent = []

    class Collect(Alerter):
        type_name = "collect"
        params_schema = {"required": ["box"], "properties": {"box": {"type": "string"}}}

        def setup(self, box):
            self.box = box

        def send(self, message):
            sent.append((self.box, [incident["id"] for incident in message.incidents]))

    class Registers:
        @hookimpl
        def register_alerters(self, register):
            register(Collect)

    workspace.write("a.log", "2025-07-22T12:00:00Z CHARGEBACK S u1 disputed\n")
    workspace.configure("alerts: {destinations: [{type: collect, box: inbox}]}\n")
    with plugged(pm, {"collecting-alerter": Registers()}):
        assert alerter_types(pm)["collect"].plugin == "collecting-alerter"
        settings = load_settings(workspace.settings)
        rules = load_rules(settings, rule_types(pm))
        run_batch(settings, pm, rules, alerts=load_alerts(settings, pm, [r.name for r in rules]))
    assert sent == [("inbox", ["unknown-statuses:CHARGEBACK"])]


#: The README's example of an input source plugin (section "Input sources"), word for word.
BZIP2_PLUGIN = '''\
import bz2

from core import hookimpl
from core.sources import Compressed, FileStream, open_regular


class Bzip2File(Compressed):
    """A bzip2-compressed log (``app.log.bz2``), read whole as one stream."""

    name = "bzip2"
    pattern = "*.bz2"

    def stream(self, path):
        return FileStream(path, bz2.BZ2File(open_regular(path)), "bzip2")


@hookimpl
def register_sources(register):
    register(Bzip2File())
'''


def test_hook_register_sources(workspace, pm):
    import bz2

    namespace: dict = {}
    exec(compile(BZIP2_PLUGIN, "omp_bzip2.py", "exec"), namespace)  # noqa: S102  (the README's plugin)
    text = "".join(f"2025-07-22T12:00:{n:02d}Z INFO S u{n} ok\n" for n in range(40)) + "not a line\n"
    text += "2025-07-22T12:01:00Z WEIRD S u1 an unknown status\n"
    workspace.write("a.log.bz2", bz2.compress(text.encode()))
    workspace.write("cut.log.bz2", bz2.compress(text.encode())[:60])
    workspace.configure('include: ["*.log", "*.log.bz2"]\n')
    plugin = type("Bzip2Plugin", (), {"register_sources": staticmethod(namespace["register_sources"])})
    report = run_plugged(workspace.settings, pm, {"bzip2-source": plugin})
    files = {f["path"]: f for f in report.summary["files"]}
    assert files["a.log.bz2"]["lines"] == 42 and files["a.log.bz2"]["malformed"] == 1
    [unknown] = [a for a in report.anomalies["anomalies"] if a["rule"] == "unknown-statuses"]
    assert unknown["samples"] == [{"location": "a.log.bz2:42",
                                   "text": "2025-07-22T12:01:00Z WEIRD S u1 an unknown status"}]
    assert report.summary["malformed_samples"][0] == {"file": "a.log.bz2", "line": 41, "reason": "missing_fields",
                                                      "text": "not a line"}
    [error] = report.summary["file_errors"]
    assert error["file"] == "cut.log.bz2" and "is not a complete bzip2 stream" in error["error"]


def test_hook_on_error(workspace, pm):
    workspace.write("a.log", "2025-07-22T12:00:00Z INFO S u1 ok\n")
    os.symlink(workspace.root / "nowhere.log", workspace.data / "gone.log")
    recorder = Recorder()
    run_plugged(workspace.settings, pm, {"recorder": recorder})
    assert ("on_error", "gone.log", None, "FileNotFoundError") in recorder.calls


# -- a rule that raises is isolated ----------------------------------------------------------------

from core import Result, Rule  # noqa: E402


class FailOnUpdate(Rule):
    type_name = "fail_on_update"
    params_schema = {"type": "object", "additionalProperties": False, "properties": {"when": {"type": "string"}}}

    def setup(self, when="CRASH"):
        self.when = when
        self.seen = 0

    def update(self, batch):
        if (batch.frame["status"] == self.when).any():
            raise ValueError(f"status {self.when} is not allowed here")
        self.seen += len(batch)

    def merge(self, other):
        self.seen += other.seen

    def result(self):
        return Result(self.seen)


FAILING_PLUGIN = '''
from tests.test_plugins import FailOnUpdate
from core import hookimpl

@hookimpl
def register_rule_types(register):
    register(FailOnUpdate)
'''


def test_a_failing_rule_is_isolated_and_reported(workspace):
    (workspace.root / "failing.py").write_text(FAILING_PLUGIN)
    workspace.rules_file("failing.yaml", "- {name: fragile, type: fail_on_update, when: CRASH}\n")
    workspace.configure(
        "plugins: [failing]\nrules: [payment-statuses, fragile, top-users]\n"
    )
    workspace.write("a.log", "2025-07-22T12:00:00Z INFO S u1 ok\n2025-07-22T12:00:01Z CRASH S u2 x\n")
    workspace.write("b.log", "2025-07-22T13:00:00Z INFO S u1 fine\n")
    result = workspace.run()
    assert result.returncode == 3, result.stderr
    assert ("rule 'fragile' (plugin 'failing') failed in update on a.log: ValueError: status CRASH is not "
            "allowed here; the run goes on without this rule") in result.stderr
    assert "Traceback" not in result.stderr
    summary = workspace.summary()
    assert summary["rule_errors"] == [{"rule": "fragile", "plugin": "failing", "phase": "update", "file": "a.log",
                                       "error": "ValueError: status CRASH is not allowed here"}]
    assert "fragile" not in summary
    assert summary["payment_statuses"] == {"INFO": 2, "CRASH": 1}
    assert summary["top_users"] == ["u1", "u2"]


FRAGILE = '''\
"""A rule type that raises in the phase its rule names (``fail_in``); hooks are appended per test."""
from core import Result, Rule, hookimpl


class Fragile(Rule):
    type_name = "fragile"
    params_schema = {"type": "object", "additionalProperties": False, "properties": {"fail_in": {"type": "string"}}}

    def setup(self, fail_in=""):
        self.fail_in = fail_in
        self.records = 0
        self._fail("setup")

    def _fail(self, phase):
        if self.fail_in == phase:
            raise RuntimeError(f"broken in {phase}")

    def update(self, batch):
        self._fail("update")
        self.records += len(batch)

    def merge(self, other):
        self._fail("merge")
        self.records += other.records

    def seal(self):
        self._fail("seal")

    def result(self):
        self._fail("result")
        return Result(self.records)


@hookimpl
def register_rule_types(register):
    register(Fragile)
'''

HOOK_THAT_RAISES = '''

@hookimpl
def {hook}({args}):
    raise RuntimeError("broken in {hook}")
'''

TWO_FILES = {"a.log": "2025-07-22T12:00:00Z INFO S u1 ok\n2025-07-22T12:00:01Z WEIRD S u2 x\n",
             "b.log": "2025-07-22T13:00:00Z INFO S u1 fine\n"}


def fragile_workspace(workspace, module: str, fail_in: str = "", hook: str = "", args: str = "") -> None:
    """A plugin ``module`` beside settings.yaml, its rule enabled between two shipped ones, two data files."""
    source = FRAGILE + (HOOK_THAT_RAISES.format(hook=hook, args=args) if hook else "")
    (workspace.root / f"{module}.py").write_text(source)
    workspace.rules_file("fragile.yaml", f"- {{name: fragile, type: fragile, fail_in: '{fail_in}'}}\n")
    workspace.configure(f"plugins: [{module}]\nrules: [payment-statuses, fragile, unknown-statuses]\n")
    for name, text in TWO_FILES.items():
        workspace.write(name, text)


def assert_other_rules_written(workspace) -> dict:
    summary = workspace.summary()
    assert summary["payment_statuses"] == {"INFO": 2, "WEIRD": 1}
    assert summary["totals"]["records"] == 3
    anomalies = json.loads((workspace.output / "anomalies.json").read_text())
    assert [(a["rule"], a["key"]) for a in anomalies["anomalies"]] == [("unknown-statuses", "WEIRD")]
    return summary


@pytest.mark.parametrize("phase, file", [
    ("setup", None), ("update", "a.log"), ("merge", "a.log"), ("seal", None), ("result", None),
])
def test_a_rule_that_raises_in_any_phase_is_failed_by_name_and_the_others_are_written(
        workspace, capsys, caplog, phase, file):
    module = f"fragile_in_{phase}"
    fragile_workspace(workspace, module, fail_in=phase)
    assert workspace.main() == 3
    err = capsys.readouterr().err
    assert "internal error" not in err and "Traceback" not in err
    summary = assert_other_rules_written(workspace)
    assert "fragile" not in summary
    assert summary["rule_errors"] == [{"rule": "fragile", "plugin": module, "phase": phase, "file": file,
                                       "error": f"RuntimeError: broken in {phase}"}]
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(f"rule 'fragile' (plugin '{module}') failed in {phase}" in m for m in logged), logged


def test_check_reports_a_rule_whose_setup_raises(workspace, capsys):
    fragile_workspace(workspace, "fragile_setup_check", fail_in="setup")
    assert workspace.main("--check") == 2
    assert ("rule 'fragile' (plugin 'fragile_setup_check'): setup raised RuntimeError: broken in setup; a run would "
            "go on without this rule and exit 3") in capsys.readouterr().err
    assert not workspace.output.exists()


@pytest.mark.parametrize("hook, args, file", [
    ("before_run", "paths, settings", None), ("before_file", "path", "a.log"), ("after_file", "path, stats", "a.log"),
])
def test_a_hook_that_raises_is_named_not_called_again_and_the_rules_are_written(
        workspace, capsys, caplog, hook, args, file):
    module = f"fragile_{hook}"
    fragile_workspace(workspace, module, hook=hook, args=args)
    assert workspace.main() == 3
    assert "internal error" not in capsys.readouterr().err
    summary = assert_other_rules_written(workspace)
    assert summary["fragile"] == 3  # the plugin's rule is not the hook: it goes on
    # Once only, though the hook would have raised again on b.log.
    assert summary["rule_errors"] == [{"rule": None, "plugin": module, "phase": hook, "file": file,
                                       "error": f"RuntimeError: broken in {hook}"}]
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(f"plugin '{module}' failed in {hook}" in m for m in logged), logged


def test_a_hook_that_raises_costs_only_its_own_plugin_s_hooks(workspace, pm):
    class Raising:
        @hookimpl
        def after_file(self, path, stats):
            raise OSError(f"cannot notify about {path}")

    for name, text in TWO_FILES.items():
        workspace.write(name, text)
    recorder, raising = Recorder(), Raising()
    # raising registered last: pluggy calls it first
    report = run_plugged(workspace.settings, pm, {"recorder": recorder, "raising": raising})
    assert [c[1] for c in recorder.calls if c[0] == "after_file"] == ["a.log", "b.log"]
    assert ("on_error", "a.log", None, "PluginFailed") in recorder.calls
    assert report.failed and report.summary["rule_errors"] == [
        {"rule": None, "plugin": "raising", "phase": "after_file", "file": "a.log",
         "error": "OSError: cannot notify about a.log"}
    ]


def test_an_on_error_hook_that_raises_is_named_beside_the_file_error(workspace, capsys):
    fragile_workspace(workspace, "fragile_on_error", hook="on_error", args="error, path, rule")
    os.symlink(workspace.root / "nowhere.log", workspace.data / "gone.log")
    assert workspace.main() == 3
    assert "internal error" not in capsys.readouterr().err
    summary = assert_other_rules_written(workspace)
    assert [e["file"] for e in summary["file_errors"]] == ["gone.log"]
    assert summary["rule_errors"] == [{"rule": None, "plugin": "fragile_on_error", "phase": "on_error",
                                       "file": "gone.log", "error": "RuntimeError: broken in on_error"}]


def test_an_after_run_hook_that_raises_gives_exit_3_once_the_outputs_are_written(workspace, capsys, caplog):
    fragile_workspace(workspace, "fragile_after_run", hook="after_run", args="summary, anomalies")
    assert workspace.main() == 3
    assert "internal error" not in capsys.readouterr().err
    assert assert_other_rules_written(workspace)["fragile"] == 3
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("plugin 'fragile_after_run' failed in after_run" in m for m in logged), logged


# -- what may be imported from the settings folder ----------------------------------------------


def test_a_folder_beside_settings_never_stands_in_for_a_library(workspace, monkeypatch):
    # A run imports watchdog only for --watch, after the plugins are loaded: a folder of that name
    # beside settings.yaml must not be what it gets, whatever plugins lists. `python -m` (how the
    # tests start the command) would put the current folder first on sys.path by itself; the
    # installed `runpipeline` script does not, and PYTHONSAFEPATH makes `python -m` do the same.
    monkeypatch.setenv("PYTHONSAFEPATH", "1")
    fake = workspace.root / "watchdog"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise RuntimeError('the watchdog/ beside settings.yaml was imported')\n")
    (workspace.root / "beside.py").write_text(COUNTING_PLUGIN)
    workspace.write("a.log", "2025-07-22T12:00:00Z INFO S u1 ok\n")
    from tests.test_watch import Watcher

    for text in ("plugins: []\nrules: [payment-statuses]\n",
                 "plugins: [beside]\nrules: [payment-statuses, record-count]\n"):
        workspace.configure(text)
        if "beside" in text:
            workspace.rules_file("beside.yaml", "- {name: record-count, type: count_records}\n")
        shutil.rmtree(workspace.output, ignore_errors=True)  # so that the first summary.json is this watcher's
        with Watcher(workspace) as watcher:
            summary = watcher.wait_started()
            assert summary["payment_statuses"] == {"INFO": 1}
            assert watcher.stop() == 0, watcher.log
        assert "watchdog/ beside settings.yaml was imported" not in watcher.log
    assert summary["record_count"] == 1





@pytest.mark.parametrize("name, what", [
    ("os", "a module of Python's standard library"), ("json.decoder", "a module of Python's standard library"),
    ("yaml", "a module of a library Oh My Payments depends on (PyYAML)"),
    ("watchdog.observers", "a module of a library Oh My Payments depends on (watchdog)"),
    ("attr", "a module of a library Oh My Payments depends on (attrs)"),  # one of jsonschema's
    ("core", "Oh My Payments' own engine"),
])
def test_a_library_module_named_as_a_plugin_is_refused(workspace, capsys, name, what):
    workspace.configure(f"plugins: [{name}]\n")
    assert workspace.main("--check") == 2
    err = capsys.readouterr().err
    assert f"plugin '{name}' is refused: it is {what}, not a plugin" in err
    assert not workspace.output.exists()


def test_an_installed_plugin_package_still_loads(workspace, tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    (site / "omp_installed_rules").mkdir(parents=True)
    (site / "omp_installed_rules" / "__init__.py").write_text(COUNTING_PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    workspace.rules_file("count.yaml", "- {name: record-count, type: count_records}\n")
    workspace.configure("plugins: [omp_installed_rules]\nrules: [payment-statuses, record-count]\n")
    workspace.write("a.log", "2025-07-22T12:00:00Z INFO S u1 ok\n2025-07-22T12:00:01Z INFO S u2 ok\n")
    assert workspace.main() == 0, capsys.readouterr().err
    assert workspace.summary()["record_count"] == 2


def test_a_plugin_package_beside_settings_loads_with_its_own_modules(workspace, capsys):
    package = workspace.root / "omp_beside_pkg"
    package.mkdir()
    (package / "rules.py").write_text(COUNTING_PLUGIN.replace("@hookimpl\ndef", "def"))
    (package / "__init__.py").write_text(
        "from core import hookimpl\nfrom omp_beside_pkg.rules import CountRecords\n"
        "\n@hookimpl\ndef register_rule_types(register):\n    register(CountRecords)\n")
    workspace.rules_file("count.yaml", "- {name: record-count, type: count_records}\n")
    workspace.configure("plugins: [omp_beside_pkg]\nrules: [record-count]\n")
    workspace.write("a.log", "2025-07-22T12:00:00Z INFO S u1 ok\n")
    assert workspace.main() == 0, capsys.readouterr().err
    assert workspace.summary()["record_count"] == 1


# -- the README's example plugin works as printed --------------------------------------------------


def _readme_block(after_heading: str, language: str, nth: int = 0) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(after_heading, 1)[1]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)[nth]


def test_readme_example_plugin_works_as_printed(workspace):
    (workspace.root / "failure_rate.py").write_text(_readme_block("## Write a plugin", "python"))
    workspace.rules_file("failure.yaml", _readme_block("## Write a plugin", "yaml", 0))
    workspace.configure(_readme_block("## Write a plugin", "yaml", 1))
    workspace.write(
        "pay.log",
        """\
        2025-07-22T12:00:00Z SUCCESS PaymentService u1 paid
        2025-07-22T12:00:01Z FAILURE PaymentService u2 declined
        2025-07-22T12:00:02Z ERROR PaymentService u3 timeout
        2025-07-22T12:00:03Z SUCCESS PaymentService u4 paid
        2025-07-22T12:00:04Z INFO AuthenticationService u1 login
        2025-07-22T12:00:05Z WARN AuthenticationService u1 slow login
        2025-07-22T12:00:06Z ERROR RefundService u9 failed
        """,
    )
    result = workspace.run()
    assert result.returncode == 0, result.stderr
    summary = workspace.summary()
    assert summary["failure_rate"] == {"AuthenticationService": 0.0, "PaymentService": 0.5, "RefundService": 1.0}
    assert summary["rules"]["failure-rate"] == {"type": "failure_rate", "key": "failure_rate", "degraded": None}


def test_readme_example_plugin_rejects_bad_parameters(workspace):
    (workspace.root / "failure_rate.py").write_text(_readme_block("## Write a plugin", "python"))
    workspace.rules_file("failure.yaml", "- {name: failure-rate, type: failure_rate, statuses: []}\n")
    workspace.configure(_readme_block("## Write a plugin", "yaml", 1))
    result = workspace.run("--check")
    assert result.returncode == 2
    assert "rules/failure.yaml: rule 'failure-rate': statuses:" in result.stderr


def test_readme_detector_plugin_works_as_printed(workspace):
    heading = "### A detector plugin"
    (workspace.root / "banned_users.py").write_text(_readme_block(heading, "python"))
    workspace.rules_file("banned.yaml", _readme_block(heading, "yaml"))
    workspace.configure("plugins: [banned_users]\nrules: [payment-statuses, banned-users]\n")
    workspace.write("b.log", "2025-07-22T12:00:05Z INFO S trudy x\n2025-07-22T12:00:01Z INFO S alice y\n")
    workspace.write("a.log", "2025-07-22T12:00:09Z INFO S mallory z\n2025-07-22T12:00:03Z FAILURE S trudy w\n")
    result = workspace.run()
    assert result.returncode == 0, result.stderr
    anomalies = json.loads((workspace.output / "anomalies.json").read_text())
    assert anomalies["counts"] == {"banned-users": 2}
    assert [(a["id"], a["severity"], a["count"], a["samples"], a["first_seen"], a["subject"])
            for a in anomalies["anomalies"]] == [
        ("banned-users:mallory", "high", 1, [{"location": "a.log:1", "text": "2025-07-22T12:00:09Z INFO S mallory z"}],
         "2025-07-22T12:00:09Z", {"user": "mallory"}),
        ("banned-users:trudy", "high", 2, [{"location": "a.log:2", "text": "2025-07-22T12:00:03Z FAILURE S trudy w"},
                                           {"location": "b.log:1", "text": "2025-07-22T12:00:05Z INFO S trudy x"}],
         "2025-07-22T12:00:03Z", {"user": "trudy"}),
    ]


def test_hour_counts_agree_with_polars_over_the_whole_range():
    first, last = -62_135_596_800_000_000, 253_402_300_799_999_999  # 0001-01-01 and 9999-12-31, in us

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.integers(first, last), min_size=1, max_size=50))
    def check(micros):
        ts = pl.Series("ts", micros, pl.Int64).cast(pl.Datetime("us", "UTC"))
        expected = dict(ts.dt.hour().value_counts().iter_rows())
        assert hour_counts(Batch("x.log", pl.DataFrame({"ts": ts}))) == [expected.get(hour, 0) for hour in range(24)]

    check()


MEETING = '''\
"""Two rules whose results wait for each other: they finish only if the engine reads them side by side."""
import threading

from core import Result, Rule, hookimpl

MET = threading.Barrier(2, timeout=10)


class Meeting(Rule):
    type_name = "meeting"

    def setup(self):
        self.records = 0

    def update(self, batch):
        self.records += len(batch)

    def merge(self, other):
        self.records += other.records

    def result(self):
        MET.wait()  # raises BrokenBarrierError after 10 s alone: the rule is then failed by name
        return Result({"records": self.records, "thread": threading.current_thread().name})


@hookimpl
def register_rule_types(register):
    register(Meeting)
'''


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="results run side by side only with 2 CPUs or more")
def test_the_rules_results_are_read_side_by_side_on_threads_of_their_own(workspace):
    (workspace.root / "meeting.py").write_text(MEETING)
    workspace.rules_file("meeting.yaml", "- {name: first, type: meeting}\n- {name: second, type: meeting}\n")
    workspace.configure("plugins: [meeting]\nrules: [payment-statuses, first, second]\n")
    for name, text in TWO_FILES.items():
        workspace.write(name, text)
    assert workspace.main() == 0
    summary = workspace.summary()
    assert summary["rule_errors"] == []
    assert summary["first"]["records"] == summary["second"]["records"] == 3
    assert summary["first"]["thread"] != summary["second"]["thread"]
