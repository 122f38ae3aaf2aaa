"""Alerts as a user meets them: real destinations on 127.0.0.1 (an HTTP server, a program, an SMTP server),
real watchers stopped by real signals, and the messages ``--check`` gives for a wrong ``alerts:`` block.

Incidents are planted with ``unknown_status`` rules: one incident per status nobody allowed, from a
single line. ``odd-statuses`` flags CHARGEBACK, DISPUTE, HOLD, VOID and REVERSAL at severity high;
``refunds`` flags REFUND at severity low.
"""

from __future__ import annotations

import html
import json
import signal
import socket
import sys
import textwrap
import threading
import time
from email import message_from_bytes
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from core.alertconfig import AlertConfig, Alerter, Destination, Silence
from core.alerts import Alerts
from core.checkpoint import Checkpoint
from core.state import RunState
from tests.conftest import Workspace, drop
from tests.test_watch import Watcher, summary_of

HIGH = ("CHARGEBACK", "DISPUTE", "HOLD", "VOID", "REVERSAL")
RULES = """\
- name: odd-statuses
  type: unknown_status
  allowed: [SUCCESS, FAILURE, INFO, WARN, ERROR, REFUND]
  severity: high

- name: refunds
  type: unknown_status
  allowed: [SUCCESS, FAILURE, INFO, WARN, ERROR, CHARGEBACK, DISPUTE, HOLD, VOID, REVERSAL]
  severity: low
"""


def lines(*statuses: str, second: int = 0) -> str:
    """One record per status; the first carries a card number and an e-mail address, which alerts must not show."""
    out = []
    for n, status in enumerate(statuses):
        message = "card 4111 1111 1111 1111 of ann@example.com" if n == 0 else "paid 12.50 EUR"
        out.append(f"2025-07-22T10:00:{(second + n) % 60:02d}Z {status} PaymentService user{n} {message}\n")
    return "".join(out)


def plant(workspace: Workspace, alerts: str) -> None:
    """The two rules above, enabled alone, and the given ``alerts:`` block (YAML, indented as under it)."""
    workspace.rules_file("odd.yaml", RULES)
    workspace.configure("rules: [odd-statuses, refunds]\nwatch: {settle_ms: 100}\nalerts:\n"
                        + textwrap.indent(textwrap.dedent(alerts), "  "))


class Receiver:
    """An HTTP endpoint on 127.0.0.1 in a thread: records each JSON body POSTed; answers 500 while ``failing``
    or for the first ``fail_first`` requests."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.requests = 0
        self.fail_first = fail_first
        self.failing = False
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests += 1
                    refuse = receiver.failing or receiver.requests <= receiver.fail_first
                    if not refuse:
                        receiver.bodies.append(json.loads(body))
                        receiver.headers.append(dict(self.headers))
                self.send_response(500 if refuse else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def ids(self) -> list[str]:
        """Every incident id received, shown or counted as "and N more", as often as it was received."""
        with self.lock:
            return [i["id"] for body in self.bodies for i in body["incidents"]] + \
                   [i for body in self.bodies for i in body["more_ids"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def alerts_of(workspace: Workspace) -> dict[str, Any]:
    """summary.json's ``alerts`` section; empty lists before a watcher's first commit."""
    summary = summary_of(workspace)
    if summary is None:
        return {"queued": [], "failed": [], "destinations": {"ops": {"sent": 0}}}
    return summary["alerts"]


# -- configuration: --check ------------------------------------------------------------------------


def test_check_reports_every_destination_problem_with_its_field(workspace, capsys):
    plant(workspace, """\
        destinations:
          - {name: ops, type: webhok, url: "http://127.0.0.1:9/"}
          - {name: hook, type: webhook, url: 5, timeout: 10, retries: 3}
          - {name: mail, type: email, to: [], from: ops@example.com}
          - {name: env, type: webhook, url: "http://127.0.0.1:9/", headers_from_env: {Authorization: OMP_NOT_SET}}
          - {name: leak, type: webhook, url: "http://127.0.0.1:9/", headers: {Authorization: "Bearer s3cret"}}
          - {name: prog, type: command, argv: [omp-no-such-program]}
          - {name: ops2, type: command, argv: [true], rules: [odd-status], min_severity: urgent}
        silences:
          - {rule: refund, until: "2099-01-01"}
        """)
    assert workspace.main("--check") == 2
    err = capsys.readouterr().err
    assert "configuration error (12 problems)" in err
    for problem in [
        "settings.yaml: alerts: destination 'ops': type: unknown alert destination type 'webhok' (did you mean "
        "'webhook'?); known types: command, email, webhook",
        "settings.yaml: alerts: destination 'hook': unknown field 'retries'; known fields: headers, "
        "headers_from_env, max_per_message",
        "settings.yaml: alerts: destination 'hook': timeout: expected a duration: a whole number and its unit, s, m, "
        "h or d (90s, 10m, 1h, 1d), got 10",
        "settings.yaml: alerts: destination 'hook': url: expected an http:// or https:// URL, got 5",
        "settings.yaml: alerts: destination 'mail': to: [] should be non-empty",
        "settings.yaml: alerts: destination 'env': headers_from_env.Authorization: environment variable "
        "OMP_NOT_SET is not set",
        "settings.yaml: alerts: destination 'leak': headers.Authorization: expected no credentials in the "
        "settings file",
        "settings.yaml: alerts: destination 'prog': argv[0]: expected a program on PATH, got "
        "'omp-no-such-program', which is not found",
        "settings.yaml: alerts: destination 'ops2': argv[0]: expected string of at least 1 character(s), got True",
        "settings.yaml: alerts: destination 'ops2': min_severity: expected one of 'low', 'medium', 'high', "
        "'critical', got 'urgent'",
        "settings.yaml: alerts: destination 'ops2': rules: unknown rule 'odd-status' (did you mean 'odd-statuses'?); "
        "enabled rules: odd-statuses, refunds, no-data",
        "settings.yaml: alerts: silences[0]: rule: unknown rule 'refund' (did you mean 'refunds'?)",
    ]:
        assert problem in err, f"{problem!r} not in:\n{err}"
    assert "Traceback" not in err


def test_check_reports_a_wrong_alerts_block_in_settings(workspace, capsys):
    plant(workspace, """\
        no_data_after: 10
        silences: [{rule: refunds, until: tomorrow}]
        destination: []
        """)
    assert workspace.main("--check") == 2
    err = capsys.readouterr().err
    assert "settings.yaml: alerts: unknown field 'destination' (did you mean 'destinations'?)" in err
    assert "settings.yaml: alerts.no_data_after: expected a duration" in err
    assert "settings.yaml: alerts.silences[0].until: expected a UTC date or time in ISO 8601" in err


def test_check_bounds_the_alerts_block_s_durations_and_dates(workspace, capsys):
    # A duration of ages overflowed the clock arithmetic; a date that does not exist passed the pattern.
    plant(workspace, """\
        no_data_after: 99999999999999d
        silences: [{rule: refunds, until: 2026-02-30}]
        """)
    assert workspace.main("--check") == 2
    err = capsys.readouterr().err
    assert "settings.yaml: alerts.no_data_after: expected a duration of at most 3650d (ten years)" in err
    assert "settings.yaml: alerts.silences[0].until: expected a date that exists" in err


def test_a_valid_alerts_block_passes_check(workspace, receiver, capsys, monkeypatch):
    monkeypatch.setenv("OMP_TEST_TOKEN", "Bearer t0ken")
    plant(workspace, f"""\
        destinations:
          - {{name: ops, type: webhook, url: "{receiver.url}", headers_from_env: {{Authorization: OMP_TEST_TOKEN}}}}
        silences: [{{rule: refunds, key: REFUND, until: "2099-01-01T00:00:00Z", comment: expected}}]
        no_data_after: 30m
        """)
    assert workspace.main("--check") == 0, capsys.readouterr().err


# -- batch runs ------------------------------------------------------------------------------------


def test_batch_sends_only_with_alerts_and_each_incident_once(workspace, receiver, monkeypatch):
    monkeypatch.setenv("OMP_TEST_TOKEN", "Bearer t0ken")
    plant(workspace, f"""\
        destinations:
          - {{name: ops, type: webhook, url: "{receiver.url}", headers_from_env: {{Authorization: OMP_TEST_TOKEN}}}}
        """)
    workspace.write("a.log", lines("CHARGEBACK", "SUCCESS", "REFUND"))
    assert workspace.main("-q") == 0
    assert receiver.requests == 0  # off by default in a batch run
    assert "alerts" not in workspace.summary()

    assert workspace.main("-q", "--alerts") == 0
    assert sorted(receiver.ids()) == ["odd-statuses:CHARGEBACK", "refunds:REFUND"]
    assert receiver.headers[0]["Authorization"] == "Bearer t0ken"  # from the environment, never from the file
    text = json.dumps(receiver.bodies)
    assert "[card ****1111]" in text and "[email]" in text  # the redact step of anomalies.json
    assert "4111 1111" not in text and "ann@example.com" not in text
    assert alerts_of(workspace)["destinations"]["ops"]["sent"] == 2

    workspace.write("b.log", lines("DISPUTE"))
    assert workspace.main("-q", "--alerts") == 0  # only what is new is sent
    assert sorted(receiver.ids()) == ["odd-statuses:CHARGEBACK", "odd-statuses:DISPUTE", "refunds:REFUND"]
    assert workspace.main("-q", "--alerts") == 0
    assert len(receiver.bodies) == 2
    assert alerts_of(workspace)["destinations"]["ops"] == {
        "type": "webhook", "sent": 3, "queued": 0, "failing": False, "last_error": None, "last_error_at": None,
        "last_sent_at": None}


def test_min_severity_and_rules_filter_each_destination(workspace):
    got = {name: workspace.root / f"{name}.json" for name in ("pager", "all", "refund_desk")}
    script = workspace.root / "save.py"
    script.write_text("import sys, pathlib\npathlib.Path(sys.argv[1]).write_text(sys.stdin.read())\n")
    plant(workspace, f"""\
        batch: true
        destinations:
          - {{name: pager, type: command, argv: ["{sys.executable}", save.py, "{got['pager']}"], min_severity: high}}
          - {{name: all, type: command, argv: ["{sys.executable}", save.py, "{got['all']}"]}}
          - {{name: refund-desk, type: command, argv: ["{sys.executable}", save.py, "{got['refund_desk']}"],
             rules: [refunds]}}
        """)
    workspace.write("a.log", lines("CHARGEBACK", "REFUND", "VOID"))
    assert workspace.main("-q") == 0  # alerts.batch: true sends without --alerts

    def ids(name: str) -> list[str]:
        return [i["id"] for i in json.loads(got[name].read_text())["incidents"]]

    assert ids("pager") == ["odd-statuses:CHARGEBACK", "odd-statuses:VOID"]
    assert ids("all") == ["odd-statuses:CHARGEBACK", "odd-statuses:VOID", "refunds:REFUND"]  # most severe first
    assert ids("refund_desk") == ["refunds:REFUND"]


def test_incidents_committed_together_are_one_message_capped_with_and_n_more(workspace, receiver):
    plant(workspace, f"""\
        destinations: [{{name: ops, type: webhook, url: "{receiver.url}", max_per_message: 2}}]
        """)
    workspace.write("a.log", lines(*HIGH, "REFUND"))
    assert workspace.main("-q", "--alerts") == 0
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["count"] == 6 and len(body["incidents"]) == 2 and body["more"] == 4
    assert body["text"].splitlines()[-1] == "and 4 more: " + ", ".join(body["more_ids"])
    assert body["more_ids"][-1] == "refunds:REFUND"  # the least severe are the ones cut
    not_shown = alerts_of(workspace)["not_shown"]
    assert [entry["id"] for entry in not_shown] == body["more_ids"]
    assert sorted(receiver.ids()) == sorted([f"odd-statuses:{s}" for s in HIGH] + ["refunds:REFUND"])


def test_command_alerter_gets_the_json_on_stdin_without_a_shell(workspace):
    out = workspace.root / "got.json"
    plant(workspace, f"""\
        destinations:
          - name: script
            type: command
            argv: ["{sys.executable}", "-c", "import sys; open(sys.argv[1], 'w').write(sys.stdin.read())", "{out}"]
        """)
    workspace.write("a.log", lines("HOLD"))
    assert workspace.main("-q", "--alerts") == 0
    message = json.loads(out.read_text())
    assert message["destination"] == "script" and message["count"] == 1
    incident = message["incidents"][0]
    assert (incident["id"], incident["event"], incident["severity"]) == ("odd-statuses:HOLD", "opened", "high")
    assert incident["samples"][0]["text"].endswith("card [card ****1111] of [email]")


def test_a_failing_command_stays_queued_and_is_sent_by_the_next_run(workspace, capsys, caplog):
    flag = workspace.root / "ok"
    out = workspace.root / "got.json"
    code = f"import os, sys; os.path.exists('{flag}') or sys.exit('mail relay down'); open('{out}', 'w').write('x')"
    plant(workspace, f"""\
        destinations: [{{name: script, type: command, argv: ["{sys.executable}", "-c", "{code}"]}}]
        """)
    workspace.write("a.log", lines("HOLD"))
    assert workspace.main("--alerts") == 0  # the run itself succeeded
    assert "destination 'script' failed (RuntimeError:" in caplog.text
    assert "alerts: 0 sent, 1 queued (script: RuntimeError:" in capsys.readouterr().out
    queued = alerts_of(workspace)["queued"]
    assert [(q["id"], q["attempts"]) for q in queued] == [("odd-statuses:HOLD", 1)]
    assert "exited with 1: mail relay down" in queued[0]["error"]
    flag.touch()
    assert workspace.main("-q", "--alerts") == 0
    assert out.exists() and alerts_of(workspace)["queued"] == []


class Inbox:
    """An SMTP server on 127.0.0.1 (aiosmtpd) in a thread: records each mail with its recipients."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.mails: list[Any] = []
        with socket.socket() as probe:  # a free port: the controller checks its own with a connection, so not 0
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's)
        self.mails.append((envelope.rcpt_tos, message_from_bytes(envelope.content, policy=default_policy)))
        return "250 OK"


@pytest.fixture
def inbox():
    server = Inbox()
    yield server
    server.controller.stop()


def test_email_to_a_local_smtp_server(workspace, inbox):
    plant(workspace, f"""\
        destinations:
          - name: mail
            type: email
            host: 127.0.0.1
            port: {inbox.port}
            from: omp@example.com
            to: [ops@example.com, oncall@example.com]
            max_per_message: 1
        """)
    workspace.write("a.log", lines("VOID", "REFUND"))
    assert workspace.main("-q", "--alerts") == 0
    assert len(inbox.mails) == 1
    to, mail = inbox.mails[0]
    assert to == ["ops@example.com", "oncall@example.com"]
    assert mail["Subject"] == "[Oh My Payments] 2 incidents: high odd-statuses VOID and more"
    body = mail.get_body(("plain",)).get_content()
    assert "[high] odd-statuses VOID" in body and body.rstrip().endswith("and 1 more: refunds:REFUND")
    # Every part as decoded, and the subject; not the raw text, whose MIME boundary (in the
    # Content-Type header too) is a random number that may hold 4111.
    texts = [part.get_payload(decode=True).decode("utf-8", "replace") for part in mail.walk()
             if not part.is_multipart()]
    assert any("[card ****1111]" in text for text in texts)  # the sample line is there, masked
    assert not any("4111" in text for text in [*texts, mail["Subject"]])
    attached = next(part for part in mail.iter_attachments() if part.get_filename() == "incidents.json")
    assert json.loads(attached.get_content())["more_ids"] == ["refunds:REFUND"]


# -- the rules of sending, on the clock ----------------------------------------------------------------


class Recording(Alerter):
    type_name = "recording"

    def setup(self) -> None:
        self.messages: list[Any] = []
        self.down = False

    def send(self, message: Any) -> None:
        if self.down:
            raise ConnectionError("down")
        self.messages.append(message)

    def events(self) -> list[tuple[str, str]]:
        return [(i["id"], i["event"]) for m in self.messages for i in m.incidents]


def incident(key: str, status: str = "open", severity: str = "high", rule: str = "spikes") -> dict[str, Any]:
    return {"id": f"{rule}:{key}@2025-07-22T10:00:00Z", "rule": rule, "key": key, "severity": severity,
            "score": 25.0, "status": status, "window_start": "2025-07-22T10:00:00Z"}


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1_800_000_000.0
        monkeypatch.setattr("core.alerts.time.time", lambda: self.now)


def committer(config: AlertConfig, checkpoint: Checkpoint, *, watching: bool = False):
    alerts = Alerts(config, checkpoint.alerts, records=0, watching=watching)
    summary = {"totals": {"records": 0}}

    def commit(*incidents: dict[str, Any]) -> dict[str, Any]:
        return alerts.commit({"anomalies": list(incidents)}, summary, checkpoint, deliver=True)

    return alerts, commit


def test_send_resolved_and_repeat_interval(monkeypatch):
    clock = Clock(monkeypatch)
    quiet, told = Recording("quiet"), Recording("told")
    config = AlertConfig((Destination("quiet", quiet, repeat_interval=3600.0),
                          Destination("told", told, send_resolved=True)))
    _, commit = committer(config, Checkpoint(RunState({})))
    commit(incident("a"))
    commit(incident("a"))  # unchanged: nothing new
    clock.now += 3600
    commit(incident("a"))  # open for an hour: the reminder
    commit(incident("a", status="resolved"))
    clock.now += 7200
    commit(incident("a", status="resolved"))  # resolved: no reminder
    assert quiet.events() == [("spikes:a@2025-07-22T10:00:00Z", "opened"), ("spikes:a@2025-07-22T10:00:00Z", "repeat")]
    assert told.events() == [("spikes:a@2025-07-22T10:00:00Z", "opened"), ("spikes:a@2025-07-22T10:00:00Z", "resolved")]
    assert told.messages[1].incidents[0]["status"] == "resolved"


def test_silenced_incidents_are_listed_not_sent_until_the_silence_ends(monkeypatch):
    clock = Clock(monkeypatch)
    ops = Recording("ops")
    until = clock.now + 600
    config = AlertConfig((Destination("ops", ops),),
                         (Silence("spikes", "a", until, "2027-01-15T08:10:00Z", "maintenance"),))
    _, commit = committer(config, Checkpoint(RunState({})))
    report = commit(incident("a"), incident("b"))
    assert ops.events() == [("spikes:b@2025-07-22T10:00:00Z", "opened")]
    assert report["silenced"] == [{"id": "spikes:a@2025-07-22T10:00:00Z", "rule": "spikes", "key": "a",
                                   "until": "2027-01-15T08:10:00Z"}]
    clock.now = until
    report = commit(incident("a"), incident("b"))
    assert ops.events()[1:] == [("spikes:a@2025-07-22T10:00:00Z", "opened")] and report["silenced"] == []


def test_a_failure_is_retried_with_back_off_reported_and_never_dropped(monkeypatch):
    clock = Clock(monkeypatch)
    ops = Recording("ops")
    ops.down = True
    config = AlertConfig((Destination("ops", ops),), retry_first=10.0, retry_max=40.0, retry_attempts=3)
    checkpoint = Checkpoint(RunState({}))
    alerts = Alerts(config, checkpoint.alerts, records=0, watching=True)
    alerts.commit({"anomalies": [incident("a")]}, {"totals": {"records": 0}}, checkpoint, deliver=False)
    alerts.deliver()
    waits = []
    for _ in range(4):
        entry = alerts.state.outbox[0]
        waits.append(entry["next_try"] - clock.now)
        clock.now = entry["next_try"] - 1
        alerts.deliver()  # not due yet: not tried
        clock.now += 1
        alerts.deliver()
    assert waits == [10.0, 20.0, 40.0, 40.0]
    report = alerts.report()
    assert report["destinations"]["ops"]["failing"] and report["failed"][0]["attempts"] == 5
    assert checkpoint.alerts.outbox[0]["id"] == "spikes:a@2025-07-22T10:00:00Z"  # committed, queued
    ops.down = False
    clock.now += 40
    alerts.deliver()
    assert ops.events() == [("spikes:a@2025-07-22T10:00:00Z", "opened")]
    assert (alerts.sent_total, alerts.failures_total) == (1, 5) and alerts.state.outbox == []


class Stalled(Recording):
    """A destination whose send hangs for ``stall`` seconds (a server sending its answer a byte at a time)."""

    timeout = 0.5
    stall = 30.0

    def send(self, message: Any) -> None:
        time.sleep(self.stall)
        super().send(message)


def test_a_destination_that_never_finishes_fails_at_its_timeout_and_holds_up_no_other():
    # One thread sent to every destination in turn, and a send was bounded only per socket read:
    # a trickling answer held every destination's alerts for ever.
    stalled, ops = Stalled("stalled"), Recording("ops")
    config = AlertConfig((Destination("stalled", stalled), Destination("ops", ops)))
    checkpoint = Checkpoint(RunState({}))
    alerts = Alerts(config, checkpoint.alerts, records=0, watching=True)
    alerts.commit({"anomalies": [incident("a")]}, {"totals": {"records": 0}}, checkpoint, deliver=False)
    started = time.monotonic()
    alerts.deliver()
    took = time.monotonic() - started
    assert took < stalled.timeout + 3, f"deliver took {took:.1f} s"
    assert ops.events() == [("spikes:a@2025-07-22T10:00:00Z", "opened")]
    report = alerts.report()["destinations"]
    assert report["stalled"]["last_error"] == "TimeoutError: not sent within 0.5 s"
    assert [e["destination"] for e in alerts.state.outbox] == ["stalled"]  # queued, to be tried again
    alerts.state.outbox[0]["next_try"] = 0
    alerts.deliver()  # still sending the first time: not sent twice at once
    assert alerts.state.outbox[0]["attempts"] == 1


class Hostile:
    """An HTTP endpoint that answers a POST as ``mode`` says: an endless 200, or a redirect to ``location``."""

    def __init__(self, mode: str, location: str = "") -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers["Content-Length"]))
                hostile.requests.append(("POST", dict(self.headers)))
                if mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", location)
                    self.end_headers()
                    return
                self.send_response(200)
                self.end_headers()
                try:
                    for _ in range(2000):  # 2 GB, were it all read
                        self.wfile.write(b"x" * (1 << 20))
                except OSError:  # the client stopped reading: as it should
                    pass

            def do_GET(self) -> None:  # noqa: N802
                hostile.requests.append(("GET", dict(self.headers)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_webhook_reads_a_bounded_answer_and_follows_no_redirect(monkeypatch):
    from plugins.alerters import Webhook

    monkeypatch.setenv("OMP_TEST_TOKEN", "Bearer s3cret")
    endless, elsewhere = Hostile("endless"), Hostile("endless")
    redirect = Hostile("redirect", location=elsewhere.url)
    try:
        import resource
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        Webhook("hook", url=endless.url, timeout="5s").send(_message())  # read 64 KiB of it, not 2 GB
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB
        hook = Webhook("hook", url=redirect.url, headers_from_env={"Authorization": "OMP_TEST_TOKEN"}, timeout="5s")
        with pytest.raises(RuntimeError, match=f"answered 302 Found to {elsewhere.url}; only a 2xx answer"):
            hook.send(_message())
        assert elsewhere.requests == []  # the token went nowhere else
    finally:
        for server in (endless, elsewhere, redirect):
            server.close()


def test_a_command_that_hangs_is_killed_with_what_it_started_and_its_output_is_bounded(tmp_path):
    from plugins.alerters import Command

    marker = tmp_path / "child.pid"
    hang = (f"import subprocess, sys, time; p = subprocess.Popen(['sleep', '300']); "
            f"open('{marker}', 'w').write(str(p.pid)); time.sleep(300)")
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="did not finish within 1 s; it was killed"):
        Command("hang", argv=[sys.executable, "-c", hang], timeout="1s").send(_message())
    assert time.monotonic() - started < 5
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child), "the command's own child was left running"
    loud = ("import sys; sys.stdout.write('x' * (300 << 20)); sys.stderr.write('y' * (50 << 20) + '\\nthe end'); "
            "sys.exit(3)")
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(RuntimeError, match="exited with 3: the end$"):
        Command("loud", argv=[sys.executable, "-c", loud], timeout="60s").send(_message())
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB: not 350 MB


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(") ")[1].split()[0] != "Z"  # a zombie is dead, only not reaped
    except (OSError, IndexError):
        return False


def _message() -> Any:
    from core.alerts import Message

    return Message("hook", (incident("a"),), (), "2025-07-22T10:00:00Z")


def test_no_data_after_raises_an_incident_on_the_wall_clock(monkeypatch):
    clock = Clock(monkeypatch)
    ops = Recording("ops")
    config = AlertConfig((Destination("ops", ops, send_resolved=True),), no_data_after=600.0)
    checkpoint = Checkpoint(RunState({}))
    alerts = Alerts(config, checkpoint.alerts, records=0, watching=True, data_name="data")
    started = clock.now
    clock.now += 599
    alerts._no_data(clock.now)
    assert alerts.state.no_data is None
    clock.now += 1
    alerts._no_data(clock.now)
    alerts._plan(clock.now)
    alerts.deliver()
    ident = f"no-data:data@{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(started))}"
    assert ops.events() == [(ident, "opened")]
    alerts.commit({"anomalies": []}, {"totals": {"records": 5}}, checkpoint, deliver=False)  # records again
    alerts.deliver()
    assert ops.events()[1:] == [(ident, "resolved")]
    assert alerts.state.no_data is None


def test_reconfigure_keeps_what_was_sent_and_says_what_it_drops(monkeypatch, caplog):
    Clock(monkeypatch)
    ops, old = Recording("ops"), Recording("old")
    old.down = True
    alerts, commit = committer(AlertConfig((Destination("ops", ops), Destination("old", old))),
                               Checkpoint(RunState({})))
    commit(incident("a"))
    pager = Recording("pager")
    alerts.reconfigure(AlertConfig((Destination("ops", ops), Destination("pager", pager, min_severity="critical"))))
    assert "1 queued notification dropped: destination old no longer configured" in caplog.text
    report = commit(incident("a"), incident("b", severity="critical"))
    assert ops.events() == [("spikes:a@2025-07-22T10:00:00Z", "opened"), ("spikes:b@2025-07-22T10:00:00Z", "opened")]
    assert pager.events() == [("spikes:b@2025-07-22T10:00:00Z", "opened")]
    assert set(report["destinations"]) == {"ops", "pager"} and report["queued"] == []


def test_alert_state_survives_the_checkpoint_and_a_rebuild(workspace, receiver):
    plant(workspace, f"""\
        destinations: [{{name: ops, type: webhook, url: "{receiver.url}"}}]
        """)
    workspace.write("a.log", lines("HOLD"))
    assert workspace.main("-q", "--alerts") == 0
    workspace.rules_file("odd.yaml", RULES.replace("severity: low", "severity: low\n  max_statuses: 50"))
    assert workspace.main("-q", "--alerts") == 0  # a rule's parameters changed: counts rebuilt, sends kept
    assert receiver.ids() == ["odd-statuses:HOLD"]


# -- watch mode: through the real CLI, with real signals ----------------------------------------------


@pytest.mark.slow
def test_watcher_sends_each_incident_exactly_once_across_a_sigterm_restart(workspace, receiver):
    plant(workspace, f"""\
        destinations: [{{name: ops, type: webhook, url: "{receiver.url}"}}]
        """)
    workspace.write("a.log", lines("CHARGEBACK"))
    with Watcher(workspace) as watcher:
        watcher.wait_for(lambda: receiver.ids() == ["odd-statuses:CHARGEBACK"], "the first incident")
        drop(workspace.data, "b.log", lines("DISPUTE", "REFUND"))
        watcher.wait_for(lambda: len(receiver.ids()) >= 3, "the incidents of b.log")
        assert watcher.stop(signal.SIGTERM) == 0
        drop(workspace.data, "c.log", lines("VOID"))  # while it is stopped
        watcher.start()
        watcher.wait_for(lambda: "odd-statuses:VOID" in receiver.ids(), "the incident of c.log")
        drop(workspace.data, "d.log", lines("HOLD"))
        watcher.wait_for(lambda: "odd-statuses:HOLD" in receiver.ids(), "the incident of d.log")
        assert watcher.stop(signal.SIGTERM) == 0
    assert sorted(receiver.ids()) == sorted(["odd-statuses:CHARGEBACK", "odd-statuses:DISPUTE", "refunds:REFUND",
                                             "odd-statuses:VOID", "odd-statuses:HOLD"])  # each exactly once
    assert alerts_of(workspace)["destinations"]["ops"]["sent"] == 5


def test_a_watcher_filters_and_groups_per_destination_by_command_email_and_webhook(workspace, receiver, inbox):
    got = workspace.root / "pager.jsonl"
    append = "import sys; open(sys.argv[1], 'a').write(sys.stdin.read().replace(chr(10), ' ') + chr(10))"
    plant(workspace, f"""\
        destinations:
          - {{name: pager, type: command, argv: ["{sys.executable}", "-c", "{append}", "{got}"], min_severity: high}}
          - {{name: mail, type: email, host: 127.0.0.1, port: {inbox.port}, from: omp@example.com,
             to: [ops@example.com], max_per_message: 2}}
          - {{name: refund-desk, type: webhook, url: "{receiver.url}", rules: [refunds]}}
        """)
    with Watcher(workspace) as watcher:
        watcher.wait_started()
        drop(workspace.data, "a.log", lines(*HIGH, "REFUND"))  # six incidents in one commit
        watcher.wait_for(lambda: got.exists() and inbox.mails and receiver.bodies, "every destination's message")
        drop(workspace.data, "b.log", lines("REFUND", "HOLD", second=30))  # nothing new: sent before
        watcher.wait_for(lambda: summary_of(workspace) and summary_of(workspace)["totals"]["records"] == 8,
                         "b.log to be committed")
        assert watcher.stop(signal.SIGTERM) == 0
    [paged] = [json.loads(line) for line in got.read_text().splitlines()]  # one message: min_severity high
    assert sorted(i["id"] for i in paged["incidents"]) == sorted(f"odd-statuses:{s}" for s in HIGH)
    [(_, mail)] = inbox.mails  # all six in one mail, two shown and "and 4 more"
    body = mail.get_body(("plain",)).get_content()
    assert mail["Subject"].startswith("[Oh My Payments] 6 incidents: high odd-statuses")
    assert body.rstrip().splitlines()[-1].startswith("and 4 more: ") and "refunds:REFUND" in body
    assert receiver.ids() == ["refunds:REFUND"]  # rules: [refunds] alone


@pytest.mark.slow
def test_watcher_loses_nothing_across_kill_9(workspace, receiver):
    plant(workspace, f"""\
        retry: {{first: 1s, max: 1s}}
        destinations: [{{name: ops, type: webhook, url: "{receiver.url}"}}]
        """)
    receiver.failing = True  # down: the notifications wait in the committed outbox
    workspace.write("a.log", lines("CHARGEBACK", "REFUND"))
    with Watcher(workspace) as watcher:
        watcher.wait_for(lambda: receiver.requests >= 2, "a retry of the failing endpoint")
        queued = watcher.wait_for(lambda: alerts_of(workspace)["queued"], "summary.json to list the queue")
        assert {q["id"] for q in queued} == {"odd-statuses:CHARGEBACK", "refunds:REFUND"}
        watcher.kill()  # SIGKILL: no shutdown at all
        receiver.failing = False
        watcher.start()
        watcher.wait_for(lambda: set(receiver.ids()) == {"odd-statuses:CHARGEBACK", "refunds:REFUND"},
                         "the queued incidents after the restart")
        drop(workspace.data, "b.log", lines("VOID"))
        watcher.wait_for(lambda: "odd-statuses:VOID" in receiver.ids(), "the incident of b.log")
        watcher.kill()  # right after a delivery, before any commit records it
        watcher.start()
        watcher.wait_started()
        drop(workspace.data, "c.log", lines("HOLD"))
        watcher.wait_for(lambda: "odd-statuses:HOLD" in receiver.ids(), "the incident of c.log")
        assert watcher.stop(signal.SIGTERM) == 0
    ids = receiver.ids()
    assert set(ids) == {"odd-statuses:CHARGEBACK", "refunds:REFUND", "odd-statuses:VOID", "odd-statuses:HOLD"}
    assert ids.count("odd-statuses:HOLD") == 1  # at least once across kill -9; exactly once across SIGTERM


@pytest.mark.slow
def test_watcher_retries_a_failing_endpoint_while_no_data_arrives(workspace):
    receiver = Receiver(fail_first=2)
    try:
        plant(workspace, f"""\
            retry: {{first: 1s, max: 1s, attempts: 2}}
            destinations: [{{name: ops, type: webhook, url: "{receiver.url}"}}]
            """)
        workspace.write("a.log", lines("CHARGEBACK"))
        with Watcher(workspace) as watcher:
            failing = watcher.wait_for(lambda: alerts_of(workspace)["failed"], "summary.json to report the failure")
            assert failing[0]["id"] == "odd-statuses:CHARGEBACK" and "answered 500" in failing[0]["error"]
            assert alerts_of(workspace)["destinations"]["ops"]["failing"] is True
            drop(workspace.data, "b.log", lines("SUCCESS"))  # the pipeline goes on meanwhile
            watcher.wait_for_lines(2)
            watcher.wait_for(lambda: receiver.ids(), "the endpoint to receive it once it recovers")
            report = watcher.wait_for(lambda: (a := alerts_of(workspace))["destinations"]["ops"]["sent"] and a,
                                      "summary.json to show it sent")
            assert report["queued"] == [] and report["failed"] == []
            assert "destination 'ops' failed 2 times" in watcher.log
            assert watcher.stop(signal.SIGTERM) == 0
        assert receiver.ids() == ["odd-statuses:CHARGEBACK"] and receiver.requests == 3
    finally:
        receiver.close()


@pytest.mark.slow
def test_watcher_raises_no_data_and_resolves_it(workspace, receiver):
    plant(workspace, f"""\
        no_data_after: 2s
        destinations: [{{name: ops, type: webhook, url: "{receiver.url}", send_resolved: true, rules: [no-data]}}]
        """)
    workspace.write("a.log", lines("SUCCESS"))
    with Watcher(workspace) as watcher:
        watcher.wait_started()
        watcher.wait_for(lambda: receiver.bodies, "the no-data incident")
        opened = receiver.bodies[0]["incidents"][0]
        assert (opened["rule"], opened["event"], opened["status"]) == ("no-data", "opened", "open")
        watcher.wait_for(lambda: alerts_of(workspace)["no_data"]["incident"] == opened["id"],
                         "summary.json to name the no-data incident while no data arrives")
        drop(workspace.data, "b.log", lines("SUCCESS"))
        watcher.wait_for(lambda: len(receiver.bodies) == 2, "the no-data incident resolved")
        resolved = receiver.bodies[1]["incidents"][0]
        assert (resolved["id"], resolved["event"], resolved["status"]) == (opened["id"], "resolved", "resolved")
        assert watcher.stop(signal.SIGTERM) == 0


# -- the README's examples work as printed --------------------------------------------------------------


def test_readme_alerts_settings_work_as_printed(workspace, receiver, monkeypatch, capsys):
    from tests.test_plugins import _readme_block

    monkeypatch.setenv("OMP_WEBHOOK_TOKEN", "Bearer from-the-environment")
    monkeypatch.setenv("OMP_SMTP_PASSWORD", "pw")
    notify = workspace.root / "notify.sh"
    notify.write_text(f"#!/bin/sh\ncat > '{workspace.root / 'paged.json'}'\n")
    notify.chmod(0o755)
    printed = _readme_block("## Alerts", "yaml")
    workspace.configure(printed)
    assert workspace.main("--check") == 0, capsys.readouterr().err

    with socket.socket() as probe:  # a port nobody listens on: the mail stays queued, the run goes on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    workspace.configure(printed.replace("https://alerts.example.com/omp", receiver.url)
                        .replace("smtp.example.com", "127.0.0.1").replace("port: 587", f"port: {closed}"))
    workspace.write("a.log", "2025-07-22T10:00:00Z CHARGEBACK PaymentService user1 disputed\n")
    assert workspace.main("-q", "--alerts") == 0
    assert receiver.ids() == ["unknown-statuses:CHARGEBACK"]  # medium, at least min_severity medium
    assert receiver.headers[0]["Authorization"] == "Bearer from-the-environment"
    assert not (workspace.root / "paged.json").exists()  # not one of pager-script's rules
    report = alerts_of(workspace)
    assert report["destinations"]["ops-mail"]["queued"] == 1 and report["destinations"]["ops-webhook"]["sent"] == 1


def test_readme_destination_plugin_works_as_printed(workspace, receiver, monkeypatch, capsys):
    from tests.test_plugins import _readme_block

    (workspace.root / "chat_alerts.py").write_text(_readme_block("### A destination plugin", "python"))
    workspace.rules_file("odd.yaml", RULES)
    workspace.configure("rules: [odd-statuses, refunds]\n" + _readme_block("### A destination plugin", "yaml"))
    assert workspace.main("--check") == 2
    assert "destination 'payments-room': url_from_env: environment variable OMP_CHAT_WEBHOOK is not set" in \
        capsys.readouterr().err
    monkeypatch.setenv("OMP_CHAT_WEBHOOK", receiver.url)
    workspace.write("a.log", lines("CHARGEBACK", "REFUND"))
    assert workspace.main("-q", "--alerts") == 0
    assert len(receiver.bodies) == 1 and receiver.bodies[0]["channel"] == "#payments"
    assert receiver.bodies[0]["text"].splitlines()[1].startswith("[high] odd-statuses CHARGEBACK: ")
    assert receiver.bodies[0]["text"].startswith("Oh My Payments: 1 incident: high odd-statuses CHARGEBACK\n")
    assert "refunds:REFUND" not in receiver.bodies[0]["text"]  # low: under min_severity high


def test_the_report_shows_each_destination_what_waits_and_what_is_silenced(workspace, receiver):
    receiver.failing = True  # down: both notifications wait, with the endpoint's error
    plant(workspace, f"""\
        destinations:
          - {{name: ops, type: webhook, url: "{receiver.url}"}}
        silences: [{{rule: odd-statuses, key: VOID, until: "2099-01-01T00:00:00Z"}}]
        """)
    workspace.write("a.log", lines("CHARGEBACK", "REFUND", "VOID"))
    assert workspace.main("-q", "--alerts") == 0
    alerts = alerts_of(workspace)
    assert sorted(n["id"] for n in alerts["queued"] + alerts["failed"]) == ["odd-statuses:CHARGEBACK",
                                                                            "refunds:REFUND"]
    page = (workspace.output / "report.html").read_text()
    section = page[page.index('<section id="p-alerts">'):]
    section = section[:section.index("</section>")]
    assert "<td>ops</td><td>webhook</td>" in section
    for waiting in alerts["queued"] + alerts["failed"]:
        assert f"<code>{waiting['id']}</code>" in section
        assert waiting["error"] and waiting["error"] in html.unescape(section)
    assert ("<tr><td><code>odd-statuses:VOID</code></td><td>odd-statuses</td><td>VOID</td>"
            "<td>2099-01-01T00:00:00Z</td></tr>") in section
    assert "Failed sends: 1" in section

    receiver.failing = False  # back: the next run delivers them, and the page says so
    assert workspace.main("-q", "--alerts") == 0
    assert alerts_of(workspace)["destinations"]["ops"]["sent"] == 2
    page = (workspace.output / "report.html").read_text()
    section = page[page.index('<section id="p-alerts">'):]
    assert '<td>ops</td><td>webhook</td><td class="n">2</td><td class="n">0</td>' in section
    assert "Notifications not delivered yet" not in section[:section.index("</section>")]


def test_without_alerts_the_report_has_no_alerts_panel(workspace, receiver):
    plant(workspace, f"destinations: [{{name: ops, type: webhook, url: '{receiver.url}'}}]\n")
    workspace.write("a.log", lines("CHARGEBACK"))
    assert workspace.main("-q") == 0  # a batch run without --alerts sends nothing and reports no alerts
    assert 'id="p-alerts"' not in (workspace.output / "report.html").read_text()
