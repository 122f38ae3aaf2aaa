"""Changing the configuration while ``runpipeline --watch`` runs: real edits of real files, and a real SIGHUP.

Each test runs the real command in a subprocess (``tests.test_watch.Watcher``), edits
``settings.yaml`` or a rule file as a user would, and waits for the log line or the output that
shows what the watcher made of it.
"""

from __future__ import annotations

import json
import signal

import pytest

from tests.conftest import Workspace, drop, run_cli
from tests.test_plugins import _readme_block
from tests.test_watch import Watcher, log_lines, outputs

EXTRA_RULE = "- name: top-statuses\n  type: top_k\n  field: status\n  limit: {limit}\n"
README = "### Changing config while watching"


def readme_log(nth: int) -> list[str]:
    """The log lines the README shows (its ``nth`` text block of that section), each without a trailing ``...``."""
    return [line.removesuffix(", ...") for line in _readme_block(README, "text", nth).splitlines()]


def with_extra_rule(workspace: Workspace, limit: int, poll_interval_ms: int = 100) -> None:
    """The shipped rules plus ``top-statuses`` (top_k of status, ``limit``), quick watch timings."""
    workspace.rules_file("extra.yaml", EXTRA_RULE.format(limit=limit))
    text = workspace.settings.read_text(encoding="utf-8")
    workspace.settings.write_text(text.replace("  - silent-services\n", "  - silent-services\n  - top-statuses\n"),
                                  encoding="utf-8")
    workspace.configure(f"watch: {{settle_ms: 100, poll_interval_ms: {poll_interval_ms}, status_seconds: 30}}\n")


def summary(workspace: Workspace) -> dict:
    return json.loads((workspace.output / "summary.json").read_text(encoding="utf-8"))


def statuses_listed(workspace: Workspace, count: int):
    """A condition: summary.json's top_statuses lists ``count`` statuses."""
    return lambda: len(summary(workspace).get("top_statuses", [])) == count


@pytest.mark.slow
def test_a_changed_rule_parameter_is_applied_logged_and_rebuilds_that_rule_alone(workspace: Workspace, tmp_path):
    with_extra_rule(workspace, limit=2)
    workspace.write("a.log", log_lines(1, 300))
    gone = workspace.write("gone.log", log_lines(2, 100))
    with Watcher(workspace) as watcher:
        watcher.wait_for_lines(400)
        before = summary(workspace)
        assert len(before["top_statuses"]) == 2
        gone.unlink()  # the rules kept keep what they counted of it; a rebuilt rule can no longer count it
        assert _readme_block(README, "yaml") == EXTRA_RULE.format(limit=3)  # the README's edit
        workspace.rules_file("extra.yaml", _readme_block(README, "yaml"))
        watcher.wait_for(statuses_listed(workspace, 3), "top_statuses with the new limit")
        assert all(line in watcher.log for line in readme_log(0)), watcher.log
        assert "reading the configuration again (rules/extra.yaml changed)" in watcher.log
        assert "rule 'top-statuses' has new parameters or keeps its state differently; rebuilding its state" \
            in watcher.log
        assert ("configuration applied; rules rebuilt: top-statuses; rules kept as they were: payment-statuses, "
                "top-services") in watcher.log
        assert "rebuilt rule 'top-statuses' from 1 file still in the data folder (300 lines)" in watcher.log
        after = summary(workspace)
        assert after["totals"]["lines"] == 400 and after["payment_statuses"] == before["payment_statuses"]
        drop(workspace.data, "b.log", log_lines(3, 50))  # read by every rule, the rebuilt one too
        watcher.wait_for_lines(450)
        assert watcher.stop() == 0
    watched, _ = outputs(workspace.output)
    fresh = run_cli("--output-dir", str(tmp_path / "fresh"), cwd=workspace.root)
    assert fresh.returncode == 0, fresh.stderr
    assert watched["top_statuses"] == outputs(tmp_path / "fresh")[0]["top_statuses"]  # a.log and b.log


@pytest.mark.slow
def test_an_invalid_edit_is_refused_with_the_check_messages_and_the_running_config_stays(workspace: Workspace):
    with_extra_rule(workspace, limit=2)
    workspace.write("a.log", log_lines(4, 200))
    with Watcher(workspace) as watcher:
        watcher.wait_for_lines(200)
        workspace.rules_file("extra.yaml", EXTRA_RULE.format(limit="lots"))
        refused = watcher.wait_for(lambda: "configuration not applied" in watcher.log, "the refusal")
        check = run_cli("--check", cwd=workspace.root)  # what --check says of the same files
        assert check.returncode == 2
        problems = [line.strip() for line in check.stderr.splitlines()[1:]]
        assert problems == ["rules/extra.yaml: rule 'top-statuses': limit: expected integer >= 1 <= 10000, got 'lots'"]
        assert refused
        assert "configuration not applied (1 problem); the running configuration stays:\n  " + problems[0] \
            in watcher.log
        assert "\n".join(readme_log(1)) in watcher.log
        drop(workspace.data, "b.log", log_lines(5, 40))
        watcher.wait_for_lines(240)
        assert len(summary(workspace)["top_statuses"]) == 2  # the old rule still runs
        assert "configuration applied" not in watcher.log
        workspace.rules_file("extra.yaml", EXTRA_RULE.format(limit=3))  # fixed: now applied
        watcher.wait_for(statuses_listed(workspace, 3), "the fixed configuration applied")
        assert watcher.stop() == 0


def test_sighup_reads_the_config_again_and_a_restart_only_change_is_refused(workspace: Workspace):
    with_extra_rule(workspace, limit=2, poll_interval_ms=3_600_000)  # no look at the files but on SIGHUP
    workspace.write("a.log", log_lines(6, 100))
    original = workspace.settings.read_text(encoding="utf-8")
    with Watcher(workspace) as watcher:
        watcher.wait_for_lines(100)
        workspace.configure("workers: 1\nlimits: {memory_mb: 400}\n")
        watcher.proc.send_signal(signal.SIGHUP)
        watcher.wait_for(lambda: "configuration not applied" in watcher.log, "the refusal")
        assert "reading the configuration again (settings.yaml changed)" in watcher.log
        assert ("configuration not applied: workers, limits.memory_mb changed, which needs a restart of the "
                "watcher; the running configuration stays") in watcher.log
        drop(workspace.data, "b.log", log_lines(7, 30))
        watcher.wait_for_lines(130)  # still watching, with the running configuration
        workspace.settings.write_text(original, encoding="utf-8")
        workspace.rules_file("extra.yaml", EXTRA_RULE.format(limit=4))
        assert "configuration applied" not in watcher.log
        watcher.proc.send_signal(signal.SIGHUP)
        watcher.wait_for(statuses_listed(workspace, 4), "the rule change applied on SIGHUP")
        assert "configuration applied; rules rebuilt: top-statuses;" in watcher.log
        assert watcher.stop() == 0


def test_a_silence_added_while_watching_applies_and_the_metrics_count_what_was_sent(workspace: Workspace):
    from tests.test_alerts import Receiver, alerts_of, lines, plant
    from tests.test_metrics import free_port, scrape, value

    receiver = Receiver()
    destination = f'destinations: [{{name: ops, type: webhook, url: "{receiver.url}"}}]\n'
    try:
        plant(workspace, destination)
        workspace.configure("watch: {settle_ms: 100, poll_interval_ms: 100}\n")
        workspace.write("a.log", lines("CHARGEBACK"))
        port = free_port()
        with Watcher(workspace, "--metrics-port", str(port)) as watcher:
            watcher.wait_for(lambda: receiver.ids() == ["odd-statuses:CHARGEBACK"], "the first incident sent")
            watcher.wait_for(lambda: value(scrape(port), "omp_incidents_sent_total", rule="odd-statuses",
                                           severity="high") == 1, "the metrics to count it")
            workspace.configure("alerts:\n  " + destination
                                + '  silences: [{rule: refunds, key: REFUND, until: "2099-01-01T00:00:00Z"}]\n')
            watcher.wait_for(lambda: "configuration applied; rules rebuilt: none" in watcher.log, "the reload")
            drop(workspace.data, "b.log", lines("REFUND", "DISPUTE", second=10))
            watcher.wait_for(lambda: "odd-statuses:DISPUTE" in receiver.ids(), "the incident of b.log sent")
            watcher.wait_for(lambda: [s["id"] for s in alerts_of(workspace).get("silenced", [])]
                             == ["refunds:REFUND"], "REFUND listed as silenced")
            assert "refunds:REFUND" not in receiver.ids()
            samples = scrape(port)
            assert value(samples, "omp_incidents_sent_total", rule="odd-statuses", severity="high") == 2
            assert value(samples, "omp_incidents_sent_total", rule="refunds", severity="low") == 0
            assert value(samples, "omp_config_reloads_total", outcome="applied") == 1
            assert watcher.stop() == 0
    finally:
        receiver.close()
