"""Alerts: each incident sent once to each destination that wants it, retried until delivered.

At every commit the incidents of anomalies.json (already through the redact step) are matched
against each destination's filters and the silences. An incident a destination was never sent
is queued (``opened``); with ``send_resolved``, its resolution is queued once (``resolved``);
with ``repeat_interval``, a reminder while it stays open (``repeat``). The queue (the outbox)
and the record of what was sent are part of the checkpoint, committed with the state: after a
graceful stop and a restart nothing is sent twice; after ``kill -9`` a notification delivered
since the last commit may go out again, with the same incident id, and none is lost.

A destination is sent what is due for it as one message, capped at ``max_per_message``; the rest
are named in it as "and N more" (and in summary.json). A send that fails is retried with
back-off (``retry.first`` doubling up to ``retry.max``); after ``retry.attempts`` failures it is
reported in summary.json and goes on being retried every ``retry.max``, never dropped. In watch
mode a background thread delivers and retries on the wall clock, so the pipeline never waits
for a destination, and raises the no-data incident (``no_data_after``). A batch run (with
``--alerts`` or ``alerts.batch``) tries each queued notification once, before its commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.alertconfig import DURATION, NO_DATA_RULE, SEVERITIES, AlertConfig, Alerter, Destination, seconds
from core.alertstate import AlertState
from core.errors import OutputValidationError
from core.output import check_output, write_checked

if TYPE_CHECKING:
    from core.checkpoint import Checkpoint

__all__ = ["DURATION", "Alerter", "Alerts", "Message", "seconds"]

log = logging.getLogger(__name__)

#: Entries each list in summary.json's ``alerts`` section shows at most (it stays the same size).
LISTED = 100
#: A send may take its destination's ``timeout`` and this much more (a message built, a connection closed).
SEND_GRACE = 2.0
#: How long a stopping watcher waits for a send in flight; one still going stays queued, sent again at the next start.
CLOSE_SECONDS = 3.0


def iso(moment: float | None) -> str | None:
    """Seconds since the epoch as ``2026-12-03T07:00:00Z``."""
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Message:
    """What one destination is sent at once: the notifications due for it, at most ``max_per_message``.

    Each of ``incidents`` is an incident as anomalies.json lists it (redacted), with ``event``:
    ``opened``, ``resolved`` or ``repeat``. ``more`` names the notifications over the cap (id,
    rule, severity, event), which the message only counts: "and N more".
    """

    destination: str
    incidents: tuple[dict[str, Any], ...]
    more: tuple[dict[str, Any], ...] = ()
    sent_at: str = ""

    def document(self) -> dict[str, Any]:
        """The message as JSON: what a webhook posts and a command reads on stdin."""
        return {"destination": self.destination, "sent_at": self.sent_at,
                "count": len(self.incidents) + len(self.more), "incidents": list(self.incidents),
                "more": len(self.more), "more_ids": [m["id"] for m in self.more], "text": self.text()}

    def subject(self) -> str:
        """One line: how many incidents, and the first."""
        total = len(self.incidents) + len(self.more)
        first = self.incidents[0] if self.incidents else {}
        head = f"{first.get('severity', '')} {first.get('rule', '')} {first.get('key', '')}".strip()
        return f"{total} incident{'s' if total != 1 else ''}: {head}" + (" and more" if total > 1 else "")

    def text(self) -> str:
        """The message for people: one line per incident, then "and N more" with their ids."""
        lines = [f"Oh My Payments: {self.subject()}"]
        lines += [_line(incident) for incident in self.incidents]
        if self.more:
            lines.append(f"and {len(self.more)} more: " + ", ".join(m["id"] for m in self.more))
        return "\n".join(lines)


def _line(incident: dict[str, Any]) -> str:
    """``[high] error-spikes PaymentService: spike 2025-07-22T10:00:00Z..10:30:00Z, 40 (expected 3.2); opened``."""
    start, end = incident.get("window_start"), incident.get("window_end")
    when = f" {start}" + (f"..{end}" if end else "") if start else ""
    expected = incident.get("expected")
    seen = f", {incident.get('observed')}" + (f" (expected {expected})" if expected is not None else "")
    kind = f"{incident['kind']}" if incident.get("kind") else incident.get("type", "")
    return (f"[{incident.get('severity')}] {incident.get('rule')} {incident.get('key')}: {kind}{when}{seen}; "
            f"{incident.get('event')} ({incident.get('status', 'open')}), id {incident.get('id')}")


class Alerts:
    """The alerts of one run or one watcher: its queue, its record, and (watching) its delivery thread.

    ``sent_total`` (incidents delivered), ``failures_total`` (failed sends), ``sent_by`` (incidents
    delivered, by rule and severity) and ``failures_by`` (failed sends, by destination) count from
    the process start, for metrics; another thread may read them at any time.
    """

    def __init__(self, config: AlertConfig, state: AlertState, *, records: int, watching: bool,
                 data_name: str = "data") -> None:
        self.config = config
        self.state = state
        self.watching = watching
        self.data_name = data_name
        self.sent_total = 0
        self.failures_total = 0
        self.sent_by: Counter[tuple[str, str]] = Counter()
        self.failures_by: Counter[str] = Counter()
        self._records = records
        self._incidents: list[dict[str, Any]] = []
        self._silenced: dict[str, tuple[dict[str, Any], Any]] = {}
        self._not_shown: deque[dict[str, Any]] = deque(maxlen=LISTED)
        self._health: dict[str, dict[str, Any]] = {d.name: {"last_error": None, "last_error_at": None,
                                                           "last_sent_at": None} for d in config.destinations}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: The thread of each destination's last send (``deliver``), while it may still run.
        self._sending: dict[str, threading.Thread] = {}
        self._summary: dict[str, Any] | None = None
        self._unreported = False  # delivered or failed since summary.json was last written
        self._uncommitted = False  # ... since the state was last put in the checkpoint
        if watching and state.last_record_at is None:
            state.last_record_at = time.time()  # no record yet: the feed is timed from the start

    @classmethod
    def for_run(cls, config: AlertConfig | None, checkpoint: Checkpoint, *, watching: bool,
                data_name: str = "data") -> Alerts | None:
        """The alerts of a run over ``checkpoint``, or None when no destination is configured."""
        if config is None or not config.destinations:
            return None
        state = checkpoint.state
        records = state.earlier.records + sum(f.records for f in state.files.values())
        return cls(config, checkpoint.alerts, records=records, watching=watching, data_name=data_name)

    # -- at each commit ------------------------------------------------------------------------

    def commit(self, anomalies: dict[str, Any], summary: dict[str, Any], checkpoint: Checkpoint, *,
               deliver: bool) -> dict[str, Any]:
        """Queue what the committed incidents call for; ``deliver`` (a batch run) sends it now.

        Puts a copy of the alert state in ``checkpoint``, to be saved with it, and returns the
        ``alerts`` section of summary.json.
        """
        now = time.time()
        with self._lock:
            self._incidents = list(anomalies.get("anomalies", []))
            records = summary["totals"]["records"]
            if records > self._records:
                self._arrived(now)
            self._records = records
            self._plan(now)
        if deliver:
            self.deliver(force=True)
        with self._lock:
            self.state.forget_oldest({i["id"] for i in self._incidents})
            checkpoint.alerts = self.state.copy()
            self._summary, self._unreported, self._uncommitted = summary, False, False
            report = self.report()
        self._wake.set()
        return report

    def _arrived(self, now: float) -> None:
        """New records arrived: the feed is alive; an open no-data incident is resolved."""
        self.state.last_record_at = now
        if self.state.no_data is not None and self.state.no_data["status"] == "open":
            self.state.no_data = {**self.state.no_data, "status": "resolved", "window_end": iso(now)}
            log.info("records arrive again: no-data incident %s resolved", self.state.no_data["id"])

    def _no_data(self, now: float) -> None:
        """Raise the no-data incident once no record arrived for ``no_data_after`` (watch mode)."""
        after, since = self.config.no_data_after, self.state.last_record_at
        if not (self.watching and after and since is not None) or now - since < after:
            return
        if self.state.no_data is not None and self.state.no_data["status"] == "open":
            return
        started = iso(since)
        self.state.no_data = {
            "id": f"{NO_DATA_RULE}:{self.data_name}@{started}", "rule": NO_DATA_RULE, "type": "no_data",
            "kind": "no_data", "severity": "high", "score": 0.0, "status": "open", "key": self.data_name,
            "subject": {"data_dir": self.data_name}, "window_start": started, "window_end": None, "windows": 1,
            "observed": 0, "expected": None, "count": 0, "samples": [], "first_seen": started, "last_seen": started,
            "detail": {"no_data_after_seconds": after},
        }
        self._unreported = self._uncommitted = True
        log.warning("no new record for %.0f s (since %s): raised no-data incident %s", now - since, started,
                    self.state.no_data["id"])

    def _plan(self, now: float) -> None:
        """Queue the notifications the listed incidents call for, for every destination that wants them."""
        incidents = list(self._incidents)
        if self.state.no_data is not None:
            incidents.append(self.state.no_data)
        queued = {(e["destination"], e["id"]): e for e in self.state.outbox}
        self._silenced = {}
        for incident in incidents:
            silence = self.config.silence_for(incident, now)
            if silence is not None:
                self._silenced[incident["id"]] = (incident, silence)
                continue
            for destination in self.config.destinations:
                if not destination.wants(incident):
                    continue
                entry = queued.get((destination.name, incident["id"]))
                if entry is not None:
                    entry["incident"] = {**incident, "event": entry["event"]}  # sent as it is now
                    continue
                event = self._event(destination, incident, now)
                if event is not None:
                    self.state.outbox.append({
                        "destination": destination.name, "id": incident["id"], "event": event,
                        "incident": {**incident, "event": event}, "queued_at": now, "attempts": 0,
                        "next_try": now, "error": None, "error_at": None,
                    })
        if self.state.no_data is not None and self.state.no_data["status"] == "resolved":
            self.state.no_data = None  # planned once resolved: done

    def _event(self, destination: Destination, incident: dict[str, Any], now: float) -> str | None:
        """What ``destination`` is to be told about ``incident`` now, if anything."""
        record = self.state.sent.get(destination.name, {}).get(incident["id"])
        if record is None:
            return "opened"
        status, sent_at = record
        if incident.get("status") == "resolved" and status == "open":
            if destination.send_resolved:
                return "resolved"
            record[0] = "resolved"  # no reminder for it any more
            return None
        repeat = destination.repeat_interval
        if status == "open" and incident.get("status") != "resolved" and repeat and now - sent_at >= repeat:
            return "repeat"
        return None

    # -- delivery ------------------------------------------------------------------------------

    def deliver(self, *, force: bool = False) -> None:
        """Send each destination what is due for it (all that is queued, with ``force``) as one message.

        The destinations are sent to at once, each in a thread of its own, and each send has until
        its destination's ``timeout`` (and ``SEND_GRACE``) to end: one that sends slowly, a byte at a
        time, or never answers fails then, without holding up the others. A send given up on is left
        to end in its thread; its destination gets no other send until it has.
        """
        now = time.time()
        with self._lock:
            due = {d.name: [e for e in self.state.outbox if e["destination"] == d.name
                            and (force or e["next_try"] <= now)] for d in self.config.destinations}
        sends = [self._send(destination, due[destination.name]) for destination in self.config.destinations
                 if due[destination.name] and not self._still_sending(destination.name)]
        for send in sends:
            send.finish()

    def _still_sending(self, name: str) -> bool:
        thread = self._sending.get(name)
        if thread is not None and thread.is_alive():
            return True
        self._sending.pop(name, None)
        return False

    def _send(self, destination: Destination, entries: list[dict[str, Any]]) -> _Send:
        entries = sorted(entries, key=_rank)
        shown, over = entries[: destination.max_per_message], entries[destination.max_per_message:]
        message = Message(destination.name, tuple(e["incident"] for e in shown),
                          tuple({"id": e["id"], "rule": e["incident"].get("rule"), "severity":
                                 e["incident"].get("severity"), "event": e["event"]} for e in over),
                          iso(time.time()) or "")
        send = _Send(self, destination, entries, over, message)
        self._sending[destination.name] = send.thread
        return send

    def _delivered(self, destination: Destination, entries: list[dict[str, Any]],
                   over: list[dict[str, Any]]) -> None:
        now = time.time()
        with self._lock:
            done = {id(e) for e in entries}
            self.state.outbox = [e for e in self.state.outbox if id(e) not in done]
            records = self.state.sent.setdefault(destination.name, {})
            for entry in entries:
                incident = entry["incident"]
                records[entry["id"]] = [incident.get("status", "open"), now]
                self.sent_by[(str(incident.get("rule")), str(incident.get("severity")))] += 1
            self.sent_total += len(entries)
            self.state.counts[destination.name] = self.state.counts.get(destination.name, 0) + len(entries)
            self._not_shown.extend({"destination": destination.name, "id": e["id"], "sent_at": iso(now)} for e in over)
            self._health[destination.name].update(last_sent_at=iso(now), last_error=None)
            self._unreported = self._uncommitted = True
        log.info("alerts: sent %d incident%s to '%s'", len(entries), "s" if len(entries) != 1 else "",
                 destination.name)

    def _failed(self, destination: Destination, entries: list[dict[str, Any]], error: str) -> None:
        now = time.time()
        with self._lock:
            self.failures_total += 1
            self.failures_by[destination.name] += 1
            for entry in entries:
                entry["attempts"] += 1
                entry.update(error=error, error_at=now, next_try=now + self.config.backoff(entry["attempts"]))
            self._health[destination.name].update(last_error=error, last_error_at=iso(now))
            self._unreported = self._uncommitted = True
            attempts = max(e["attempts"] for e in entries)
        wait = self.config.backoff(attempts)
        if attempts >= self.config.retry_attempts:
            log.error("alerts: destination '%s' failed %d times (%s); %d notification%s stay queued, retried "
                      "every %.0f s", destination.name, attempts, error, len(entries),
                      "s" if len(entries) != 1 else "", wait)
        else:
            log.warning("alerts: destination '%s' failed (%s); retrying in %.0f s", destination.name, error, wait)

    def reconfigure(self, config: AlertConfig) -> None:
        """Use a new ``alerts:`` block from the next delivery round on (a configuration reload).

        What was sent stays sent. Notifications queued for a destination that is no longer
        configured are dropped, with a warning naming how many.
        """
        with self._lock:
            names = {d.name for d in config.destinations}
            gone = [e for e in self.state.outbox if e["destination"] not in names]
            if gone:
                log.warning("alerts: %d queued notification%s dropped: destination%s %s no longer configured",
                            len(gone), "s" if len(gone) != 1 else "", "s" if len(gone) != 1 else "",
                            ", ".join(sorted({e["destination"] for e in gone})))
            self.state.outbox = [e for e in self.state.outbox if e["destination"] in names]
            self._health = {name: self._health.get(name, {"last_error": None, "last_error_at": None,
                                                          "last_sent_at": None}) for name in names}
            self.config = config
            self._unreported = self._uncommitted = True

    # -- the watcher's thread --------------------------------------------------------------------

    def start(self) -> None:
        """Deliver, retry and watch for no data on the wall clock, in a background thread (watch mode)."""
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                now = time.time()
                with self._lock:
                    if self._summary is not None:  # not before the catch-up: it may bring what came meanwhile
                        self._no_data(now)
                    self._plan(now)  # reminders and ended silences are due by the clock, not by data
                self.deliver()
            except Exception:  # a bug here must not end deliveries for the rest of the watcher's life
                log.exception("alerts: delivery round failed")
            self._wake.wait(timeout=1.0)
            self._wake.clear()

    def close(self) -> None:
        """Stop the thread once a send in flight ends, waiting ``CLOSE_SECONDS`` at most."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=CLOSE_SECONDS)
        if self._thread.is_alive():
            log.warning("alerts: a send still in flight at shutdown; it stays queued and is sent again at the "
                        "next start")
        self._thread = None

    def refresh(self, output_dir: Path) -> None:
        """Rewrite summary.json with a new ``alerts`` section if deliveries changed it since it was written.

        The watcher's main thread calls it between commits (the one thread that writes the outputs),
        so a failing destination shows in summary.json while no data arrives.
        """
        with self._lock:
            if not self._unreported or self._summary is None:
                return
            self._unreported = False
            summary = {**self._summary, "alerts": self.report()}
        try:
            check_output(summary, "summary")
        except OutputValidationError as exc:  # a bug here must not stop the watcher: the next commit writes it
            log.error("alerts: summary.json not rewritten: %s", exc)
            return
        write_checked(output_dir / "summary.json", summary)

    def keep(self, checkpoint: Checkpoint) -> bool:
        """Put the alert state in ``checkpoint`` if it changed since the last commit; whether it did.

        A watcher stopping gracefully saves it then, so that what was delivered since the last
        commit is not sent again after the restart.
        """
        with self._lock:
            if not self._uncommitted:
                return False
            checkpoint.alerts, self._uncommitted = self.state.copy(), False
            return True

    # -- summary.json ------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """summary.json's ``alerts`` section."""
        with self._lock:
            outbox = sorted(self.state.outbox, key=lambda e: (e["queued_at"], e["destination"], e["id"]))
            limit = self.config.retry_attempts
            return {
                "destinations": {d.name: self._destination_report(d, outbox) for d in self.config.destinations},
                "queued": [_queued(e) for e in outbox[:LISTED]],
                "failed": [_queued(e) for e in outbox if e["attempts"] >= limit][:LISTED],
                "silenced": [{"id": ident, "rule": incident.get("rule"), "key": incident.get("key"),
                              "until": silence.until_text}
                             for ident, (incident, silence) in sorted(self._silenced.items())][:LISTED],
                "not_shown": list(self._not_shown),
                "no_data": {"after_seconds": self.config.no_data_after,
                            "last_record_at": iso(self.state.last_record_at),
                            "incident": self.state.no_data["id"] if self.state.no_data else None},
                "sent_total": self.sent_total,
                "failures_total": self.failures_total,
            }

    def _destination_report(self, destination: Destination, outbox: list[dict[str, Any]]) -> dict[str, Any]:
        mine = [e for e in outbox if e["destination"] == destination.name]
        return {"type": destination.alerter.type_name, "sent": self.state.counts.get(destination.name, 0),
                "queued": len(mine), "failing": any(e["attempts"] >= self.config.retry_attempts for e in mine),
                **self._health[destination.name]}


class _Send:
    """One message on its way to one destination, in a thread of its own; ``finish`` waits up to its deadline."""

    def __init__(self, alerts: Alerts, destination: Destination, entries: list[dict[str, Any]],
                 over: list[dict[str, Any]], message: Message) -> None:
        self.alerts, self.destination, self.entries, self.over = alerts, destination, entries, over
        self.deadline = time.monotonic() + destination.alerter.timeout + SEND_GRACE
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, args=(message,), name=f"alert-{destination.name}",
                                       daemon=True)
        self.thread.start()

    def _run(self, message: Message) -> None:
        try:
            self.destination.alerter.send(message)
        except Exception as exc:  # any failure of a destination: retried, never lost
            self.error = f"{type(exc).__name__}: {exc}"

    def finish(self) -> None:
        """Record the outcome: delivered, failed, or failed for taking longer than its destination's timeout."""
        self.thread.join(timeout=max(0.0, self.deadline - time.monotonic()))
        if self.thread.is_alive():
            timeout = self.destination.alerter.timeout
            self.alerts._failed(self.destination, self.entries, f"TimeoutError: not sent within {timeout:g} s")
        elif self.error is not None:
            self.alerts._failed(self.destination, self.entries, self.error)
        else:
            self.alerts._delivered(self.destination, self.entries, self.over)


def _rank(entry: dict[str, Any]) -> tuple[Any, ...]:
    incident = entry["incident"]
    severity = incident.get("severity")
    level = SEVERITIES.index(severity) if severity in SEVERITIES else 0
    return (-level, -(incident.get("score") or 0.0), entry["id"], entry["event"])


def _queued(entry: dict[str, Any]) -> dict[str, Any]:
    return {"destination": entry["destination"], "id": entry["id"], "event": entry["event"],
            "attempts": entry["attempts"], "queued_at": iso(entry["queued_at"]), "next_try": iso(entry["next_try"]),
            "error": entry["error"]}
