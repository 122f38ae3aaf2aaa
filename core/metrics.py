"""Prometheus metrics of a watcher (``runpipeline --watch --metrics-port N``), served by ``prometheus-client``.

Counters count from the process's start, as Prometheus expects of them (a restart starts them at
0, and ``rate()`` copes). Gauges carry what the committed state holds: its cumulative totals and
the incidents open. Each ``Metrics`` has a registry of its own, never the library's global one,
so that several watchers can run in one process (the tests do).

The per-file counts arrive through the ``after_file`` and ``on_error`` hooks, from a small plugin
registered on the watcher's plugin manager (``MetricsPlugin``): the engine needs no call of its
own for them. The watch loop reports when a file is first noticed and when a commit ends.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections import Counter as Tally
from typing import Any, Callable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pluggy
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from core.errors import ConfigError, PluginFailed
from core.hookspecs import hookimpl
from core.run import peak_rss_mb
from core.serve import IDLE_SECONDS, BoundedConnections
from core.stats import FileStats

log = logging.getLogger(__name__)

#: The name the metrics plugin is registered under.
PLUGIN_NAME = "omp-metrics"
#: Seconds from a file's first event to its commit: a few settle intervals up to a big file's read.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
COMMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: The state's totals (summary.json ``totals``) carried as ``omp_state_<name>`` gauges.
STATE_TOTALS = ("files", "lines", "records", "malformed", "blank", "bytes")


class Metrics:
    """Every metric of one watcher, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        counter = self._counter
        self.lines = counter("omp_lines", "Lines read since the process started.")
        self.records = counter("omp_records", "Records (well-formed lines) read since the process started.")
        self.malformed = counter("omp_malformed", "Malformed lines read since the process started, by reason.",
                                 ["reason"])
        self.blank = counter("omp_blank", "Blank lines read since the process started.")
        self.bytes = counter("omp_bytes", "Bytes read since the process started.")
        self.files_processed = counter("omp_files_processed", "Files (or their new bytes) read and committed.")
        self.files_failed = counter("omp_files_failed", "Files that could not be read (see summary.json file_errors).")
        self._alerts = _AlertsCollector()
        self.registry.register(self._alerts)
        self.reloads = counter("omp_config_reloads", "Configuration changes seen, by outcome.", ["outcome"])
        self.state = {name: Gauge(f"omp_state_{name}", f"The committed state's total of {name} (summary.json "
                                  "totals).", registry=self.registry) for name in STATE_TOTALS}
        self.incidents_open = Gauge("omp_incidents_open", "Incidents open in anomalies.json, by rule and severity.",
                                    ["rule", "severity"], registry=self.registry)
        self.latency = Histogram("omp_file_commit_latency_seconds", "Seconds from a file's change first noticed by "
                                 "the watcher to the commit that counts it.", buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.commit_seconds = Histogram("omp_commit_duration_seconds", "Seconds a commit took: reading the ready "
                                        "files, the checkpoint and the outputs.", buckets=COMMIT_BUCKETS,
                                        registry=self.registry)
        rss = Gauge("omp_peak_rss_bytes", "Peak resident memory of the process.", registry=self.registry)
        rss.set_function(lambda: peak_rss_mb() * 1024 * 1024)
        self._in_flight = Gauge("omp_chunks_in_flight", "Chunks read and not merged yet.", registry=self.registry)
        self._waiting = Gauge("omp_files_waiting", "Files changed and not read yet.", registry=self.registry)
        self._noticed: dict[str, float] = {}
        self._lock = threading.Lock()
        self._open: set[tuple[str, str]] = set()

    def _counter(self, name: str, documentation: str, labels: list[str] | tuple[str, ...] = ()) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def serve(self, port: int, addr: str = "127.0.0.1") -> Any:
        """Serve ``/metrics`` on ``addr:port`` from a daemon thread; returns the server (``shutdown()`` stops it).

        Raises ``ConfigError`` when the address cannot be bound (in use, not this host's, not allowed).
        """
        try:
            server = _metrics_server(addr, port, make_wsgi_app(self.registry))
        except OSError as exc:
            hint = "choose another --metrics-port, or stop what listens there" if exc.errno == errno.EADDRINUSE \
                else "check --metrics-addr and --metrics-port"
            raise ConfigError([f"--metrics-port {port}: cannot serve metrics on {addr}:{port}: "
                               f"{exc.strerror or exc}; hint: {hint}"]) from None
        log.info("serving Prometheus metrics on http://%s:%d/metrics", addr, server.server_address[1])
        return server

    # -- what the watcher reports -------------------------------------------------------------

    def watch(self, waiting: Callable[[], int], in_flight: Callable[[], int]) -> None:
        """Read the files waiting and the chunks in flight from these, at each scrape."""
        self._waiting.set_function(waiting)
        self._in_flight.set_function(in_flight)

    def noticed(self, name: str) -> None:
        """The watcher saw ``name`` change; the first time since its last commit starts its latency."""
        with self._lock:
            self._noticed.setdefault(name, time.monotonic())

    def committed(self, names: list[str], seconds: float, summary: dict[str, Any],
                  incidents: list[dict[str, Any]]) -> None:
        """A commit of ``names`` took ``seconds``; the state's totals and incidents are now these."""
        now = time.monotonic()
        with self._lock:
            noticed = [self._noticed.pop(name) for name in names if name in self._noticed]
        for at in noticed:
            self.latency.observe(now - at)
        self.commit_seconds.observe(seconds)
        for name in STATE_TOTALS:
            self.state[name].set(summary["totals"][name])
        self._set_open(incidents)

    def _set_open(self, incidents: list[dict[str, Any]]) -> None:
        open_now = Tally((i["rule"], i["severity"]) for i in incidents if i.get("status", "open") == "open")
        for gone in self._open - set(open_now):  # a series that was non-zero goes back to 0, not away
            self.incidents_open.labels(*gone).set(0)
        for labels, count in open_now.items():
            self.incidents_open.labels(*labels).set(count)
        self._open |= set(open_now)

    def file_done(self, stats: FileStats) -> None:
        self.lines.inc(stats.lines)
        self.records.inc(stats.records)
        self.blank.inc(stats.blank)
        self.bytes.inc(stats.bytes)
        for reason, count in stats.reasons.items():
            self.malformed.labels(reason).inc(count)
        self.files_processed.inc()

    def reload_outcome(self, outcome: str) -> None:
        """A changed configuration was ``applied``, or refused as ``invalid`` or ``restart_needed``."""
        self.reloads.labels(outcome).inc()

    def follow_alerts(self, alerts: Callable[[], Any]) -> None:
        """Read what the alerts sent and failed to send (``core.alerts.Alerts``) from ``alerts()`` at each scrape."""
        self._alerts.source = alerts


class _AlertsCollector(Collector):
    """``omp_incidents_sent_total`` and ``omp_alert_failures_total``, read from the alerts' own counts.

    ``core.alerts.Alerts`` counts from the process start (``sent_by``: by rule and severity;
    ``failures_by``: by destination), which is a Prometheus counter's meaning: they are exposed
    as they are, at each scrape, rather than counted twice.
    """

    def __init__(self) -> None:
        self.source: Callable[[], Any] = lambda: None

    def describe(self) -> list[Metric]:
        return list(self._families(None))

    def collect(self) -> Iterator[Metric]:
        return self._families(self.source())

    @staticmethod
    def _families(alerts: Any) -> Iterator[Metric]:
        sent = CounterMetricFamily("omp_incidents_sent", "Incidents delivered to an alert destination.",
                                   labels=["rule", "severity"])
        failures = CounterMetricFamily("omp_alert_failures", "Alert sends that failed (each is retried).",
                                       labels=["destination"])
        if alerts is not None:
            for (rule, severity), count in dict(alerts.sent_by).items():
                sent.add_metric([rule, severity], count)
            for destination, count in dict(alerts.failures_by).items():
                failures.add_metric([destination], count)
        yield sent
        yield failures


class MetricsPlugin:
    """The hooks that feed ``Metrics`` its per-file counts; registered as ``PLUGIN_NAME``."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    @hookimpl
    def after_file(self, path: str, stats: FileStats) -> None:
        self.metrics.file_done(stats)

    @hookimpl
    def on_error(self, error: Exception, path: str | None, rule: str | None) -> None:
        if path and rule is None and not isinstance(error, PluginFailed):  # a file that could not be read
            self.metrics.files_failed.inc()


def register(pm: pluggy.PluginManager, metrics: Metrics) -> None:
    """Feed ``metrics`` from ``pm``'s hooks (before the watcher first calls them)."""
    pm.register(MetricsPlugin(metrics), name=PLUGIN_NAME)


class _MetricsHandler(WSGIRequestHandler):
    """``prometheus_client``'s server's handler, silent, with connections idle ``IDLE_SECONDS`` closed."""

    timeout = IDLE_SECONDS

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        pass


def _metrics_server(addr: str, port: int, app: Any) -> Any:
    """``prometheus_client.start_http_server``'s WSGI server, bounded as ``--serve``'s is (``BoundedConnections``):
    idle connections to it had taken every file descriptor of the watcher."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    server_class = type("MetricsServer", (BoundedConnections, ThreadingWSGIServer), {"address_family": family})
    server = make_server(addr, port, app, server_class, handler_class=_MetricsHandler)
    threading.Thread(target=server.serve_forever, name="omp-metrics", daemon=True).start()
    return server
