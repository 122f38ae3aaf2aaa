"""Hostile input through the real CLI: every line is a record, a blank or a malformed line, counted exactly.

The rules are in ``docs/line-contract.md``. Each test writes real files, runs ``runpipeline`` in a
subprocess and checks ``summary.json`` (which must also pass its shipped schema and leave no temp file).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "core" / "schemas" / "summary.schema.json").read_text(encoding="utf-8"))


def rec(user: str = "alice", ts: str = "2025-07-22T10:00:00Z", status: str = "SUCCESS",
        service: str = "checkout", message: str = "paid 10.00 EUR") -> str:
    """One valid log line, without its newline."""
    return f"{ts} {status} {service} {user}" + (f" {message}" if message else "")


def hours(**counts: int) -> dict[str, int]:
    """The 24-hour histogram with ``h20=1`` style overrides."""
    histogram = {f"{h:02d}:00-{(h + 1) % 24:02d}:00": 0 for h in range(24)}
    for name, count in counts.items():
        h = int(name[1:])
        histogram[f"{h:02d}:00-{(h + 1) % 24:02d}:00"] = count
    return histogram


def run(workspace, *args: str, code: int = 0, timeout: float = 120) -> dict[str, Any]:
    """Run the CLI, check the exit code, the absence of tracebacks and temp files; return the valid summary."""
    result = workspace.run(*args, timeout=timeout)
    assert result.returncode == code, f"exit {result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    assert [p.name for p in workspace.output.rglob("*.tmp")] == []  # e.g. .summary.json.x1y2.tmp
    summary = workspace.summary()
    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(summary)
    return summary


def file_entry(summary: dict[str, Any], path: str) -> dict[str, Any]:
    matches = [f for f in summary["files"] if f["path"] == path]
    assert len(matches) == 1, summary["files"]
    return matches[0]


def samples(summary: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(s["file"], s["line"], s["reason"]) for s in summary["malformed_samples"]]


def counts(summary: dict[str, Any]) -> dict[str, int]:
    return {k: summary["totals"][k] for k in ("files", "lines", "records", "blank", "malformed")}


# -- line endings and empty files ------------------------------------------------------------


def test_empty_file_has_no_lines(workspace):
    workspace.write("empty.log", b"")
    workspace.write("one.log", f"{rec('alice')}\n")
    summary = run(workspace)
    assert {k: v for k, v in counts(summary).items() if k != "files"} == {
        "lines": 1, "records": 1, "blank": 0, "malformed": 0}
    assert summary["top_users"] == ["alice"]
    assert summary["malformed_samples"] == []


def test_empty_file_is_listed_among_the_files(workspace):
    # An empty file in the data folder is read (it has no lines); "0 files" would tell the user
    # that it was not seen at all.
    workspace.write("empty.log", b"")
    summary = run(workspace)
    assert counts(summary) == {"files": 1, "lines": 0, "records": 0, "blank": 0, "malformed": 0}
    assert summary["files"] == [{"path": "empty.log", "bytes": 0, "lines": 0, "records": 0, "blank": 0,
                                 "malformed": 0, "malformed_reasons": {}}]


def test_empty_data_folder(workspace):
    summary = run(workspace)
    assert counts(summary) == {"files": 0, "lines": 0, "records": 0, "blank": 0, "malformed": 0}
    assert summary["files"] == []
    assert summary["payment_statuses"] == {}
    assert summary["top_users"] == []
    assert summary["peak_hours"] == []
    assert summary["details"]["peak_hours"]["hourly_volume"] == hours()


def test_last_line_without_newline_counts(workspace):
    data = f"{rec('alice')}\n{rec('bob', status='FAILED')}".encode()
    workspace.write("a.log", data)
    summary = run(workspace)
    assert counts(summary) == {"files": 1, "lines": 2, "records": 2, "blank": 0, "malformed": 0}
    assert file_entry(summary, "a.log")["bytes"] == len(data)
    assert summary["top_users"] == ["alice", "bob"]
    assert summary["payment_statuses"] == {"SUCCESS": 1, "FAILED": 1}


def test_last_line_without_newline_can_be_malformed(workspace):
    workspace.write("a.log", f"{rec('alice')}\nno newline at the end".encode())
    summary = run(workspace)
    assert counts(summary) == {"files": 1, "lines": 2, "records": 1, "blank": 0, "malformed": 1}
    assert samples(summary) == [("a.log", 2, "bad_timestamp")]
    assert summary["malformed_samples"][0]["text"] == "no newline at the end"


def test_crlf_line_endings(workspace):
    data = (
        f"{rec('alice')}\r\n"
        f"{rec('bob', message='')}\r\n"  # four fields: the \r must not stick to the user
        "\r\n"
        f"{rec('carol', status='FAILED')}\r"  # last line, no \n: one trailing \r is still dropped
    ).encode()
    workspace.write("a.log", data)
    summary = run(workspace)
    assert counts(summary) == {"files": 1, "lines": 4, "records": 3, "blank": 1, "malformed": 0}
    assert summary["top_users"] == ["alice", "bob", "carol"]
    assert summary["payment_statuses"] == {"SUCCESS": 2, "FAILED": 1}


def test_only_one_carriage_return_is_dropped(workspace):
    workspace.write("a.log", b"".join([
        rec("alice", message="").encode() + b"\r\r\n",  # user 'alice\r' after the first \r is dropped
        rec("al\rice").encode() + b"\n",
        rec("bob").encode() + b"\r\r\n",  # a \r left in the message is fine
    ]))
    summary = run(workspace)
    assert counts(summary) == {"files": 1, "lines": 3, "records": 1, "blank": 0, "malformed": 2}
    assert samples(summary) == [("a.log", 1, "bad_characters"), ("a.log", 2, "bad_characters")]
    assert summary["top_users"] == ["bob"]


def test_blank_and_whitespace_only_lines(workspace):
    workspace.write("a.log", (
        "\n"
        "   \n"
        "\t\t\n"
        " \t \r\n"
        "\u00a0\u2003\u3000\n"  # NBSP, em space, ideographic space
        "\x0b\x0c\x1c\n"  # vertical tab, form feed, file separator: str.isspace says whitespace
        "\u2028\u0085\n"  # line separator, NEL: whitespace, and not line ends (only \n ends a line)
        f"{rec('alice')}\n"
        "\n"
    ).encode())
    summary = run(workspace)
    assert counts(summary) == {"files": 1, "lines": 9, "records": 1, "blank": 8, "malformed": 0}
    assert summary["malformed_samples"] == []


def test_markdown_and_prose_lines(workspace):
    lines = [
        "# Payment log",
        "",
        "Some prose about what happened on the day, with no timestamp at all.",
        rec("alice"),
        "- a bullet",
        "| ts | status | service | user |",
        "```",
        rec("bob", status="FAILED"),
        "2025-07-22T10:00:00Z SUCCESS checkout",
    ]
    workspace.write("notes.log", "\n".join(lines) + "\n")
    summary = run(workspace)
    assert counts(summary) == {"files": 1, "lines": 9, "records": 2, "blank": 1, "malformed": 6}
    assert samples(summary) == [
        ("notes.log", 1, "missing_fields"),
        ("notes.log", 3, "bad_timestamp"),
        ("notes.log", 5, "missing_fields"),
        ("notes.log", 6, "bad_timestamp"),
        ("notes.log", 7, "missing_fields"),
        ("notes.log", 9, "missing_fields"),
    ]
    assert [s["text"] for s in summary["malformed_samples"]][:2] == [lines[0], lines[2]]
    assert summary["totals"]["malformed_reasons"] == {"bad_timestamp": 2, "missing_fields": 4}
    assert summary["top_users"] == ["alice", "bob"]


# -- bytes that are not text -----------------------------------------------------------------


def test_nul_and_other_binary_bytes(workspace):
    workspace.write("bin.log", b"".join([
        rec("al\x00ice").encode() + b"\n",  # 1: NUL in a field
        b"\x00\x00\x00\x00\n",  # 2: only NULs: not whitespace, so not blank
        rec("bob", message="hi\x00there\x07\x1b[31m").encode() + b"\n",  # 3: control bytes in the message
        rec("carol", status="SUCC\x7fESS").encode() + b"\n",  # 4: DEL in a field
        b"\x89PNG\r\n\x1a\n",  # 5, 6: a binary file's header
        rec("dave", service="pay\x1fment").encode() + b"\n",  # 7: unit separator, a control char in a field
        rec("erin").encode() + b"\n",  # 8
    ]))
    summary = run(workspace)
    assert counts(summary) == {"files": 1, "lines": 8, "records": 2, "blank": 0, "malformed": 6}
    assert samples(summary) == [
        ("bin.log", 1, "bad_characters"),
        ("bin.log", 2, "missing_fields"),
        ("bin.log", 4, "bad_characters"),
        ("bin.log", 5, "missing_fields"),
        ("bin.log", 6, "missing_fields"),
        ("bin.log", 7, "bad_characters"),
    ]
    assert summary["top_users"] == ["bob", "erin"]
    assert summary["payment_statuses"] == {"SUCCESS": 2}


def test_invalid_utf8_in_a_field_is_malformed_and_in_the_message_is_a_record(workspace):
    workspace.write("utf.log", b"".join([
        b"2025-07-22T10:00:00Z SUCCESS checkout al\xffice hi\n",  # 1: invalid byte in the user
        b"2025-07-22T10:00:00Z SUCCESS \xc0\xafpay bob hi\n",  # 2: overlong encoding in the service
        b"2025-07-22T10:00:00Z SUCCESS checkout carol caf\xe9 cr\xe8me\n",  # 3: Latin-1 in the message
        b"2025-07-22T10:00:00Z SUCCESS checkout dave \xff\xfe\xfd\n",  # 4: only garbage in the message
        b"2025-07-22T10:00:00Z SUCCESS checkout erin \xe2\x82\n",  # 5: truncated sequence at line end
        "2025-07-22T10:00:00Z SUCCESS checkout zoë paid\n".encode(),  # 6: valid UTF-8 user
        b"2025-07-22T10:00:00\xff SUCCESS checkout frank hi\n",  # 7: invalid byte in the timestamp
    ]))
    summary = run(workspace)
    assert counts(summary) == {"files": 1, "lines": 7, "records": 4, "blank": 0, "malformed": 3}
    assert samples(summary) == [
        ("utf.log", 1, "invalid_utf8"),
        ("utf.log", 2, "invalid_utf8"),
        ("utf.log", 7, "invalid_utf8"),
    ]
    assert "\ufffd" in summary["malformed_samples"][0]["text"]
    assert sorted(summary["top_users"]) == ["carol", "dave", "erin", "zoë"]


def test_overlong_lines_are_malformed_and_the_lines_around_them_count(workspace):
    workspace.configure("chunk_bytes: 4096\nlimits: {max_line_bytes: 1024}\n")
    exactly = rec("erin", message="")
    exactly += " " + "x" * (1024 - len(exactly) - 1)
    assert len(exactly.encode()) == 1024
    lines = [
        rec("alice").encode(),  # 1
        rec("bob").encode(),  # 2
        rec("huge", message="y" * 10_000).encode(),  # 3: 10 KB, longer than a chunk
        rec("carol").encode(),  # 4
        b"oops",  # 5: malformed for another reason, to check the line numbers after line 3
        exactly.encode(),  # 6: exactly the limit: a record
        exactly.encode() + b"\r",  # 7: the limit plus the dropped \r: a record
        exactly.encode() + b"z",  # 8: one byte over
        rec("multi", message="é" * 600).encode(),  # 9: 600 characters but over 1200 bytes
        rec("fffd", message="").encode() + b" " + b"\xff" * 600,  # 10: 600 bytes, decoded to 1800: a record
        rec("dave").encode(),  # 11
        b"z" * 5000,  # 12: the last line, too long and without a newline
    ]
    data = b"\n".join(lines)
    workspace.write("long.log", data)
    summary = run(workspace)
    assert counts(summary) == {"files": 1, "lines": 12, "records": 7, "blank": 0, "malformed": 5}
    assert samples(summary) == [
        ("long.log", 3, "too_long"),
        ("long.log", 5, "missing_fields"),
        ("long.log", 8, "too_long"),
        ("long.log", 9, "too_long"),
        ("long.log", 12, "too_long"),
    ]
    assert file_entry(summary, "long.log")["bytes"] == len(data)
    assert file_entry(summary, "long.log")["malformed_reasons"] == {"missing_fields": 1, "too_long": 4}
    assert summary["details"]["top_users"] == {"alice": 1, "bob": 1, "carol": 1, "dave": 1, "erin": 2, "fffd": 1}


@pytest.mark.parametrize("chunk_bytes", [2048, 4096, 65536])
def test_overlong_line_at_every_chunk_boundary(workspace, chunk_bytes):
    # A 3000-byte line, placed so that it starts at many offsets relative to the chunk size.
    workspace.configure(f"chunk_bytes: {chunk_bytes}\nlimits: {{max_line_bytes: 1024}}\n")
    line = rec("u", message="m").encode()
    expected_samples = []
    for shift in range(0, 40):
        name = f"f{shift:02d}.log"
        body = [line] * shift + [b"L" * 3000] + [line] * 3
        workspace.write(name, b"\n".join(body) + b"\n")
        expected_samples.append((name, shift + 1, "too_long"))
    summary = run(workspace)
    assert samples(summary) == expected_samples
    assert summary["totals"]["records"] == sum(range(40)) + 3 * 40
    assert summary["totals"]["lines"] == sum(range(40)) + 4 * 40


@pytest.mark.parametrize("chunk_bytes", [1025, 2048])
@pytest.mark.slow
def test_lines_at_the_length_limit_across_chunk_ends(workspace, chunk_bytes):
    # A first line of 990-1039 bytes, then one of 1024 or 1025 bytes (with and without a dropped
    # \r, last or not): line ends fall on every offset around the limit and the first chunk's end.
    # 400 files, every one listed with its samples.
    workspace.configure(f"chunk_bytes: {chunk_bytes}\nlimits: {{max_line_bytes: 1024, summary_files: 400}}\n")
    record = rec("u").encode()
    expected, total_lines, total_records = [], 0, 0
    for first in range(990, 1040):
        for length, tail in [(1024, b""), (1024, b"\r"), (1025, b""), (1025, b"\r")]:
            for last in (True, False):
                name = f"f{first}-{length}{'r' if tail else ''}{'-last' if last else ''}.log"
                body = [b"p" * first, b"q" * length + tail] + ([] if last else [record])
                workspace.write(name, b"\n".join(body))
                expected.append((name, 1, "too_long" if first > 1024 else "missing_fields"))
                expected.append((name, 2, "too_long" if length > 1024 else "missing_fields"))
                total_lines += len(body)
                total_records += 0 if last else 1
    summary = run(workspace)
    assert sorted(samples(summary)) == sorted(expected)
    assert summary["totals"]["lines"] == total_lines
    assert summary["totals"]["records"] == total_records


# -- fields ----------------------------------------------------------------------------------


def test_missing_fields_and_double_spaces(workspace):
    ts = "2025-07-22T10:00:00Z"
    workspace.write("f.log", "".join(f"{line}\n" for line in [
        f"{ts} SUCCESS checkout",  # 1: three fields
        f"{ts}",  # 2
        f"{ts} SUCCESS checkout ",  # 3: empty user
        f"{ts} SUCCESS  checkout alice hi",  # 4: double space: the message is not shifted into user
        f" {ts} SUCCESS checkout alice",  # 5: leading space
        f"{ts}  SUCCESS checkout alice",  # 6
        f"{ts} SUCCESS checkout alice",  # 7: no message: a record
        f"{ts} SUCCESS checkout bob  two  spaces  inside",  # 8: spaces in the message are its own
        f"{ts} SUCCESS checkout carol ",  # 9: empty message
        f"{ts}\tSUCCESS checkout dave hi",  # 10: tab as a separator
        f"{ts} SUCCESS check\u00a0out erin hi",  # 11: NBSP inside a field
        f"{ts} SUCCESS checkout fr\u2028ank hi",  # 12: a line separator is not a line end
    ]).encode())
    summary = run(workspace)
    assert counts(summary) == {"files": 1, "lines": 12, "records": 3, "blank": 0, "malformed": 9}
    assert samples(summary) == [
        ("f.log", 1, "missing_fields"),
        ("f.log", 2, "missing_fields"),
        ("f.log", 3, "empty_field"),
        ("f.log", 4, "empty_field"),
        ("f.log", 5, "empty_field"),
        ("f.log", 6, "empty_field"),
        ("f.log", 10, "bad_characters"),
        ("f.log", 11, "bad_characters"),
        ("f.log", 12, "bad_characters"),
    ]
    assert summary["details"]["top_users"] == {"alice": 1, "bob": 1, "carol": 1}
    assert summary["details"]["top_services"] == {"checkout": 3}


def test_unknown_statuses_are_counted_as_they_are(workspace):
    statuses = ["SUCCESS", "success", "PENDING", "???", "SUCCESS"]
    workspace.write("s.log", "".join(f"{rec(status=s)}\n" for s in statuses))
    summary = run(workspace)
    assert summary["payment_statuses"] == {"SUCCESS": 2, "success": 1, "PENDING": 1, "???": 1}


# -- timestamps ------------------------------------------------------------------------------


def test_invalid_timestamps_are_malformed(workspace):
    bad = [
        "2025-07-22T25:00:00Z",  # hour 25
        "2025-02-30T10:00:00Z",  # Feb 30
        "2025-07-22T10:00:00",  # no zone
        "2025-07-22T10:00:60Z",  # leap second
        "2025-07-22T10:60:00Z",
        "2025-13-01T10:00:00Z",
        "2025-07-22t10:00:00z",  # lower case
        "2025-07-22T10:00:00.Z",  # empty fraction
        "2025-07-22T10:00:00.1234567890Z",  # ten digits
        "2025-07-22T10:00:00+24:00",
        "2025-07-22T10:00:00+05:60",
        "2025-07-22T10:00:00+0500",
        "2025-07-22T10:00Z",
        "0000-01-01T10:00:00Z",  # year 0
        "2023-02-29T10:00:00Z",  # not a leap year
        "1753412400",  # epoch seconds
        "22/07/2025T10:00:00Z",
    ]
    workspace.write("t.log", "".join(f"{rec(ts=ts)}\n" for ts in bad) + f"{rec('ok')}\n")
    summary = run(workspace)
    assert counts(summary) == {"files": 1, "lines": len(bad) + 1, "records": 1, "blank": 0, "malformed": len(bad)}
    assert samples(summary) == [("t.log", n, "bad_timestamp") for n in range(1, len(bad) + 1)]
    assert summary["top_users"] == ["ok"]


def test_valid_timestamps_are_counted_in_their_utc_hour(workspace):
    good = {
        "2025-07-22T01:30:00+05:00": 20,  # the day before, 20:30 UTC
        "2025-07-22T02:00:00+05:30": 20,
        "2025-07-22T23:30:00-02:00": 1,  # the day after, 01:30 UTC
        "2025-07-22T10:15:00.123456789Z": 10,
        "2025-07-22T10:59:59.9+00:00": 10,
        "2025-07-22T10:00:00-00:00": 10,
        "2024-02-29T12:00:00Z": 12,  # leap day
        "2025-07-22T11:59:59.999999999Z": 11,  # the fraction is truncated, never rounded up
        "2025-12-31T23:59:59-00:30": 0,  # the next year
        "0001-01-01T00:00:00Z": 0,
        "9999-12-31T23:59:59Z": 23,
    }
    workspace.write("t.log", "".join(f"{rec(ts=ts)}\n" for ts in good))
    summary = run(workspace)
    assert counts(summary) == {"files": 1, "lines": len(good), "records": len(good), "blank": 0, "malformed": 0}
    assert summary["details"]["peak_hours"]["hourly_volume"] == hours(h20=2, h1=1, h10=3, h11=1, h12=1, h0=2, h23=1)
    assert summary["peak_hours"] == ["10:00-11:00", "00:00-01:00", "20:00-21:00"]


def test_instants_outside_years_1_to_9999_after_utc_conversion(workspace):
    workspace.write("t.log", "".join(f"{rec(ts=ts)}\n" for ts in [
        "0001-01-01T00:30:00+01:00",  # year 0 in UTC
        "9999-12-31T23:30:00-01:00",  # year 10000 in UTC
        "2025-07-22T10:00:00Z",
    ]))
    summary = run(workspace)
    assert counts(summary) == {"files": 1, "lines": 3, "records": 1, "blank": 0, "malformed": 2}
    assert samples(summary) == [("t.log", 1, "bad_timestamp"), ("t.log", 2, "bad_timestamp")]


# -- the data folder and its files -----------------------------------------------------------


def test_missing_data_folder(workspace):
    workspace.configure("data_dir: no-such-folder\n")
    result = workspace.run()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"data folder '{workspace.root.resolve() / 'no-such-folder'}' does not exist" in result.stderr
    assert result.stdout == ""
    assert not workspace.output.exists()


def test_data_folder_that_is_a_file(workspace):
    (workspace.root / "data.txt").write_text(rec() + "\n", encoding="utf-8")
    workspace.configure("data_dir: data.txt\n")
    result = workspace.run()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "data.txt' is not a folder" in result.stderr
    assert not workspace.output.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_unreadable_file(workspace):
    workspace.write("a.log", f"{rec('alice')}\n{rec('bob')}\n")
    locked = workspace.write("locked.log", f"{rec('mallory')}\n")
    locked.chmod(0)
    try:
        summary = run(workspace, code=3)
    finally:
        locked.chmod(0o644)
    assert [e["file"] for e in summary["file_errors"]] == ["locked.log"]
    assert "locked.log" in summary["file_errors"][0]["error"]
    assert file_entry(summary, "a.log")["records"] == 2
    assert summary["top_users"] == ["alice", "bob"]


def test_file_that_cannot_be_opened(workspace):
    # A dangling symlink: listed in the folder, fails to open (works as root, unlike chmod 000).
    workspace.write("a.log", f"{rec('alice')}\n{rec('bob')}\n")
    workspace.write("z.log", f"{rec('carol')}\n")
    os.symlink("missing.log", workspace.data / "gone.log")
    result = workspace.run()
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert "cannot read" in result.stderr and "gone.log" in result.stderr
    summary = run(workspace, code=3)  # and again: the file is tried, and reported, on every run
    assert [e["file"] for e in summary["file_errors"]] == ["gone.log"]
    assert "gone.log" in summary["file_errors"][0]["error"]
    assert "No such file or directory" in summary["file_errors"][0]["error"]
    assert file_entry(summary, "a.log")["records"] == 2
    assert file_entry(summary, "z.log")["records"] == 1
    assert summary["totals"]["records"] == 3
    assert summary["totals"]["lines"] == 3
    assert summary["top_users"] == ["alice", "bob", "carol"]


def test_subfolders_are_read_only_when_recursive(workspace):
    workspace.write("a.log", f"{rec('alice')}\n")
    workspace.write("2025/07/b.log", f"{rec('bob')}\n")
    workspace.write(".archive/c.log", f"{rec('carol')}\n")  # hidden: never read
    summary = run(workspace)
    assert [f["path"] for f in summary["files"]] == ["a.log"]
    assert summary["top_users"] == ["alice"]

    workspace.configure("recursive: true\n")
    summary = run(workspace)
    assert [f["path"] for f in summary["files"]] == ["2025/07/b.log", "a.log"]
    assert summary["top_users"] == ["alice", "bob"]
    assert summary["totals"]["records"] == 2


def test_only_included_names_are_read(workspace):
    workspace.write("a.log", f"{rec('alice')}\n")
    workspace.write("b.txt", f"{rec('bob')}\n")
    for skipped in ["c.csv", ".hidden.log", "d.log~", "e.log.tmp", "f.log.part", "g.log.swp", "README"]:
        workspace.write(skipped, f"{rec('mallory')}\n")
    summary = run(workspace)
    assert [f["path"] for f in summary["files"]] == ["a.log", "b.txt"]
    assert summary["top_users"] == ["alice", "bob"]


def test_symlink_to_a_file_outside_the_data_folder_is_read_once(workspace):
    outside = workspace.root / "elsewhere"
    outside.mkdir()
    (outside / "x.log").write_text(f"{rec('alice')}\n{rec('bob')}\n", encoding="utf-8")
    os.symlink(outside / "x.log", workspace.data / "linked.log")
    summary = run(workspace)
    assert [f["path"] for f in summary["files"]] == ["linked.log"]
    assert counts(summary) == {"files": 1, "lines": 2, "records": 2, "blank": 0, "malformed": 0}


def test_symlink_to_a_file_inside_the_data_folder_is_not_counted_twice(workspace):
    workspace.write("a.log", f"{rec('alice')}\n{rec('bob')}\n")
    os.symlink("a.log", workspace.data / "b.log")
    os.symlink(workspace.data / "a.log", workspace.data / "0.log")
    summary = run(workspace)
    assert counts(summary) == {"files": 1, "lines": 2, "records": 2, "blank": 0, "malformed": 0}
    assert summary["details"]["top_users"] == {"alice": 1, "bob": 1}


def test_symlinked_folder_is_never_followed(workspace):
    workspace.write("a.log", f"{rec('alice')}\n")
    os.symlink(workspace.data, workspace.data / "loop")
    workspace.configure("recursive: true\n")
    summary = run(workspace)
    assert [f["path"] for f in summary["files"]] == ["a.log"]


def test_a_symlink_loop_is_reported_and_the_other_files_are_read(workspace):
    # Following a loop fails with ELOOP: listing the folder must not stop there, as a dangling link does not.
    workspace.write("a.log", f"{rec('alice')}\n{rec('bob')}\n")
    os.symlink("self.log", workspace.data / "self.log")
    os.symlink("two.log", workspace.data / "one.log")
    os.symlink("one.log", workspace.data / "two.log")
    summary = run(workspace, code=3)
    assert [e["file"] for e in summary["file_errors"]] == ["one.log", "self.log", "two.log"]
    assert all("Too many levels of symbolic links" in e["error"] for e in summary["file_errors"])
    assert [f["path"] for f in summary["files"]] == ["a.log"]
    assert counts(summary) == {"files": 1, "lines": 2, "records": 2, "blank": 0, "malformed": 0}


def test_a_file_name_that_is_not_utf8_is_reported_and_its_other_names_are_read(workspace):
    # Names become columns, ledger keys and JSON text: a name with bytes that are not UTF-8 cannot.
    workspace.write("a.log", f"{rec('alice')}\n")
    bad = os.path.join(os.fsencode(workspace.data), b"bad\xff\xfe.log")
    with open(bad, "wb") as out:
        out.write(f"{rec('bob')}\n{rec('carol')}\n".encode())
    os.link(bad, workspace.data / "z.log")  # the same file under a name that can be read
    summary = run(workspace, code=3)
    assert summary["file_errors"] == [{
        "file": "bad\\xff\\xfe.log",
        "error": f"cannot read {workspace.data}/bad\\xff\\xfe.log: its name is not valid UTF-8: rename it to have it read",
    }]
    assert [f["path"] for f in summary["files"]] == ["a.log", "z.log"]
    assert summary["top_users"] == ["alice", "bob", "carol"]
    summary = run(workspace, code=3)  # reported again on every run, and nothing counted twice
    assert summary["totals"]["records"] == 3


def run_bounded(workspace, code: int) -> dict[str, Any]:
    """``run``, but a run that hangs fails the test after 20 s instead of hanging the suite."""
    try:
        return run(workspace, code=code, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("the run hung: it was still running after 20 s")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_symlink_to_a_device_is_reported_and_the_other_files_are_read(workspace):
    # /dev/zero never ends: read as a file, it spins for ever and no output is written.
    workspace.write("a.log", f"{rec('alice')}\n{rec('bob')}\n")
    os.symlink("/dev/zero", workspace.data / "zero.log")
    summary = run_bounded(workspace, code=3)
    assert summary["file_errors"] == [
        {"file": "zero.log", "error": f"cannot read {workspace.data / 'zero.log'}: "
                                      "is a character device, not a regular file; only regular files are read"},
    ]
    assert [f["path"] for f in summary["files"]] == ["a.log"]
    assert counts(summary) == {"files": 1, "lines": 2, "records": 2, "blank": 0, "malformed": 0}


def test_a_named_pipe_or_a_symlink_to_one_is_reported_and_the_other_files_are_read(workspace):
    # Opening a FIFO for reading waits for a writer, for ever if none comes.
    workspace.write("a.log", f"{rec('alice')}\n")
    os.mkfifo(workspace.root / "pipe")
    os.symlink(workspace.root / "pipe", workspace.data / "linked.log")
    os.mkfifo(workspace.data / "fifo.log")
    os.mkfifo(workspace.data / "fifo.csv")  # not an included name: passed over, as any such file
    summary = run_bounded(workspace, code=3)
    reason = "is a named pipe (FIFO), not a regular file; only regular files are read"
    assert summary["file_errors"] == [
        {"file": "fifo.log", "error": f"cannot read {workspace.data / 'fifo.log'}: {reason}"},
        {"file": "linked.log", "error": f"cannot read {workspace.data / 'linked.log'}: {reason}"},
    ]
    assert [f["path"] for f in summary["files"]] == ["a.log"]
    assert summary["top_users"] == ["alice"]
    summary = run_bounded(workspace, code=3)  # and again: reported on every run, never read
    assert [e["file"] for e in summary["file_errors"]] == ["fifo.log", "linked.log"]
    assert summary["totals"]["lines"] == 1


# -- malformed samples -----------------------------------------------------------------------


def malformed_file(n_bad: int) -> tuple[str, list[int]]:
    """A file alternating records and malformed lines; returns the text and the malformed line numbers."""
    lines, bad = [], []
    for i in range(n_bad):
        lines.append(rec(f"user{i % 7}"))
        lines.append(f"garbage line {i}")  # three words: missing_fields
        bad.append(len(lines))
    return "\n".join(lines) + "\n", bad


@pytest.mark.parametrize("chunk_bytes", [None, 2048])
def test_malformed_samples_keep_the_first_hundred_of_each_file(workspace, chunk_bytes):
    if chunk_bytes:  # many chunks, finished by two workers in any order
        workspace.configure(f"chunk_bytes: {chunk_bytes}\nlimits: {{max_line_bytes: 1024}}\nworkers: 2\n")
    text_a, bad_a = malformed_file(250)
    text_b, bad_b = malformed_file(30)
    workspace.write("a.log", text_a)
    workspace.write("b.log", text_b)
    summary = run(workspace)
    assert counts(summary) == {"files": 2, "lines": 560, "records": 280, "blank": 0, "malformed": 280}
    assert file_entry(summary, "a.log")["malformed"] == 250
    assert samples(summary) == [("a.log", n, "missing_fields") for n in bad_a[:100]] + [
        ("b.log", n, "missing_fields") for n in bad_b
    ]
    assert summary["malformed_samples"][0]["text"] == "garbage line 0"
    assert summary["malformed_samples"][99]["text"] == "garbage line 99"


def test_malformed_samples_limit_is_honoured(workspace):
    workspace.configure("limits: {malformed_samples: 5}\n")
    text, bad = malformed_file(40)
    workspace.write("a.log", text)
    workspace.write("b.log", text)
    summary = run(workspace)
    assert summary["totals"]["malformed"] == 80
    assert samples(summary) == [("a.log", n, "missing_fields") for n in bad[:5]] + [
        ("b.log", n, "missing_fields") for n in bad[:5]
    ]


@pytest.mark.slow
def test_a_new_malformed_samples_limit_applies_to_files_counted_before(workspace):
    text, bad = malformed_file(40)
    workspace.write("a.log", text)
    assert len(run(workspace)["malformed_samples"]) == 40
    workspace.configure("limits: {malformed_samples: 5}\n")
    summary = run(workspace)
    assert summary["totals"]["malformed"] == 40
    assert samples(summary) == [("a.log", n, "missing_fields") for n in bad[:5]]
    with (workspace.data / "a.log").open("a", encoding="utf-8") as out:
        out.write("more garbage\n")
    summary = run(workspace)
    assert summary["totals"]["malformed"] == 41
    assert samples(summary) == [("a.log", n, "missing_fields") for n in bad[:5]]


def test_no_malformed_samples_when_the_limit_is_zero(workspace):
    workspace.configure("limits: {malformed_samples: 0}\n")
    text, _ = malformed_file(10)
    workspace.write("a.log", text)
    summary = run(workspace)
    assert summary["totals"]["malformed"] == 10
    assert summary["totals"]["malformed_reasons"] == {"missing_fields": 10}
    assert summary["malformed_samples"] == []


def test_long_malformed_line_sample_is_cut(workspace):
    workspace.write("a.log", "x" * 5000 + "\n")
    summary = run(workspace)
    assert samples(summary) == [("a.log", 1, "missing_fields")]
    assert summary["malformed_samples"][0]["text"] == "x" * 200


# -- outputs ---------------------------------------------------------------------------------


def test_a_folder_where_an_output_file_goes_is_named_and_no_output_is_written_beside_it(workspace):
    workspace.write("a.log", f"{rec('alice')}\n")
    (workspace.output / "summary.json").mkdir(parents=True)
    result = workspace.run()
    assert result.returncode == 1
    assert f"{workspace.output / 'summary.json'}: is a folder where the output file goes" in result.stderr
    assert "Traceback" not in result.stderr and ".tmp" not in result.stderr
    assert sorted(p.name for p in workspace.output.iterdir()) == [".state", "summary.json"]  # none that disagree
    (workspace.output / "summary.json").rmdir()
    summary = run(workspace)  # the next run writes them, from what was counted
    assert summary["totals"]["records"] == 1 and summary["run"]["lines_read"] == 0


def test_a_mixed_run_matches_the_shipped_schema_and_leaves_no_temp_file(workspace):
    workspace.write("a.log", f"{rec('alice')}\n\nbad\n" + rec("bob", ts="2025-07-22T01:30:00+05:00") + "\n")
    workspace.write("b.log", b"\xff\xfe garbage\n")
    os.symlink("missing.log", workspace.data / "gone.log")
    for _ in range(3):  # each run validates against core/schemas/summary.schema.json, no *.tmp left
        summary = run(workspace, code=3)
        assert counts(summary) == {"files": 2, "lines": 5, "records": 2, "blank": 1, "malformed": 2}
        assert [f["path"] for f in summary["files"]] == ["a.log", "b.log"]
        assert [e["file"] for e in summary["file_errors"]] == ["gone.log"]
        assert samples(summary) == [("a.log", 3, "missing_fields"), ("b.log", 1, "missing_fields")]
    validator = jsonschema.Draft202012Validator(SCHEMA)
    assert validator.is_valid(summary)
    assert not validator.is_valid({**summary, "totals": {**summary["totals"], "lines": -1}})  # the check can fail


def test_summary_is_the_same_whatever_the_chunk_size_and_workers(workspace):
    text, _ = malformed_file(300)
    workspace.write("a.log", text + "\n\n" + "\n".join(rec(f"u{i}", ts=f"2025-07-22T{i % 24:02d}:00:00Z")
                                                   for i in range(500)) + "\n")
    workspace.write("b.log", "\r\n".join(rec(f"v{i % 13}") for i in range(400)))
    base = run(workspace)
    base.pop("run")
    shutil.rmtree(workspace.output)  # count everything again, not only what is new
    workspace.configure("chunk_bytes: 2048\nlimits: {max_line_bytes: 1024}\nworkers: 2\nqueue_size: 1\n")
    small = run(workspace)
    small.pop("run")
    assert small == base
