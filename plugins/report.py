"""The HTML report: one self-contained page drawn from summary.json and anomalies.json alone.

Every number on the page is read from the two validated documents, never recomputed from the logs,
so the page and ``summary.json`` cannot disagree. Charts are pygal's inline SVG (no script, no
font or style from the network); each chart has a caption and a table with its numbers, for
screen readers and for copying. Panels are found by rule type through ``summary["rules"]``, since
output keys are configurable, and a panel whose data is absent is left out.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import pygal
from pygal.style import Style

from core import hookimpl

#: Severities, most severe first, as anomalies.json orders incidents.
SEVERITIES = ("critical", "high", "medium", "low")
#: Rows at most in one table or chart: a count_by over users, or a run over thousands of files,
#: would otherwise make a page of megabytes. What is left out is counted and stays in the JSON.
MAX_ROWS = 500
MAX_BARS = 25
#: Malformed samples shown: summary.json keeps up to 100 per file; the first few of each reason
#: are shown beside it.
MAX_SAMPLES = 200
EXAMPLES = 3
#: The run metrics shown, under the names the page gives them (summary.json's keys on the left).
RUN_METRICS = {"started_at": "Started at (UTC)", "elapsed_seconds": "Elapsed (s)",
               "lines_per_second": "Lines per second", "bytes_per_second": "Bytes per second",
               "peak_rss_mb": "Peak RSS (MB)", "workers": "Workers",
               "compiled": "Compiled extensions", "output_seconds": "Writing outputs (s)",
               "checkpoint_seconds": "Checkpoint (s)", "version": "Version"}
_STYLE = Style(
    background="transparent", plot_background="transparent", foreground="#222",
    foreground_strong="#111", foreground_subtle="#ccc", opacity=".85", opacity_hover=".95",
    colors=("#3b6ea8", "#d2582a", "#7a3ea8", "#2a9d5c"), font_family="system-ui, sans-serif",
    label_font_size=13, major_label_font_size=13, legend_font_size=13, value_font_size=12,
)
# pygal puts its whole configuration (labels included) in an inline <script> for its tooltip
# script, which the report does not load: that script would only run for nothing and add bytes.
_PYGAL_CONFIG = re.compile(r"<script[^>]*>.*?</script>", re.DOTALL)
# C0 and C1 control characters (tab aside) in sample lines are shown as \xNN, not sent raw.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(9), *range(10, 32), *range(127, 160))}
_CSS = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;background:#f6f7f9}
header,main{max-width:1100px;margin:0 auto;padding:0 12px}
header{padding-top:12px}
h1{font-size:1.5em;margin:.4em 0}
h2{font-size:1.2em;margin:0 0 .5em}
section{background:#fff;border:1px solid #dde;border-radius:6px;padding:12px;margin:12px 0}
nav{display:flex;flex-wrap:wrap;gap:.2em .9em}
nav a{white-space:nowrap}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(130px,1fr));gap:8px;margin:0}
.cards div{border:1px solid #dde;border-radius:6px;padding:8px}
.cards dt{font-size:.85em;color:#555}
.cards dd{margin:0;font-size:1.3em;font-weight:600;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:.5em 0;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e4e4ea;padding:3px 8px;text-align:left;vertical-align:top}
td.n,th.n{text-align:right}
caption{text-align:left;font-weight:600;padding:2px 0}
figure{margin:0}
figcaption{font-weight:600}
@media (min-width:760px){figure.side{display:grid;grid-template-columns:minmax(0,5fr) minmax(0,3fr);gap:0 16px;
align-items:start}figure.side figcaption{grid-column:1/-1}}
.chart svg{width:100%;height:auto;max-height:420px}
.note{color:#555;font-size:.9em}
.sev-critical{color:#fff;background:#a4161a}.sev-high{background:#f4a261}.sev-medium{background:#f6e27f}
.sev-low{background:#dfe8f2}
.sev{padding:0 6px;border-radius:3px;white-space:nowrap}
code,.line{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em}
.line{white-space:pre-wrap;word-break:break-all;display:block}
table.incidents tbody{border-top:2px solid #ccd}
tr.samples td{border-bottom:0;padding-top:0}
tr.samples ul{margin:0;padding-left:1em}
td.when{min-width:10em}
"""


def render_report(summary: dict[str, Any], anomalies: dict[str, Any], *, refresh_seconds: int | None = None) -> str:
    """The report page for one run's validated documents.

    :param summary: summary.json's document.
    :param anomalies: anomalies.json's document.
    :param refresh_seconds: in watch mode, reload the page this often (a meta refresh works from
        ``file://``, with no server); ``None`` for a page that stays as it is.
    :returns: the page, one self-contained HTML document.
    """
    incidents = sorted(anomalies.get("anomalies", []), key=_severity_rank)
    panels = [panel for panel in _panels(summary, anomalies, incidents) if panel]
    nav = "".join(f'<a href="#{panel.anchor}">{_e(panel.title)}</a>' for panel in panels)
    main = "".join(f'<section id="{p.anchor}"><h2>{_e(p.title)}</h2>{p.body}</section>' for p in panels)
    refresh = ""
    if refresh_seconds is not None:
        refresh = f'<meta http-equiv="refresh" content="{max(1, int(refresh_seconds))}">'
    stamp = anomalies.get("generated_at") or summary["run"]["started_at"]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{refresh}<title>Oh My Payments report</title><style>{_CSS}</style></head><body>"
        f'<header><h1>Oh My Payments report</h1><p class="note">Written {_e(stamp)} from summary.json '
        f"and anomalies.json (version {_e(summary['run']['version'])}).</p><nav>{nav}</nav></header>"
        f"<main>{main}</main></body></html>\n"
    )


class Panel(NamedTuple):
    """One section of the page: its anchor in the page, its heading, and its HTML."""

    anchor: str
    title: str
    body: str


def _panels(summary: dict[str, Any], anomalies: dict[str, Any],
            incidents: list[dict[str, Any]]) -> Iterable[Panel | None]:
    yield _totals(summary["totals"])
    for name, key in _rules_of(summary, "count_by"):
        yield _counts(name, key, summary[key], summary["details"].get(key))
    for name, key in _rules_of(summary, "timeline"):
        yield _timeline(name, key, summary[key], incidents)
    yield _incidents(anomalies, incidents)
    yield _alerts(summary.get("alerts"))
    for name, key in _rules_of(summary, "top_k"):
        yield _top(name, key, summary[key], summary["details"].get(key))
    for name, key in _rules_of(summary, "peak_hours"):
        yield _hours(name, key, summary[key], summary["details"].get(key, {}).get("hourly_volume"))
    yield _malformed(summary["totals"], summary["malformed_samples"])
    yield _files(summary["files"])
    yield _problems(summary, anomalies)
    yield from _other_results(summary)
    yield _run(summary["run"], summary["rules"])


# --- helpers ------------------------------------------------------------------------------------

def _e(value: Any) -> str:
    """Text as HTML: escaped, with control characters shown as ``\\xNN``."""
    return html.escape(str(value).translate(_CONTROLS), quote=True)


def _n(value: Any) -> str:
    """A number as the console shows it: integers with thousands separators, others as in the JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:,}" if isinstance(value, int) else _e(value)


def _title(key: str) -> str:
    return key.replace("_", " ").replace("-", " ").capitalize()


def _section(key: str, title: str, body: str) -> Panel:
    return Panel("p-" + re.sub(r"[^A-Za-z0-9_-]", "-", key), title, body)


def _rules_of(summary: dict[str, Any], rule_type: str) -> list[tuple[str, str]]:
    """(rule name, output key) of the enabled rules of a type whose result is in the summary."""
    return [(name, rule["key"]) for name, rule in summary["rules"].items()
            if rule["type"] == rule_type and rule["key"] in summary]


def _rule_note(name: str, key: str) -> str:
    return f'<p class="note">Rule <code>{_e(name)}</code>, <code>{_e(key)}</code> in summary.json.</p>'


def _table(caption: str, head: list[str], rows: Iterable[list[str]], numeric: Iterable[int] = ()) -> str:
    """A table of already escaped cells; columns in ``numeric`` are right-aligned."""
    right = set(numeric)

    def cls(column: int) -> str:
        return ' class="n"' if column in right else ""

    ths = "".join(f'<th scope="col"{cls(i)}>{h}</th>' for i, h in enumerate(head))
    trs = "".join("<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(row)) + "</tr>" for row in rows)
    return (f'<div class="scroll"><table><caption>{caption}</caption><thead><tr>{ths}</tr></thead>'
            f"<tbody>{trs}</tbody></table></div>")


def _more(shown: int, total: int, what: str) -> str:
    if total <= shown:
        return ""
    return f'<p class="note">{_n(total - shown)} more {_e(what)} are in the JSON document, not shown here.</p>'


def _figure(title: str, svg: str, table: str, *, table_open: bool = False) -> str:
    """A chart with its caption, and its numbers as a table (open, or behind a disclosure)."""
    numbers = table if table_open else f"<details><summary>The numbers behind the chart</summary>{table}</details>"
    return (f'<figure class="{"side" if table_open else "wide"}"><figcaption>{_e(title)}</figcaption>'
            f'<div class="chart" role="img" aria-label="{_e(title)}">{svg}</div>{numbers}</figure>')


def _chart(kind: type, **config: Any) -> Any:
    size = {"width": config.pop("width", 800), "height": config.pop("height", 360)}
    return kind(js=[], disable_xml_declaration=True, style=_STYLE, explicit_size=False, margin=8,
                value_formatter=_tick, **size, **config)


def _tick(value: float) -> str:
    """An axis label, short (1.2M, 800k): the exact numbers are on the bars and in the tables."""
    for suffix, size in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def _exact(value: float) -> str:
    return f"{value:,}"


def _svg(chart: Any) -> str:
    return _PYGAL_CONFIG.sub("", chart.render(is_unicode=True))


def _label(text: Any) -> str:
    """A chart label: control characters made visible; pygal escapes the rest."""
    return str(text).translate(_CONTROLS)


def _bars(title: str, counts: list[tuple[str, int]]) -> str:
    """A horizontal bar chart of names and counts, the largest on top."""
    shown = counts[:MAX_BARS]
    # Narrower than the wide charts: it sits beside its table, and its labels keep a readable size.
    chart = _chart(pygal.HorizontalBar, show_legend=False, width=560, height=max(140, 40 + 24 * len(shown)),
                   print_values=True, print_values_position="top", truncate_label=40)
    chart.x_labels = [_label(name) for name, _ in reversed(shown)]
    chart.add(title, [count for _, count in reversed(shown)], formatter=_exact)
    return _svg(chart)


def _approximate(detail: Any) -> str:
    if not isinstance(detail, dict) or not detail.get("approximate"):
        return '<p class="note">Exact counts.</p>'
    return (f'<p class="note"><strong>Approximate</strong> ({_e(detail.get("sketch", "sketch"))}, '
            f'{_n(detail.get("capacity", "?"))} values kept): each count is at most '
            f'<strong>max_error {_n(detail.get("max_error", "?"))}</strong> above the true one, and a value '
            f'not listed has at most that many records.</p>')


# --- panels ---------------------------------------------------------------------------------------

def _totals(totals: dict[str, Any]) -> Panel | None:
    names = ("lines", "records", "malformed", "blank", "files", "bytes")
    cards = "".join(f"<div><dt>{_e(_title(k))}</dt><dd>{_n(totals[k])}</dd></div>" for k in names if k in totals)
    return _section("totals", "Totals", f'<dl class="cards">{cards}</dl>')


def _counts(name: str, key: str, values: dict[str, int], detail: Any) -> Panel:
    """A ``count_by`` result: every value with its records (estimates past the memory share)."""
    return _ranked(name, key, list(values.items()), len(values), detail)


def _top(name: str, key: str, names: list[str], detail: Any) -> Panel:
    """A ``top_k`` result: the names, and their counts from ``details`` (plain, or under ``counts``
    with the error bound when approximate)."""
    counts = detail.get("counts", detail) if isinstance(detail, dict) else {}
    return _ranked(name, key, [(n, counts.get(n)) for n in names], len(names), detail)


def _ranked(name: str, key: str, ranked: list[tuple[str, int | None]], total: int, detail: Any) -> Panel:
    title = _title(key)
    rows = [[str(i), _e(value), _n(_blank(count))] for i, (value, count) in enumerate(ranked[:MAX_ROWS], 1)]
    table = _table(_e(title), ["#", "Value", "Records"], rows, numeric=(0, 2))
    counted = [(value, count) for value, count in ranked if isinstance(count, int)]
    if counted:
        table = _figure(f"{title}: records per value", _bars(title, counted), table, table_open=True)
    body = _rule_note(name, key) + _approximate(detail) + table + _more(len(rows), total, "values")
    return _section(key, title, body)


def _hours(name: str, key: str, peaks: list[str], histogram: dict[str, int] | None) -> Panel | None:
    listed = ", ".join(_e(p) for p in peaks) or "none"
    body = f"<p>Peak hours (UTC), busiest first: <strong>{listed}</strong>.</p>"
    if histogram:
        chart = _chart(pygal.StackedBar, height=320, legend_at_bottom=True, x_label_rotation=-45,
                       truncate_label=-1, show_minor_x_labels=True)
        chart.x_labels = [hour[:2] for hour in histogram]
        chart.add("records", [None if h in peaks else n for h, n in histogram.items()], formatter=_exact)
        chart.add("records, peak hour", [n if h in peaks else None for h, n in histogram.items()], formatter=_exact)
        rows = [[_e(h), _n(n), "peak" if h in peaks else ""] for h, n in histogram.items()]
        table = _table("Records per hour of day (UTC)", ["Hour", "Records", ""], rows, numeric=(1,))
        title = "Records per hour of day (UTC), every day folded into one; peak hours marked"
        body += _figure(title, _svg(chart), table)
    return _section(key, "Hours of the day", _rule_note(name, key) + body)


def _timeline(name: str, key: str, timeline: dict[str, Any], incidents: list[dict[str, Any]]) -> Panel | None:
    points = timeline["points"]
    width = timeline["every_seconds"]
    statuses = ", ".join(_e(s) for s in timeline.get("statuses", []))
    body = (f"<p>Records per {_e(_duration(width))} of event time, and the share of them with a failure-like "
            f"status ({statuses}). A dot marks each bucket that an incident's windows overlap; its number is in "
            f"the incident table. {_n(timeline['outside'])} records had a time outside the plausible range and "
            "are not placed.</p>")
    if points:
        marks = _incident_marks(points, width, incidents)
        body += _figure("Volume and failure rate over event time", _timeline_svg(points, marks),
                        _timeline_table(points, marks))
    return _section(key, "Volume and failures over time", _rule_note(name, key) + body)


def _timeline_svg(points: list[dict[str, Any]], marks: list[list[int]]) -> str:
    labels = [p["start"][5:16].replace("T", " ") for p in points]
    step = max(1, len(points) // 8)
    chart = _chart(pygal.Line, height=380, legend_at_bottom=True, x_label_rotation=-30, show_dots=False,
                   show_minor_x_labels=False, truncate_label=-1, include_x_axis=True)
    chart.x_labels = labels
    chart.x_labels_major = labels[::step]
    chart.add("records", [p["records"] for p in points], formatter=_exact)
    chart.add("incident", [p["records"] if m else None for p, m in zip(points, marks, strict=True)],
              stroke=False, show_dots=True, dots_size=5, formatter=_exact)
    chart.add("failure rate % (right axis)", [_rate(p) for p in points], secondary=True,
              formatter=lambda v: f"{v:.2f}%")
    return _svg(chart)


def _timeline_table(points: list[dict[str, Any]], marks: list[list[int]]) -> str:
    rows = [[_e(p["start"]), _n(p["records"]), _n(p["failures"]), f"{_rate(p):.2f}%",
             ", ".join(f"#{i}" for i in m)] for p, m in zip(points, marks, strict=True)]
    return _table("Records and failures per bucket of event time", ["Start (UTC)", "Records", "Failures",
                  "Failure rate", "Incidents"], rows, numeric=(1, 2, 3))


def _rate(point: dict[str, Any]) -> float:
    return 100 * point["failures"] / point["records"] if point["records"] else 0.0


def _duration(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds} seconds"


def _incident_marks(points: list[dict[str, Any]], width: int, incidents: list[dict[str, Any]]) -> list[list[int]]:
    """Per timeline point, the numbers (1-based, as in the incident table) of the incidents it overlaps."""
    spans = [(i, _windows(incident)) for i, incident in enumerate(incidents, 1)]
    marks: list[list[int]] = []
    for point in points:
        start = _instant(point["start"])
        end = _after(start, width)
        marks.append([i for i, (lo, hi) in spans if lo is not None and lo < end and hi is not None and hi >= start])
    return marks


def _after(start: datetime, seconds: int) -> datetime:
    """``seconds`` after ``start``, or the last instant there is (a point of year 9999, a width of ages)."""
    try:
        return start + timedelta(seconds=seconds)
    except OverflowError:
        return datetime.max.replace(tzinfo=start.tzinfo)


def _span(incident: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    """An incident's time span: its windows, or for rules without windows, its first and last line."""
    lo = _instant(incident.get("window_start") or incident.get("first_seen"))
    hi = _instant(incident.get("window_end") or incident.get("last_seen") or incident.get("first_seen"))
    return lo, hi or lo


def _windows(incident: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    """An incident's windows; none for rules that judge lines, not time (an unknown status seen all
    week would mark every hour)."""
    return _instant(incident.get("window_start")), _instant(incident.get("window_end"))


def _instant(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _severity_rank(incident: dict[str, Any]) -> tuple[int, float]:
    severity = incident.get("severity")
    rank = SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)
    return rank, -float(incident.get("score", 0))


def _incidents(anomalies: dict[str, Any], incidents: list[dict[str, Any]]) -> Panel | None:
    if "rules" not in anomalies:
        return None
    per_rule = [[_e(name), _e(r["type"]), _n(r["found"]), _n(r["listed"]), _n(r["suppressed"])]
                for name, r in anomalies["rules"].items()]
    body = _table("Incidents per detector rule", ["Rule", "Type", "Found", "Listed", "Suppressed"],
                  per_rule, numeric=(2, 3, 4))
    if not incidents:
        return _section("incidents", "Incidents", body + "<p>No incidents.</p>")
    head = "".join(f'<th scope="col"{cls}>{h}</th>' for h, cls in _INCIDENT_COLUMNS)
    rows = "".join(_incident_rows(i, incident) for i, incident in enumerate(incidents, 1))
    body += (f'<div class="scroll"><table class="incidents"><caption>Incidents, most severe first, each with its '
             f"sample lines (redacted)</caption><thead><tr>{head}</tr></thead>{rows}</table></div>")
    return _section("incidents", "Incidents", body)


_INCIDENT_COLUMNS = (("#", ' class="n"'), ("Severity", ""), ("Rule", ""), ("What", ""), ("When (UTC)", ""),
                     ("Observed", ' class="n"'), ("Expected", ' class="n"'), ("Records", ' class="n"'))


def _incident_rows(number: int, incident: dict[str, Any]) -> str:
    """An incident's row, and a row under it with its sample lines across the table's width."""
    severity = incident["severity"]
    subject = ", ".join(f"{_e(k)} <code>{_e(_words(v))}</code>" for k, v in incident.get("subject", {}).items())
    lo, hi = _span(incident)
    cells = [
        f'<td class="n">{number}</td>', f'<td><span class="sev sev-{_e(severity)}">{_e(severity)}</span></td>',
        (f'<td>{_e(incident["rule"])}<br>'
         f'<span class="note">{_e(incident["type"])}, {_e(incident["status"])}</span></td>'),
        f'<td>{_e(incident.get("kind", ""))} {subject or _e(incident["key"])}</td>',
        f'<td class="when">{_e(_short(lo))}{" to " + _e(_short(hi)) if hi and hi != lo else ""}</td>',
        f'<td class="n">{_n(incident.get("observed", ""))}</td>',
        f'<td class="n">{_n(_blank(incident.get("expected")))}</td>',
        f'<td class="n">{_n(incident["count"])}</td>',
    ]
    samples = "".join(f'<li><code>{_e(s["location"])}</code> <span class="line">{_e(s["text"] or "")}</span></li>'
                      for s in incident.get("samples", []))
    under = f'<tr class="samples"><td></td><td colspan="7"><ul>{samples}</ul></td></tr>' if samples else ""
    return f'<tbody><tr>{"".join(cells)}</tr>{under}</tbody>'


def _words(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return value if isinstance(value, str) else json.dumps(value)


def _blank(value: Any) -> Any:
    return "" if value is None else value


def _short(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _malformed(totals: dict[str, Any], samples: list[dict[str, Any]]) -> Panel:
    """Malformed lines per reason, each with its first samples; every sample kept behind a disclosure."""
    if not totals.get("malformed") and not samples:
        return _section("malformed", "Malformed lines", "<p>No malformed lines.</p>")
    reasons = sorted(totals.get("malformed_reasons", {}).items(), key=lambda rc: (-rc[1], rc[0]))
    rows = [[_e(reason), _n(count), _samples([s for s in samples if s["reason"] == reason][:EXAMPLES])]
            for reason, count in reasons]
    body = f"<p>{_n(totals['malformed'])} malformed lines, each counted under one reason.</p>"
    body += _table("Malformed lines per reason", ["Reason", "Lines", "First samples (redacted)"], rows, numeric=(1,))
    shown = samples[:MAX_SAMPLES]
    every = [[f"<code>{_e(s['file'])}:{s['line']}</code>", _e(s["reason"]),
              f'<span class="line">{_e(s["text"])}</span>'] for s in shown]
    body += (f"<details><summary>All {_n(len(samples))} samples kept (the first malformed lines of each file)"
             f"</summary>{_table('Malformed samples', ['Where', 'Reason', 'Line'], every)}</details>")
    return _section("malformed", "Malformed lines", body + _more(len(shown), len(samples), "samples"))


def _samples(samples: list[dict[str, Any]]) -> str:
    return "".join(f'<code>{_e(s["file"])}:{s["line"]}</code><span class="line">{_e(s["text"])}</span>'
                   for s in samples)


def _alerts(alerts: dict[str, Any] | None) -> Panel | None:
    """Where incidents went: each destination, what waits or fails, what is silenced (summary.json's ``alerts``)."""
    if alerts is None:
        return None
    destinations = [[_e(name), _e(d["type"]), _n(d["sent"]), _n(d["queued"]), "failing" if d["failing"] else "",
                     _e(_blank(d["last_sent_at"])), _e(" ".join(filter(None, (d["last_error_at"], d["last_error"]))))]
                    for name, d in sorted(alerts["destinations"].items())]
    body = _table("Destinations", ["Destination", "Type", "Sent", "Queued", "State", "Last sent", "Last error"],
                  destinations, numeric=(2, 3))
    body += (f'<p class="note">Incidents delivered by this process: {_n(alerts["sent_total"])}. '
             f'Failed sends: {_n(alerts["failures_total"])}.</p>')
    waiting = [[_e(state), _e(n["destination"]), f"<code>{_e(n['id'])}</code>", _e(n["event"]), _n(n["attempts"]),
                _e(_blank(n["queued_at"])), _e(_blank(n["next_try"])), _e(_blank(n["error"]))]
               for state, notes in (("failed", alerts["failed"]), ("queued", alerts["queued"])) for n in notes]
    if waiting:
        body += _table("Notifications not delivered yet, the failing first", ["State", "Destination", "Incident",
                       "Event", "Attempts", "Queued at", "Next try", "Error"], waiting[:MAX_ROWS], numeric=(4,))
    silenced = [[f"<code>{_e(s['id'])}</code>", _e(_blank(s["rule"])), _e(_blank(s["key"])), _e(s["until"])]
                for s in alerts["silenced"]]
    if silenced:
        body += _table("Silenced incidents", ["Incident", "Rule", "Key", "Until"], silenced[:MAX_ROWS])
    folded = [[_e(n["destination"]), f"<code>{_e(n['id'])}</code>", _e(_blank(n["sent_at"]))]
              for n in alerts["not_shown"]]
    if folded:
        body += _table('Incidents a message counted as "and N more"', ["Destination", "Incident", "Sent at"],
                       folded[:MAX_ROWS])
    quiet = alerts["no_data"]
    if quiet["after_seconds"] is not None:
        open_now = f"open: <code>{_e(quiet['incident'])}</code>" if quiet["incident"] else "not open"
        body += (f'<p class="note">A no-data alert fires after {_n(quiet["after_seconds"])} s without a record; '
                 f'the last record came at {_e(_blank(quiet["last_record_at"]))}; the alert is {open_now}.</p>')
    return _section("alerts", "Alerts", body)


def _files(files: list[dict[str, Any]]) -> Panel | None:
    if not files:
        return None
    names = ("bytes", "lines", "records", "blank", "malformed")
    rows = [[f"<code>{_e(f['path'])}</code>", *(_n(f[k]) for k in names)] for f in files[:MAX_ROWS]]
    table = _table("Files read", ["File", *(_title(k) for k in names)], rows, numeric=range(1, 6))
    return _section("files", "Files read", table + _more(len(rows), len(files), "files"))


def _problems(summary: dict[str, Any], anomalies: dict[str, Any]) -> Panel | None:
    errors = [*summary.get("rule_errors", []), *anomalies.get("rule_errors", [])]
    rows = [[_e(e["rule"] or ""), _e(e["plugin"]), _e(e["phase"]), _e(e["file"] or ""), _e(e["error"])] for e in errors]
    body = _table("Plugin code that raised", ["Rule", "Plugin", "Phase", "File", "Error"], rows) if rows else ""
    files = [[f"<code>{_e(e['file'])}</code>", _e(e["error"])] for e in summary.get("file_errors", [])]
    body += _table("Files that could not be read", ["File", "Error"], files) if files else ""
    return _section("problems", "Problems", body) if body else None


def _other_results(summary: dict[str, Any]) -> Iterable[Panel]:
    """Results of rule types the report has no panel for (a third-party plugin's), as their JSON."""
    drawn = {"count_by", "top_k", "peak_hours", "timeline"}
    for name, rule in summary["rules"].items():
        if rule["type"] not in drawn and rule["key"] in summary:
            text = json.dumps(summary[rule["key"]], indent=1, ensure_ascii=False)[:20000]
            yield _section(rule["key"], _title(rule["key"]), _rule_note(name, rule["key"]) +
                           f'<pre class="line">{_e(text)}</pre>')


def _run(run: dict[str, Any], rules: dict[str, Any]) -> Panel | None:
    rows = [[_e(label), _n(run[k])] for k, label in RUN_METRICS.items() if k in run]
    body = _table("Run metrics", ["Metric", "Value"], rows, numeric=(1,))
    degraded = [[_e(name), _e(r["degraded"])] for name, r in rules.items() if r.get("degraded")]
    body += _table("Rules past their memory share", ["Rule", "What changed"], degraded) if degraded else ""
    return _section("run", "Run", body)


class ReportWriter:
    """Writes ``report.html`` after each commit (``core.writers``): in watch mode at most every few
    seconds, and the page then reloads itself, since a meta refresh works from ``file://``."""

    name = "report.html"
    #: Rendering takes about 0.1 s (10M lines, 3 days): a busy watcher need not pay it per commit.
    min_interval = 5.0
    #: How often an open page reloads in watch mode.
    refresh_seconds = 10

    def render(self, summary: dict[str, Any], anomalies: dict[str, Any], *, watching: bool) -> str:
        return render_report(summary, anomalies, refresh_seconds=self.refresh_seconds if watching else None)


@hookimpl
def register_output_writers(register: Any) -> None:
    register(ReportWriter())
