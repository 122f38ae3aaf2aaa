"""The shipped example and a generated file give exactly the reference implementation's answers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import jsonschema
import pytest

from tests.conftest import REPO

EXPECTED = json.loads((REPO / "tests" / "data" / "example_expected.json").read_text())


def top(counts: dict[str, int], n: int) -> list[str]:
    """The contract's top list: most records first, ties by name ascending."""
    return [k for k, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def peak_hours(hours: dict[str, int], n: int = 3) -> list[str]:
    ranked = sorted(((int(h), c) for h, c in hours.items() if c), key=lambda hc: (-hc[1], hc[0]))[:n]
    return [f"{h:02d}:00-{(h + 1) % 24:02d}:00" for h, _ in ranked]


def check_against_reference(summary: dict, expected: dict) -> None:
    totals = summary["totals"]
    for key in ("lines", "records", "blank", "malformed"):
        assert totals[key] == expected[key], key
    assert totals["malformed_reasons"] == {k: v for k, v in expected["malformed_reasons"].items() if v}
    assert summary["payment_statuses"] == expected["statuses"]
    assert list(summary["payment_statuses"]) == top(expected["statuses"], len(expected["statuses"]))
    assert summary["top_services"] == top(expected["services"], 10)
    assert summary["top_users"] == top(expected["users"], 10)
    assert summary["details"]["top_users"] == {u: expected["users"][u] for u in top(expected["users"], 10)}
    assert summary["peak_hours"] == peak_hours(expected["hours"])
    histogram = summary["details"]["peak_hours"]["hourly_volume"]
    assert [histogram[f"{h:02d}:00-{(h + 1) % 24:02d}:00"] for h in range(24)] == [
        expected["hours"].get(str(h), 0) for h in range(24)
    ]


def test_example_input_matches_the_reference(workspace):
    shutil.copy(REPO / "data" / "example_input.txt", workspace.data)
    result = workspace.run("--data-dir", "data", "--output-dir", "out")
    assert result.returncode == 0, result.stderr
    summary = json.loads((workspace.root / "out" / "summary.json").read_text())
    check_against_reference(summary, EXPECTED)
    for name in ("summary", "anomalies"):
        schema = json.loads((REPO / "core" / "schemas" / f"{name}.schema.json").read_text())
        jsonschema.validate(json.loads((workspace.root / "out" / f"{name}.json").read_text()), schema)


@pytest.mark.parametrize("extra", [[], ["--distinct-users", "200000"]])
@pytest.mark.slow
def test_generated_file_matches_the_reference(workspace, extra):
    log = workspace.data / "gen.log"
    subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), "--lines", "60000", "--out", str(log),
                    "--seed", "7", "--long-every", "20000", *extra], check=True)
    workspace.configure("chunk_bytes: 200000\n")  # many chunks, so merging is exercised
    result = workspace.run()
    assert result.returncode == 0, result.stderr
    reference = subprocess.run([sys.executable, str(REPO / "bench" / "reference.py"), str(log)],
                               check=True, capture_output=True, text=True)
    check_against_reference(workspace.summary(), json.loads(reference.stdout))


@pytest.mark.parametrize("name", ["settings", "summary", "anomalies"])
def test_the_shipped_schemas_are_valid_json_schema(name):
    # core.validation does not check them on every start: this does.
    if name == "settings":
        from core.settings import SCHEMA as schema
    else:
        schema = json.loads((REPO / "core" / "schemas" / f"{name}.schema.json").read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)


def test_the_default_plugins_rule_type_schemas_are_valid_json_schema():
    # Their params and result schemas are not checked on every start (core.plugins.shipped): this does.
    from core.plugins import get_plugin_manager, rule_types, shipped

    types = rule_types(get_plugin_manager([]))
    assert types and all(shipped(cls) for cls in types.values())
    for cls in types.values():
        for schema in (cls.params_schema, cls.result_schema):
            if schema:
                jsonschema.validators.validator_for(schema).check_schema(schema)
