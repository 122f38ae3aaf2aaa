"""The HTML report, rendered from the documents of real runs: its numbers, escaping and panels, and
the page in a real headless browser."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from plugins.report import render_report
from tests.conftest import REPO, Workspace, drop, load_bench, wait_for

#: Where Debian and others put Chromium; the browser test drives the system's, never a download.
CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: A phone's viewport (CSS pixels).
PHONE = {"width": 390, "height": 844}
HOSTILE = """\
2025-07-22T10:00:00Z <script>alert(1)</script> Svc<img/src=x> user"><script>y Paid <script>alert(2)</script>
2025-07-22T10:00:01Z SUCCESS PaymentService user1 Paid &amp; done
2025-07-22T10:00:01Z SUCCESS PaymentService user1 Paid &amp; done
<script>alert(3)</script>
"""
HOSTILE_NAME = "<b onclick=x>'&.log"
#: Every element the page is made of: its own HTML and pygal's SVG; no script, image, link or frame.
PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "p", "nav", "a", "main",
             "section", "dl", "div", "dt", "dd", "figure", "figcaption", "details", "summary", "table", "caption",
             "thead", "tbody", "tr", "th", "td", "code", "span", "br", "strong", "ul", "li", "pre",
             "svg", "defs", "g", "rect", "path", "text", "desc", "circle", "tspan", "line"}


class Tables(HTMLParser):
    """The page's tables by caption (cell texts per row), its totals, and every tag it holds."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.cards: dict[str, str] = {}
        self.tags: set[str] = set()
        self._text: list[str] | None = None
        self._caption = self._card = ""
        self._row: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag in ("caption", "td", "th", "dt", "dd"):
            self._text = []
        elif tag == "tr":
            self._row = []

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        text = "".join(self._text or []).strip()
        if tag == "caption":
            self._caption = text
            self.tables[text] = []
        elif tag in ("td", "th") and self._row is not None:
            self._row.append(text)
        elif tag == "tr" and self._row is not None:
            self.tables[self._caption].append(self._row)
            self._row = None
        elif tag == "dt":
            self._card = text
        elif tag == "dd":
            self.cards[self._card] = text
        if tag in ("caption", "td", "th", "dt", "dd"):
            self._text = None

    def rows(self, caption: str) -> list[list[str]]:
        """A table's body rows (its heading row left out)."""
        return self.tables[caption][1:]


def workspace_in(root: Path) -> Workspace:
    shutil.copy(REPO / "settings.yaml", root / "settings.yaml")
    shutil.copytree(REPO / "rules", root / "rules")
    (root / "data").mkdir()
    return Workspace(root)


def documents(workspace: Workspace) -> tuple[dict[str, Any], dict[str, Any]]:
    anomalies = json.loads((workspace.output / "anomalies.json").read_text(encoding="utf-8"))
    return workspace.summary(), anomalies


def generated_run(root: Path, *args: str) -> Workspace:
    """A real run, in this process, over a log from bench/generate.py (planted anomalies included)."""
    workspace = workspace_in(root)
    load_bench("generate").main(["--out", str(workspace.data / "gen.log"), "--manifest",
                                 str(root / "manifest.json"), *args])
    assert workspace.main("-q") == 0
    return workspace


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    """Three days of generated traffic with its planted incidents."""
    return documents(generated_run(tmp_path_factory.mktemp("generated"), "--lines", "100000", "--days", "3"))


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    """A log with more distinct users than a small memory cap holds exactly: top-users is approximate."""
    root = tmp_path_factory.mktemp("crowded")
    workspace = workspace_in(root)
    # Two workers whatever the CPUs: the chunks in flight must fit the small cap too.
    workspace.configure("workers: 2\nlimits: {memory_mb: 200}\n")
    load_bench("generate").main(["--out", str(workspace.data / "gen.log"), "--manifest", str(root / "m.json"),
                                 "--lines", "300000", "--days", "3", "--seen-users", "280000",
                                 "--user-tail", "0.99"])
    assert workspace.main("-q") == 0
    return documents(workspace)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    """Markup in a file name, in statuses, services, users, messages and a malformed line."""
    workspace = workspace_in(tmp_path_factory.mktemp("hostile"))
    workspace.write(HOSTILE_NAME, HOSTILE)
    assert workspace.main("-q") == 0
    return documents(workspace)


# --- the numbers ----------------------------------------------------------------------------------

def test_every_number_of_the_summary_is_in_the_report_as_summary_json_says(generated):
    summary, anomalies = generated
    page = Tables(render_report(summary, anomalies))
    totals = summary["totals"]
    assert page.cards == {"Lines": f"{totals['lines']:,}", "Records": f"{totals['records']:,}",
                          "Malformed": f"{totals['malformed']:,}", "Blank": f"{totals['blank']:,}",
                          "Files": f"{totals['files']:,}", "Bytes": f"{totals['bytes']:,}"}
    statuses = summary["payment_statuses"]
    assert page.rows("Payment statuses") == [[str(i), s, f"{n:,}"] for i, (s, n) in enumerate(statuses.items(), 1)]
    for key in ("top_services", "top_users"):
        counts = summary["details"][key]
        assert page.rows(key.replace("_", " ").capitalize()) == [
            [str(i), name, f"{counts[name]:,}"] for i, name in enumerate(summary[key], 1)]
    hourly = summary["details"]["peak_hours"]["hourly_volume"]
    assert page.rows("Records per hour of day (UTC)") == [
        [hour, f"{n:,}", "peak" if hour in summary["peak_hours"] else ""] for hour, n in hourly.items()]
    assert [row[:2] for row in page.rows("Malformed lines per reason")] == [
        [reason, f"{n:,}"] for reason, n in sorted(totals["malformed_reasons"].items(), key=lambda rn: (-rn[1], rn[0]))]
    assert len(page.rows("Malformed samples")) == len(summary["malformed_samples"])
    assert page.rows("Files read") == [
        [f["path"], *(f"{f[k]:,}" for k in ("bytes", "lines", "records", "blank", "malformed"))]
        for f in summary["files"]]
    run = dict(page.rows("Run metrics"))
    assert run["Elapsed (s)"] == str(summary["run"]["elapsed_seconds"])
    assert run["Peak RSS (MB)"] == str(summary["run"]["peak_rss_mb"])
    assert run["Lines per second"] == f"{summary['run']['lines_per_second']:,}"


def test_the_timeline_table_holds_every_point_and_marks_the_incidents_in_their_hours(generated):
    summary, anomalies = generated
    rows = Tables(render_report(summary, anomalies)).rows("Records and failures per bucket of event time")
    points = summary["timeline"]["points"]
    assert len(points) == 72  # three days of hours
    assert [row[:3] for row in rows] == [[p["start"], f"{p['records']:,}", f"{p['failures']:,}"] for p in points]
    spike = next(i for i, a in enumerate(anomalies["anomalies"], 1) if a["type"] == "error_spike")
    start = anomalies["anomalies"][spike - 1]["window_start"]
    hour = start[:14] + "00:00Z"
    assert hour in {row[0] for row in rows if f"#{spike}" in row[4].split(", ")}
    # An incident without windows (an unknown status, seen all along) marks no hour.
    unplaced = {f"#{i}" for i, a in enumerate(anomalies["anomalies"], 1) if a["window_start"] is None}
    assert unplaced and not unplaced & {mark for row in rows for mark in row[4].split(", ")}


def test_incidents_are_listed_most_severe_first_with_their_sample_lines(generated):
    summary, anomalies = generated
    page = render_report(summary, anomalies)
    rows = Tables(page).rows("Incidents, most severe first, each with its sample lines (redacted)")
    listed = [row for row in rows if row[0].isdigit()]
    assert [row[1] for row in listed] == [a["severity"] for a in anomalies["anomalies"]]
    assert [row[7] for row in listed] == [f"{a['count']:,}" for a in anomalies["anomalies"]]
    for incident in anomalies["anomalies"]:
        for sample in incident["samples"]:
            assert f"<code>{sample['location']}</code>" in page
    per_rule = Tables(page).rows("Incidents per detector rule")
    assert per_rule == [[name, r["type"], str(r["found"]), str(r["listed"]), str(r["suppressed"])]
                        for name, r in anomalies["rules"].items()]


def test_an_approximate_top_list_says_so_with_its_error_bound(crowded, generated):
    summary, anomalies = crowded
    detail = summary["details"]["top_users"]
    assert detail["approximate"] is True  # the run under a small cap is what this test is about
    page = render_report(summary, anomalies)
    section = page.split('id="p-top_users"', 1)[1].split("</section>", 1)[0]
    assert "<strong>Approximate</strong>" in section
    assert f"<strong>max_error {detail['max_error']:,}</strong>" in section
    assert Tables(page).rows("Top users") == [[str(i), name, f"{detail['counts'][name]:,}"]
                                              for i, name in enumerate(summary["top_users"], 1)]
    services = page.split('id="p-top_services"', 1)[1].split("</section>", 1)[0]
    assert "Exact counts." in services and "Approximate" not in services


def test_the_report_of_a_larger_run_stays_small(crowded):
    # 300,000 lines over three days, 280,000 users: every panel full (72 hours, 100 malformed
    # samples, incidents with samples); a 10M-line run's documents have the same shape.
    page = render_report(*crowded)
    assert len(page.encode()) < 1_000_000
    assert len(crowded[0]["timeline"]["points"]) == 72 and len(crowded[0]["malformed_samples"]) == 100


# --- escaping -------------------------------------------------------------------------------------

def test_markup_in_the_logs_and_file_names_is_shown_as_text_never_as_markup(hostile):
    summary, anomalies = hostile
    assert "<script>alert(1)</script>" in summary["payment_statuses"]  # the parser took it as a status
    page = render_report(summary, anomalies)
    assert "<script" not in page.lower()  # not even pygal's: the page runs no script at all
    assert "<b " not in page and "<img" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b onclick=x&gt;&#x27;&amp;.log" in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page  # a message, in an incident's sample line
    duplicate = next(a for a in anomalies["anomalies"] if a["type"] == "duplicate_event")
    assert duplicate["samples"][0]["text"].endswith("Paid &amp; done")
    assert "Paid &amp;amp; done</span>" in page  # an entity in a line is text, shown as it was logged
    tables = Tables(page)
    assert tables.tags <= PAGE_TAGS
    assert [row[:2] for row in tables.rows("Files read")] == [[HOSTILE_NAME, f"{len(HOSTILE.encode()):,}"]]
    assert ["<script>alert(1)</script>"] == [row[1] for row in tables.rows("Payment statuses") if "<" in row[1]]


def test_control_characters_in_sample_lines_are_shown_escaped(generated):
    summary, anomalies = generated
    texts = [s["text"] for s in summary["malformed_samples"] if any(ord(c) < 32 and c != "\t" for c in s["text"])]
    assert texts  # the generator plants NULs and escape sequences
    page = render_report(summary, anomalies)
    assert not any(ord(c) < 32 and c not in "\t\n" for c in page)
    assert "\\x00" in page or "\\x1b" in page


# --- panels ----------------------------------------------------------------------------------------

def test_panels_follow_the_rule_types_whatever_their_keys_and_absent_data_leaves_them_out(tmp_path):
    workspace = workspace_in(tmp_path)
    workspace.rules_file("renamed.yaml", """\
        - name: by-status
          type: count_by
          field: status
          key: statuses_seen
        - name: busiest-users
          type: top_k
          field: user
          limit: 3
          key: heavy_users
    """)
    workspace.configure("rules: [by-status, busiest-users]\n")
    shutil.copy(REPO / "data" / "example_input.txt", workspace.data)
    assert workspace.main("-q") == 0
    summary, anomalies = documents(workspace)
    page = render_report(summary, anomalies)
    tables = Tables(page)
    assert tables.rows("Statuses seen")[0] == ["1", "SUCCESS", f"{summary['statuses_seen']['SUCCESS']:,}"]
    assert [row[1] for row in tables.rows("Heavy users")] == summary["heavy_users"]
    for absent in ("p-timeline", "p-peak_hours", "Hours of the day", "Volume and failures", "Incidents,"):
        assert absent not in page
    assert page.count("<svg") == 2  # the two bar charts, no empty ones


def test_a_timeline_point_in_the_last_hour_there_is_still_renders(generated):
    # A point's end (its start plus the width) is past what a datetime holds: 9999-12-31T23:00 + 1 h.
    summary, anomalies = generated
    last = {"start": "9999-12-31T23:00:00Z", "records": 2, "failures": 1}
    far = {**summary, "timeline": {**summary["timeline"], "points": [*summary["timeline"]["points"], last]}}
    page = render_report(far, anomalies)
    assert "9999-12-31" in page


def test_a_summary_without_rule_results_or_detectors_still_renders(generated):
    summary, _ = generated
    bare = {k: v for k, v in summary.items() if k not in ("payment_statuses", "top_users", "timeline")}
    page = render_report(bare, {"anomalies": [], "counts": {}, "rules": {}, "rule_errors": [],
                                "generated_at": "2026-01-01T00:00:00Z"})
    assert "Top services" in page and "Top users" not in page and "p-timeline" not in page
    assert "No incidents." in page


def test_watch_mode_pages_refresh_themselves(generated):
    assert '<meta http-equiv="refresh" content="5">' in render_report(*generated, refresh_seconds=5)
    assert 'http-equiv="refresh"' not in render_report(*generated)


# --- in a real browser ---------------------------------------------------------------------------

def chromium() -> str:
    """The system Chromium; skip without one, except on CI, where the browser test must run."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "the playwright package is not installed (pip install -e '.[test]')"
    found = next((path for name in CHROMIUM if (path := shutil.which(name))), None)
    if reason is None and found is None:
        reason = f"no Chromium on PATH (looked for {', '.join(CHROMIUM)}); on Debian: apt-get install chromium"
    if reason and os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the browser test: {reason}")
    if reason:
        pytest.skip(reason)
    return found


@pytest.mark.slow
def test_the_report_in_a_headless_browser(generated, hostile, tmp_path):
    executable = chromium()
    from playwright.sync_api import sync_playwright

    summary, anomalies = generated
    report = tmp_path / "report.html"
    report.write_text(render_report(summary, anomalies), encoding="utf-8")
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1400})
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(report.as_uri(), wait_until="load")
            assert errors == [] and requests == [report.as_uri()]
            seen_in_the_browser(page, summary)
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            if os.environ.get("OMP_UPDATE_SCREENSHOT"):  # the README's: the top of the page, on request only
                page.set_viewport_size({"width": 1100, "height": 1250})
                page.screenshot(path=str(REPO / "docs" / "report.png"))
            page.set_viewport_size(PHONE)
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            shown_as_text(browser.new_page(), render_report(*hostile), tmp_path / "hostile.html")
        finally:
            browser.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000


def shown_as_text(page: Any, html: str, path: Path) -> None:
    """Markup from the logs runs nothing (no dialog, no error) and reads as the log had it."""
    path.write_text(html, encoding="utf-8")
    events: list[str] = []
    page.on("dialog", lambda dialog: (events.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda error: events.append(str(error)))
    page.goto(path.as_uri(), wait_until="load")
    assert events == [] and page.locator("script, img, b").count() == 0
    text = page.inner_text("body")
    assert "<script>alert(1)</script>" in text and HOSTILE_NAME in text


def seen_in_the_browser(page: Any, summary: dict[str, Any]) -> None:
    """What a reader sees: every status and top user with its count, the totals, and drawn charts."""
    text = page.inner_text("body")
    for status, count in summary["payment_statuses"].items():
        assert f"{status}\t{count:,}" in text  # a row of the statuses table, as rendered
    for user in summary["top_users"]:
        assert f"{user}\t{summary['details']['top_users'][user]:,}" in text
    cards = page.locator(".cards dd").all_inner_texts()
    totals = summary["totals"]
    assert cards == [f"{totals[k]:,}" for k in ("lines", "records", "malformed", "blank", "files", "bytes")]
    drawn = page.locator("#p-payment_statuses svg text.value").all_text_contents()  # the numbers on the bars
    assert sorted(drawn) == sorted(f"{count:,}" for count in summary["payment_statuses"].values())
    charts = page.locator(".chart svg")
    assert charts.count() == 5  # statuses, timeline, services, users, hours of the day
    for i in range(charts.count()):
        box = charts.nth(i).bounding_box()
        assert box and box["width"] > 100 and box["height"] > 100


@pytest.mark.slow
def test_a_watcher_s_report_refreshes_itself_and_shows_a_file_that_landed(workspace):
    workspace.configure("watch: {settle_ms: 100, status_seconds: 0.2}\n")
    workspace.write("a.log", "2025-07-22T10:00:00Z SUCCESS Payment user1 paid\n")
    report = workspace.output / "report.html"
    watcher = subprocess.Popen([sys.executable, "-m", "core.cli", "--watch", "-q"], cwd=workspace.root,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: report.exists() and "SUCCESS" in report.read_text(encoding="utf-8"), "the first report")
        first = report.read_text(encoding="utf-8")
        assert '<meta http-equiv="refresh"' in first and "REFUNDED" not in first
        drop(workspace.data, "b.log", "2025-07-22T11:00:00Z REFUNDED Payment user2 back\n")
        # redrawn at most every 5 s in watch mode
        wait_for(lambda: "REFUNDED" in report.read_text(encoding="utf-8"), "the report to show the new file")
        summary = json.loads((workspace.output / "summary.json").read_text(encoding="utf-8"))
        assert summary["payment_statuses"] == {"SUCCESS": 1, "REFUNDED": 1}
    finally:
        watcher.send_signal(signal.SIGTERM)
        _, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
