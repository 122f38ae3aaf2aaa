"""``runpipeline --watch --metrics-port N``: Prometheus metrics scraped over a real socket during a real watch run."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import urllib.request
from collections import Counter
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, Workspace, drop, wait_for
from tests.test_watch import Watcher, log_lines


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on ``/metrics``: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode("utf-8")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_during_a_watch_run_agree_with_summary_json(workspace: Workspace):
    workspace.configure("watch: {settle_ms: 100, status_seconds: 30}\n")
    port = free_port()
    with Watcher(workspace, "--metrics-port", str(port)) as watcher:
        watcher.wait_started()
        assert value(scrape(port), "omp_lines_total") == 0
        drop(workspace.data, "a.log", log_lines(1, 300))
        unknown = "2025-07-22T10:05:00Z REVERSED PaymentService user7 paid 5 EUR\n"  # an incident
        drop(workspace.data, "b.log", log_lines(2, 120) + "2025-07-22T10:00:00Z SUCCESS\n" + unknown)
        summary = watcher.wait_for_lines(422)
        totals = summary["totals"]

        workspace.configure("watch: {settle_ms: 150, status_seconds: 30}\n")  # a reload, counted

        def agrees() -> dict | None:
            samples = scrape(port)
            committed = value(samples, "omp_file_commit_latency_seconds_count") == 2
            return samples if committed and value(samples, "omp_config_reloads_total", outcome="applied") else None

        samples = watcher.wait_for(agrees, "the metrics of the commit of both files, and of the reload")
        for name in ("lines", "records", "blank", "bytes"):
            assert value(samples, f"omp_{name}_total") == totals[name], name
            assert value(samples, f"omp_state_{name}") == totals[name], name
        assert totals["malformed_reasons"]  # the test means something: both reasons present
        for reason, count in totals["malformed_reasons"].items():
            assert value(samples, "omp_malformed_total", reason=reason) == count, reason
        assert value(samples, "omp_files_processed_total") == totals["files"] == 2
        assert value(samples, "omp_files_failed_total") == 0
        assert value(samples, "omp_commit_duration_seconds_count") >= 2  # the catch-up, then the files
        assert value(samples, "omp_peak_rss_bytes") >= summary["run"]["peak_rss_mb"] * 1024 * 1024 * 0.9
        assert value(samples, "omp_chunks_in_flight") == 0 and value(samples, "omp_files_waiting") == 0
        listed = json.loads((workspace.output / "anomalies.json").read_text(encoding="utf-8"))["anomalies"]
        opened = Counter((i["rule"], i["severity"]) for i in listed if i.get("status", "open") == "open")
        assert any(rule == "unknown-statuses" for rule, _ in opened)
        for (rule, severity), count in opened.items():
            assert value(samples, "omp_incidents_open", rule=rule, severity=severity) == count
        assert readme_sample() and {line: samples.get(key) for line, key in readme_sample().items()} == \
            {line: float(line.rsplit(" ", 1)[1]) for line in readme_sample()}
        assert watcher.stop() == 0


def readme_sample() -> dict[str, tuple[str, tuple[tuple[str, str], ...]]]:
    """The README's scrape ("### Metrics"), but peak RSS: each line, with the sample it shows."""
    block = (REPO / "README.md").read_text(encoding="utf-8").split("### Metrics", 1)[1].split("```text\n", 1)[1]
    lines = [line for line in block.split("```", 1)[0].splitlines() if not line.startswith("omp_peak_rss_bytes")]
    families = text_string_to_metric_families("\n".join(lines) + "\n")
    keys = [(s.name, tuple(sorted(s.labels.items()))) for family in families for s in family.samples]
    return dict(zip(lines, keys, strict=True))


def test_a_port_in_use_is_a_clear_error_not_a_traceback(workspace: Workspace):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = workspace.run("--watch", "--metrics-port", str(port), timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"--metrics-port {port}: cannot serve metrics on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "choose another --metrics-port" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_idle_connections_to_the_metrics_port_do_not_stop_the_watcher(workspace: Workspace):
    # prometheus_client's server gave each connection a thread and a descriptor for as long as the
    # client liked: as many idle ones as the process may open files stopped the watcher.
    port = free_port()
    workspace.write("a.log", log_lines(60, 20))
    with open(workspace.root / "watch.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "--watch", "--metrics-port", str(port)], cwd=workspace.root,
            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128)))
    idle: list[socket.socket] = []
    try:
        wait_for(lambda: _counted(workspace) == 20, "the first file counted")
        for _ in range(150):  # half a request each, then silence
            conn = socket.create_connection(("127.0.0.1", port))
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            idle.append(conn)
        drop(workspace.data, "b.log", log_lines(61, 7))
        wait_for(lambda: _counted(workspace) == 27, "the watcher to count a file dropped meanwhile", timeout=40)
        wait_for(lambda: _scraped(port), "a scrape once the idle connections time out", timeout=40)
        assert proc.poll() is None, (workspace.root / "watch.log").read_text(encoding="utf-8")
    finally:
        for conn in idle:
            conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (workspace.root / "watch.log").read_text(encoding="utf-8")


def _counted(workspace: Workspace) -> int:
    try:
        return json.loads((workspace.output / "summary.json").read_text(encoding="utf-8"))["totals"]["lines"]
    except (OSError, ValueError, KeyError):
        return -1


def _scraped(port: int) -> bool:
    try:
        return bool(scrape(port))
    except OSError:
        return False


def test_metrics_port_needs_watch(workspace: Workspace):
    result = workspace.run("--metrics-port", str(free_port()))
    assert result.returncode == 2
    assert "--metrics-port: expected --watch, got a batch run" in result.stderr


def test_each_watcher_has_its_own_registry_and_alerts_are_read_at_each_scrape():
    from core.metrics import Metrics

    first, second = Metrics(), Metrics()  # the library's global registry would refuse the second
    alerts = SimpleNamespace(sent_by=Counter({("error-spikes", "high"): 2}), failures_by=Counter({"webhook": 1}))
    first.follow_alerts(lambda: alerts)
    first.reload_outcome("restart_needed")
    sample = first.registry.get_sample_value
    assert sample("omp_incidents_sent_total", {"rule": "error-spikes", "severity": "high"}) == 2
    assert sample("omp_alert_failures_total", {"destination": "webhook"}) == 1
    assert sample("omp_config_reloads_total", {"outcome": "restart_needed"}) == 1
    alerts.sent_by[("error-spikes", "high")] += 1  # delivered since: the next scrape says so
    assert sample("omp_incidents_sent_total", {"rule": "error-spikes", "severity": "high"}) == 3
    assert second.registry.get_sample_value("omp_incidents_sent_total", {"rule": "error-spikes",
                                                                         "severity": "high"}) is None
