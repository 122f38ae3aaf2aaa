"""``runpipeline`` as a user meets it: options, exit codes and the exact wording of its messages.

Every test runs the real command in a subprocess over real files in a temp workspace.
"""

from __future__ import annotations

import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from core import __version__
from core.plugins import get_plugin_manager, rule_types
from tests.conftest import COUNTING_PLUGIN

REPO = Path(__file__).resolve().parent.parent

RECORDS = (
    "2025-07-22T10:00:00Z SUCCESS checkout alice paid 12.50 EUR\n"
    "2025-07-22T10:05:00Z FAILED checkout bob card declined\n"
    "2025-07-22T11:00:00Z SUCCESS refunds alice\n"
)


def assert_clean_failure(result, workspace, code: int = 2) -> None:
    """A refused run: the exit code, a message on stderr only, no traceback, nothing written."""
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert not workspace.output.exists()


def plugin_dir(root: Path, name: str, source: str) -> dict[str, str]:
    """Write ``<root>/plugins_extra/<name>.py`` and return the env that puts it on PYTHONPATH."""
    folder = root / "plugins_extra"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return {"PYTHONPATH": f"{REPO}{os.pathsep}{folder}"}


# -- --version, --help, --check ---------------------------------------------------------------


def test_version_prints_name_and_version(workspace):
    result = workspace.run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"runpipeline (Oh My Payments) {__version__}"
    assert not workspace.output.exists()


def test_help_mentions_every_option_and_exit_code(workspace):
    result = workspace.run("--help")
    assert result.returncode == 0
    text = result.stdout
    for option in ("--settings", "--data-dir", "--output-dir", "--check", "--version", "-v, --verbose",
                   "-q, --quiet", "--profile", "--watch", "--poll", "--reset", "--wait-lock"):
        assert option in text, option
    assert "exit codes:" in text
    for code, words in [("0", "outputs written"), ("1", "could not finish"), ("2", "configuration problem"),
                        ("3", "could not be read"), ("75", "holds the output folder"), ("130", "interrupted"),
                        ("143", "stopped by SIGTERM")]:
        assert re.search(rf"^\s+{code}\s+.*{words}", text, re.MULTILINE), code
    assert not workspace.output.exists()


def test_check_accepts_the_shipped_configuration(workspace):
    enabled = yaml.safe_load(workspace.settings.read_text())["rules"]
    result = workspace.run("--check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"{workspace.settings.resolve()}: configuration is valid; {len(enabled)} rules enabled: "
        + ", ".join(enabled)
    )
    assert "Traceback" not in result.stderr
    assert not workspace.output.exists()


def test_check_accepts_the_repository_configuration(workspace):
    # The settings.yaml and rules/ as committed, checked in place: --check never reads data or writes.
    result = workspace.run("--settings", str(REPO / "settings.yaml"), "--check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{REPO / 'settings.yaml'}: configuration is valid;")


def test_check_quiet_prints_nothing(workspace):
    result = workspace.run("--check", "-q")
    assert result.returncode == 0
    assert result.stdout == ""
    assert result.stderr == ""


@pytest.mark.parametrize(
    "settings, expected",
    [
        ("workers: many\n", "settings.yaml: workers: expected integer >= 0"),
        ("rules: [payment-statuses, no-such-rule]\n", "unknown rule 'no-such-rule'"),
        ("plugins: [no_such_plugin_module]\n", "plugin 'no_such_plugin_module' failed to load"),
    ],
)
def test_check_refuses_a_broken_configuration(workspace, settings, expected):
    workspace.write("a.log", RECORDS)
    workspace.configure(settings)
    result = workspace.run("--check")
    assert_clean_failure(result, workspace)
    assert expected in result.stderr


# -- what --check used to let through (each exits 2 with one clear line, run and --check alike) -----


def check_problems(workspace, capsys, *args: str) -> list[str]:
    """Run the command in-process with ``args`` (``--check`` by default); the problems it lists, after exit 2."""
    code = workspace.main(*args) if args else workspace.main("--check")
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert not workspace.output.exists()
    return [line.strip() for line in err.splitlines()[1:]] if "problem" in err.splitlines()[0] else [err.strip()]


def test_a_missing_data_folder_fails_the_check_as_it_fails_the_run(workspace, capsys):
    workspace.configure("data_dir: no-such-folder\n")
    missing = workspace.root.resolve() / "no-such-folder"
    assert check_problems(workspace, capsys, "-q") == [f"runpipeline: data folder '{missing}' does not exist"]
    assert check_problems(workspace, capsys) == [f"settings.yaml: data_dir: data folder '{missing}' does not exist"]
    # With the other problems, all at once.
    workspace.configure("rules: [no-such-rule]\n")
    problems = check_problems(workspace, capsys)
    assert len(problems) == 2 and problems[0].startswith("settings.yaml: rules: unknown rule 'no-such-rule'")
    assert problems[1] == f"settings.yaml: data_dir: data folder '{missing}' does not exist"


def test_a_rule_file_listed_by_name_must_exist(workspace, capsys):
    workspace.configure("rule_files: [rules/summary.yaml, rules/anomalies.yaml, rules/extra.yaml, rules/*.yml]\n")
    assert check_problems(workspace, capsys) == [
        "settings.yaml: rule_files: 'rules/extra.yaml': no such file; hint: fix the name, or remove it from "
        "rule_files (a pattern such as rules/*.yaml may match nothing)"
    ]


def test_a_plugin_that_registers_nothing_is_refused(workspace, capsys, tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    # The decorator forgotten: a function of the hook's name that pluggy never sees.
    (folder / "omp_forgot_hookimpl.py").write_text("def register_rule_types(register):\n    pass\n")
    (folder / "omp_registers_no_type.py").write_text(
        "from core import hookimpl\n\n@hookimpl\ndef register_rule_types(register):\n    pass\n")
    monkeypatch.syspath_prepend(str(folder))
    workspace.configure("plugins: [omp_forgot_hookimpl, omp_registers_no_type]\n")
    assert check_problems(workspace, capsys) == [
        "plugin 'omp_forgot_hookimpl' registers nothing: it implements no hook; "
        "hint: mark each hook function with @core.hookimpl",
        "plugin 'omp_registers_no_type' registers nothing: its register_rule_types "
        "registered no rule type and it implements no other hook; hint: call register(YourRule) in it",
    ]


@pytest.mark.parametrize("field, value", [("timeframe", "10"), ("retention", "3600"), ("realert", "60")])
def test_a_duration_needs_its_unit(workspace, capsys, field, value):
    workspace.rules_file("extra.yaml", f"- {{name: spikes-again, type: error_spike, {field}: {value}}}\n")
    assert check_problems(workspace, capsys) == [
        f"rules/extra.yaml: rule 'spikes-again': {field}: expected a duration: a whole number and its unit, "
        f"s, m, h or d (90s, 10m, 1h, 1d), got {value}"
    ]


def test_a_yaml_error_in_a_rule_file_is_one_problem_not_a_list_of_unknown_rules(workspace, capsys):
    path = workspace.root / "rules" / "anomalies.yaml"
    path.write_text(path.read_text().replace("timeframe: 10m", "timeframe: [10m", 1))
    workspace.configure("rules: [payment-statuses, error-spikes, silent-services, no-such-rule]\n")
    problems = check_problems(workspace, capsys)
    assert len(problems) == 2, problems
    assert problems[0].startswith("rules/anomalies.yaml: not valid YAML: line ")
    assert problems[1].startswith("settings.yaml: rules: unknown rule 'no-such-rule'")


# -- settings problems -----------------------------------------------------------------------


def test_missing_settings_file(workspace):
    result = workspace.run("--settings", "nowhere/settings.yaml")
    assert_clean_failure(result, workspace)
    assert "nowhere/settings.yaml: settings file not found" in result.stderr


def test_empty_settings_file(workspace):
    workspace.settings.write_text("", encoding="utf-8")
    result = workspace.run()
    assert_clean_failure(result, workspace)
    assert "settings.yaml: settings file is empty" in result.stderr


def test_settings_file_that_is_not_yaml(workspace):
    workspace.settings.write_text("data_dir: [unclosed\n", encoding="utf-8")
    result = workspace.run()
    assert_clean_failure(result, workspace)
    assert "settings.yaml: not valid YAML: line 2, column 1:" in result.stderr


def test_settings_file_holding_a_list(workspace):
    workspace.settings.write_text("- data\n- output\n", encoding="utf-8")
    result = workspace.run()
    assert_clean_failure(result, workspace)
    assert "settings.yaml: expected a mapping of settings, got list" in result.stderr


@pytest.mark.parametrize(
    "settings, expected",
    [
        ("workers: many\n", ["settings.yaml: workers: expected integer >= 0", "got 'many'"]),
        ('limits: {max_line_bytes: "big"}\n',
         ["settings.yaml: limits.max_line_bytes: expected integer >= 64", "got 'big'"]),
        ("recursive: sometimes\n", ["settings.yaml: recursive: expected true or false, got 'sometimes'"]),
        ("include: '*.log'\n", ["settings.yaml: include: expected list, got '*.log'"]),
        ("chunk_bytes: 2048\nlimits: {max_line_bytes: 4096}\n",
         ["settings.yaml: chunk_bytes: expected more than limits.max_line_bytes (4096), got 2048"]),
        ("limits: {max_lines: 5}\n", ["settings.yaml: limits: unknown field 'max_lines'"]),
    ],
)
def test_wrongly_typed_setting(workspace, settings, expected):
    workspace.configure(settings)
    result = workspace.run()
    assert_clean_failure(result, workspace)
    for words in expected:
        assert words in result.stderr


def test_unknown_setting_suggests_the_right_one(workspace):
    workspace.configure("worker: 2\n")
    result = workspace.run()
    assert_clean_failure(result, workspace)
    assert "settings.yaml: unknown field 'worker' (did you mean 'workers'?)" in result.stderr


def test_every_settings_problem_is_reported_at_once(workspace):
    workspace.configure("""\
        worker: 2
        workers: many
        limits: {max_line_bytes: "big"}
    """)
    result = workspace.run()
    assert_clean_failure(result, workspace)
    assert "configuration error (3 problems)" in result.stderr
    assert "unknown field 'worker' (did you mean 'workers'?)" in result.stderr
    assert "workers: expected integer >= 0 <= 256, got 'many'" in result.stderr
    assert "limits.max_line_bytes: expected integer >= 64 <= 268435456, got 'big'" in result.stderr


# -- rule problems ---------------------------------------------------------------------------


def only_rule_file(workspace, name: str, text: str, enabled: list[str]) -> None:
    """Use one rule file and enable the named rules."""
    workspace.rules_file(name, text)
    workspace.configure(f"rule_files: [rules/{name}]\nrules: [{', '.join(enabled)}]\n")


def test_rule_with_bad_parameter_value(workspace):
    only_rule_file(workspace, "top.yaml", "- {name: top-users, type: top_k, field: user, limit: 10x}\n",
                   ["top-users"])
    result = workspace.run()
    assert_clean_failure(result, workspace)
    assert "rules/top.yaml: rule 'top-users': limit: expected integer >= 1" in result.stderr
    assert "got '10x'" in result.stderr


def test_rule_with_a_field_records_do_not_have(workspace):
    only_rule_file(workspace, "top.yaml", "- {name: top-amounts, type: top_k, field: amount}\n", ["top-amounts"])
    result = workspace.run()
    assert_clean_failure(result, workspace)
    assert ("rules/top.yaml: rule 'top-amounts': field: expected one of 'status', 'service', 'user', "
            "got 'amount'") in result.stderr


def test_unknown_rule_type_lists_the_known_ones(workspace):
    only_rule_file(workspace, "top.yaml", "- {name: top-users, type: topk, field: user}\n", ["top-users"])
    result = workspace.run()
    assert_clean_failure(result, workspace)
    known = ", ".join(sorted(rule_types(get_plugin_manager(load_entrypoints=False))))
    assert "count_by, " in known and "top_k" in known
    assert ("rules/top.yaml: rule 'top-users': type: unknown rule type 'topk' (did you mean 'top_k'?); "
            f"known types: {known}") in result.stderr


def test_unknown_rule_parameter_is_rejected(workspace):
    only_rule_file(workspace, "top.yaml", "- {name: top-users, type: top_k, field: user, limits: 5}\n",
                   ["top-users"])
    result = workspace.run()
    assert_clean_failure(result, workspace)
    assert "rules/top.yaml: rule 'top-users': unknown field 'limits' (did you mean 'limit'?)" in result.stderr


def test_rule_without_a_type(workspace):
    only_rule_file(workspace, "top.yaml", "- {name: top-users, field: user}\n", ["top-users"])
    result = workspace.run()
    assert_clean_failure(result, workspace)
    assert "rules/top.yaml: rule 'top-users': type: expected a rule type name, got nothing" in result.stderr


def test_rule_file_that_is_not_a_list(workspace):
    workspace.rules_file("extra.yaml", "name: top-users\ntype: top_k\n")
    result = workspace.run()
    assert_clean_failure(result, workspace)
    assert "rules/extra.yaml: expected a list of rules (or 'rules:' holding one), got dict" in result.stderr


def test_duplicate_rule_names_across_files_name_both_files(workspace):
    # Rule files are read in name order, so the one after summary.yaml holds the duplicate.
    workspace.rules_file("users.yaml", "- {name: top-users, type: top_k, field: user, limit: 3}\n")
    result = workspace.run()
    assert_clean_failure(result, workspace)
    assert "rules/users.yaml: rule 'top-users': name already used in rules/summary.yaml" in result.stderr
    assert "hint: rule names must be unique across all rule files" in result.stderr


def test_enabled_rule_that_no_file_defines(workspace):
    workspace.configure("rules: [payment-statuses, top-user]\n")
    result = workspace.run()
    assert_clean_failure(result, workspace)
    assert "settings.yaml: rules: unknown rule 'top-user' (did you mean 'top-users'?)" in result.stderr
    files = (workspace.root / "rules").glob("*.yaml")
    defined = sorted(r["name"] for f in files for r in yaml.safe_load(f.read_text()))
    assert "payment-statuses" in defined
    assert f"defined rules: {', '.join(defined)}" in result.stderr


def test_enabled_twice_is_rejected(workspace):
    workspace.configure("rules: [top-users, top-users]\n")
    result = workspace.run()
    assert_clean_failure(result, workspace)
    assert "settings.yaml: rules: " in result.stderr
    assert "non-unique" in result.stderr


def test_two_enabled_rules_writing_the_same_key(workspace):
    workspace.rules_file("extra.yaml", "- {name: users-again, type: top_k, field: user, key: top_users}\n")
    workspace.configure("rules: [top-users, users-again]\n")
    result = workspace.run()
    assert_clean_failure(result, workspace)
    assert "rule 'users-again': key: 'top_users' is already written by rule 'top-users'" in result.stderr


def test_rule_key_may_not_take_an_engine_key(workspace):
    workspace.rules_file("extra.yaml", "- {name: sneaky, type: count_by, field: user, key: totals}\n")
    result = workspace.run()
    assert_clean_failure(result, workspace)
    assert "rules/extra.yaml: rule 'sneaky': key: expected an identifier that is not one of" in result.stderr
    assert "got 'totals'" in result.stderr


def test_rule_problems_are_reported_together(workspace):
    workspace.rules_file("extra.yaml", """\
        - {name: a-rule, type: top_k, field: user, limit: 0}
        - {name: b-rule, type: nope}
    """)
    workspace.configure("rules: [a-rule, b-rule, c-rule]\n")
    result = workspace.run()
    assert_clean_failure(result, workspace)
    assert "configuration error (3 problems)" in result.stderr
    assert "rule 'a-rule': limit: expected integer >= 1" in result.stderr
    assert "rule 'b-rule': type: unknown rule type 'nope'" in result.stderr
    assert "rules: unknown rule 'c-rule'" in result.stderr


# -- plugins ---------------------------------------------------------------------------------


def test_plugin_that_raises_at_import(workspace):
    env = plugin_dir(workspace.root, "broken_plugin", "raise RuntimeError('no database configured')\n")
    workspace.configure("plugins: [broken_plugin]\n")
    result = workspace.run(env=env)
    assert_clean_failure(result, workspace)
    assert "plugin 'broken_plugin' failed to load: RuntimeError: no database configured" in result.stderr


def test_plugin_that_does_not_exist(workspace):
    workspace.configure("plugins: [no_such_plugin]\n")
    result = workspace.run()
    assert_clean_failure(result, workspace)
    assert ("plugin 'no_such_plugin' failed to load: ModuleNotFoundError: No module named 'no_such_plugin'"
            in result.stderr)


def test_every_broken_plugin_is_named(workspace):
    env = plugin_dir(workspace.root, "broken_plugin", "import json\njson.loads('{')\n")
    workspace.configure("plugins: [broken_plugin, no_such_plugin]\n")
    result = workspace.run("--check", env=env)
    assert_clean_failure(result, workspace)
    assert "configuration error (2 problems)" in result.stderr
    assert "plugin 'broken_plugin' failed to load: JSONDecodeError" in result.stderr
    assert "plugin 'no_such_plugin' failed to load: ModuleNotFoundError" in result.stderr


def test_plugin_rule_type_can_be_used(workspace):
    env = plugin_dir(workspace.root, "extra_rules", COUNTING_PLUGIN)
    workspace.rules_file("extra.yaml", "- {name: record-count, type: count_records}\n")
    workspace.configure("plugins: [extra_rules]\nrules: [payment-statuses, record-count]\n")
    workspace.write("a.log", RECORDS)
    result = workspace.run(env=env)
    assert result.returncode == 0, result.stderr
    summary = workspace.summary()
    assert summary["record_count"] == 3
    assert summary["payment_statuses"] == {"SUCCESS": 2, "FAILED": 1}
    assert summary["rules"]["record-count"] == {"type": "count_records", "key": "record_count", "degraded": None}


EXPLODING = """\
    from core import Result, Rule, hookimpl

    class Explode(Rule):
        type_name = "explode"

        def update(self, batch):
            raise RuntimeError("kaboom in update")

        def merge(self, other):
            pass

        def result(self):
            return Result(0)

    class WrongShape(Rule):
        type_name = "wrong_shape"
        result_schema = {"type": "array"}

        def update(self, batch):
            pass

        def merge(self, other):
            pass

        def result(self):
            return Result({"not": "a list"})

    class NotJson(WrongShape):
        type_name = "not_json"
        result_schema = {"type": "object"}

        def result(self):
            return Result({"ratio": float("nan")})

    class NotAResult(WrongShape):
        type_name = "not_a_result"
        result_schema = {}

        def result(self):
            return ["a", "list"]

    class Ballast(WrongShape):
        type_name = "ballast"
        result_schema = {}

        def result(self):
            ballast = bytearray(300 * 2**20)
            ballast[::4096] = b"\\x01" * len(ballast[::4096])  # touched: resident while the outputs are built
            return Result(len(ballast) // 2**20)

    @hookimpl
    def register_rule_types(register):
        register(Explode)
        register(WrongShape)
        register(NotJson)
        register(NotAResult)
        register(Ballast)
"""


def test_rule_failing_at_run_time_gives_exit_3_and_the_other_rules_still_count(workspace):
    env = plugin_dir(workspace.root, "exploding", EXPLODING)
    workspace.rules_file("extra.yaml", "- {name: boom, type: explode}\n")
    workspace.configure("plugins: [exploding]\nrules: [payment-statuses, boom]\n")
    workspace.write("a.log", RECORDS)
    result = workspace.run(env=env)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert ("rule 'boom' (plugin 'exploding') failed in update on a.log: RuntimeError: kaboom in update"
            in result.stderr)
    summary = workspace.summary()
    assert summary["rule_errors"] == [{"rule": "boom", "plugin": "exploding", "phase": "update", "file": "a.log",
                                       "error": "RuntimeError: kaboom in update"}]
    assert "boom" not in summary
    assert summary["payment_statuses"] == {"SUCCESS": 2, "FAILED": 1}
    assert summary["totals"]["records"] == 3


def test_a_result_failing_its_schema_or_not_json_fails_its_rule_alone(workspace):
    # It was exit 1 with no output written: a watcher whose plugin's result went bad once stopped,
    # and every restart stopped again.
    env = plugin_dir(workspace.root, "exploding", EXPLODING)
    workspace.write("a.log", RECORDS)
    workspace.rules_file("extra.yaml", "- {name: odd, type: wrong_shape}\n- {name: nan, type: not_json}\n"
                                       "- {name: bare, type: not_a_result}\n")
    workspace.configure("plugins: [exploding]\nrules: [payment-statuses, odd, nan, bare]\n")
    result = workspace.run(env=env)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    summary = workspace.summary()
    errors = {e["rule"]: (e["phase"], e["error"]) for e in summary["rule_errors"]}
    assert errors == {
        "odd": ("result", "ValueError: result's value does not fit the type's result_schema: "
                          "expected list, got {'not': 'a list'}"),
        "nan": ("result", "ValueError: result is not JSON (Out of range float values are not JSON compliant)"),
        "bare": ("result", "TypeError: result() returned list, expected core.Result(value, detail)"),
    }
    assert not {"odd", "nan", "bare"} & set(summary)
    assert summary["payment_statuses"] == {"SUCCESS": 2, "FAILED": 1}  # the other rules' outputs are written
    assert [p.name for p in workspace.output.rglob("*.tmp")] == []


def test_peak_rss_counts_building_the_outputs(workspace):
    # Read before the outputs were built, where detectors judge their last windows: 662 MB was
    # reported for a run whose peak was 1,813 MB.
    env = plugin_dir(workspace.root, "exploding", EXPLODING)
    workspace.write("a.log", RECORDS)
    workspace.rules_file("extra.yaml", "- {name: heavy, type: ballast}\n")
    workspace.configure("plugins: [exploding]\nrules: [payment-statuses, heavy]\n")
    result = workspace.run(env=env)
    assert result.returncode == 0, result.stderr
    assert workspace.summary()["heavy"] == 300
    assert workspace.summary()["run"]["peak_rss_mb"] > 300


# -- --data-dir and --output-dir --------------------------------------------------------------


@pytest.fixture
def nested(workspace):
    """Settings in ``conf/`` (its data_dir and output_dir relative to it), run from the workspace root."""
    conf = workspace.root / "conf"
    conf.mkdir()
    shutil.move(workspace.settings, conf / "settings.yaml")
    shutil.move(workspace.root / "rules", conf / "rules")
    (conf / "data").mkdir()
    (conf / "data" / "conf.log").write_text(RECORDS, encoding="utf-8")
    (workspace.root / "logs").mkdir()
    (workspace.root / "logs" / "cwd.log").write_text(RECORDS.splitlines(keepends=True)[0], encoding="utf-8")
    return workspace


def test_paths_in_settings_are_relative_to_the_settings_file(nested):
    result = nested.run("--settings", "conf/settings.yaml")
    assert result.returncode == 0, result.stderr
    written = nested.root / "conf" / "output" / "summary.json"
    assert f"wrote {written.resolve()}" in result.stdout
    summary = json.loads(written.read_text(encoding="utf-8"))
    assert [f["path"] for f in summary["files"]] == ["conf.log"]
    assert summary["totals"]["records"] == 3


def test_data_and_output_dir_options_are_relative_to_the_current_folder_and_win(nested):
    result = nested.run("--settings", "conf/settings.yaml", "--data-dir", "logs", "--output-dir", "results")
    assert result.returncode == 0, result.stderr
    summary = json.loads((nested.root / "results" / "summary.json").read_text(encoding="utf-8"))
    assert [f["path"] for f in summary["files"]] == ["cwd.log"]
    assert summary["totals"]["records"] == 1
    assert not (nested.root / "conf" / "output").exists()
    assert f"wrote {(nested.root / 'results' / 'summary.json').resolve()}" in result.stdout


def test_data_dir_option_naming_a_missing_folder(nested):
    result = nested.run("--settings", "conf/settings.yaml", "--data-dir", "nope")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"data folder '{(nested.root / 'nope').resolve()}' does not exist" in result.stderr
    assert not (nested.root / "conf" / "output").exists()


def test_output_dir_that_is_a_file(workspace):
    workspace.write("a.log", RECORDS)
    (workspace.root / "taken").write_text("not a folder\n", encoding="utf-8")
    result = workspace.run("--output-dir", "taken")
    assert result.returncode == 2  # a configuration problem: the output folder named is not one
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr
    assert f"runpipeline: output folder '{workspace.root.resolve() / 'taken'}' is not a folder" in result.stderr
    assert (workspace.root / "taken").read_text(encoding="utf-8") == "not a folder\n"


# -- what a run prints -------------------------------------------------------------------------


def test_normal_run_prints_the_human_summary(workspace):
    workspace.write("a.log", RECORDS + "not a record\n\n")
    result = workspace.run()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "1 files, 5 lines: 3 records, 1 malformed, 1 blank"
    assert "payment_statuses: SUCCESS 2, FAILED 1" in lines
    assert "top_users: alice, bob" in lines
    assert "top_services: checkout, refunds" in lines
    assert "peak_hours: 10:00-11:00, 11:00-12:00" in lines
    assert lines[-1] == f"wrote {(workspace.output / 'summary.json').resolve()} and anomalies.json"
    assert result.stderr == ""
    assert "\x1b" not in result.stdout + result.stderr  # not a terminal: no progress bar, no colours


def test_profile_covers_the_workers_the_result_threads_and_the_main_thread(workspace):
    # Enough lines for several chunks, so that the worker threads do the parsing.
    workspace.write("a.log", RECORDS * 2000)
    workspace.configure("chunk_bytes: 70000\nlimits: {max_line_bytes: 1024}\n")
    result = workspace.run("--profile")
    assert result.returncode == 0, result.stderr
    report = (workspace.output / "profile.txt").read_text()
    assert f"profile: {(workspace.output / 'profile.txt').resolve()} (and profile.pstats)" in result.stdout
    assert "threads (the reader and merger, the workers, and the ones that seal and read the rules)" in report
    stats = pstats.Stats(str(workspace.output / "profile.pstats"))
    functions = {name for _, _, name in stats.stats}
    assert {"_run_batch", "_merge", "parse_chunk", "update"} <= functions  # main thread and workers
    assert "_result" in functions  # the rules' results, read side by side on threads of their own
    assert workspace.summary()["totals"]["records"] == 6000


def test_profile_refuses_watch_mode(workspace):
    result = workspace.run("--profile", "--watch")
    assert result.returncode == 2
    assert "--profile: expected a batch run, got --watch" in result.stderr
    assert "Traceback" not in result.stderr


def test_quiet_run_prints_nothing_and_still_writes(workspace):
    workspace.write("a.log", RECORDS)
    result = workspace.run("-q")
    assert result.returncode == 0
    assert result.stdout == ""
    assert result.stderr == ""
    assert workspace.summary()["totals"]["records"] == 3


def test_verbose_run_logs_one_line_per_file(workspace):
    workspace.write("a.log", RECORDS)
    workspace.write("b.log", "junk\n")
    result = workspace.run("-v")
    assert result.returncode == 0, result.stderr
    assert re.search(r"a\.log: 3 lines, 3 records, 0 malformed, 0 blank", result.stderr)
    assert re.search(r"b\.log: 1 lines, 0 records, 1 malformed, 0 blank", result.stderr)
    assert "Traceback" not in result.stderr
    assert "\x1b" not in result.stderr


def test_quiet_run_still_reports_an_unreadable_file(workspace):
    workspace.write("a.log", RECORDS)
    os.symlink("missing.log", workspace.data / "gone.log")
    result = workspace.run("-q")
    assert result.returncode == 3
    assert result.stdout == ""
    assert "gone.log" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("module", ["core._scan", "core._tally"])
def test_a_stale_build_of_a_compiled_module_runs_its_stand_in_and_says_to_rebuild(workspace, module):
    # As if core/_scan.c (or core/_tally.c) had changed and the build in place were an older one.
    workspace.write("a.log", RECORDS)
    script = textwrap.dedent(f"""
        import sys, types
        sys.modules["{module}"] = types.SimpleNamespace(VERSION=0)
        from core.cli import main
        sys.exit(main([]))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=workspace.root, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NO_COMPILED": ""})
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count(f"out of date ({module})") == 1 and "make run" in done.stderr
    assert workspace.summary()["run"]["compiled"] is False


def test_peak_rss_is_this_run_s_own_not_that_of_the_process_that_started_it(workspace):
    """A runpipeline forked from a large process reports its own peak, not the parent's size.

    getrusage's maximum counts the forked parent's memory across the exec; VmHWM does not. The
    large parent is a launcher process of its own, so that this test process stays small (its
    high-water mark would follow every process it forks later).
    """
    workspace.write("a.log", RECORDS)
    launcher = textwrap.dedent("""
        import subprocess, sys
        ballast = bytearray(600 * 2**20)
        ballast[::4096] = b"\\x01" * len(ballast[::4096])  # touched: resident in the launcher
        # preexec_fn: a real fork before the exec, as older launchers do
        sys.exit(subprocess.run([sys.executable, "-m", "core.cli", "-q"], preexec_fn=lambda: None).returncode)
    """)
    result = subprocess.run([sys.executable, "-c", launcher], cwd=workspace.root, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert workspace.summary()["run"]["peak_rss_mb"] < 400


def test_importing_the_cli_changes_nothing_in_the_process():
    # Process-wide settings (allocator, thread pools) are made by main, never at import: a program
    # that imports the package for its own use keeps its environment.
    code = ("import os, sys, core.cli; "
            "print(sorted(k for k in ('_RJEM_MALLOC_CONF', 'POLARS_MAX_THREADS', 'OPENBLAS_NUM_THREADS') "
            "if k in os.environ), 'polars' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("_RJEM_MALLOC_CONF", "POLARS_MAX_THREADS",
                                                             "OPENBLAS_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]", "False"]


@pytest.mark.parametrize("option", ["--serve", "--metrics-port", "--metrics-addr", "--executor", "--scheduler"])
def test_an_option_s_value_is_never_taken_for_a_subcommand(option):
    from core.command import _subcommand

    assert _subcommand([option, "test", "--watch"]) is None  # "test" is the option's value here
    assert _subcommand([option, "8080", "test"]) == 2
