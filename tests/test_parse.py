"""The line contract (docs/line-contract.md), one case at a time, through ``parse_chunk``."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import parse as parse_module
from core.parse import RECORD_SCHEMA, Chunk, parse_chunk
from core.stats import FileStats, MalformedLine
from tests.conftest import every_line_the_full_way, load_bench

MAX = 256
TS = "2024-03-05T14:07:09Z"

REFERENCE = load_bench("reference")


def parse(data: bytes, max_line_bytes: int = MAX, sample_limit: int = 100, first_line: int = 1):
    chunk = Chunk("app.log", data, first_line, 0, len(data))
    return parse_chunk(chunk, max_line_bytes, sample_limit)


def one_line(raw: bytes, max_line_bytes: int = MAX) -> tuple[pl.DataFrame, FileStats]:
    """Parse a single line (content without its newline), checking it is counted exactly once."""
    batch, stats = parse(raw + b"\n", max_line_bytes)
    assert stats.lines == 1
    assert stats.records + stats.blank + stats.malformed == 1
    assert stats.records == len(batch)
    return batch.frame, stats


def reason_of(raw: bytes, max_line_bytes: int = MAX) -> str:
    frame, stats = one_line(raw, max_line_bytes)
    assert frame.is_empty() and stats.malformed == 1, f"expected malformed, got {frame.rows()}"
    [sample] = stats.samples
    assert stats.reasons == {sample.reason: 1}
    return sample.reason


def record_of(raw: bytes) -> dict:
    frame, stats = one_line(raw)
    assert stats.records == 1, f"expected a record, got samples {stats.samples} / blank {stats.blank}"
    return frame.row(0, named=True)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def hash_of(ts: datetime, status: str, service: str, user: str, message: str) -> int:
    """The record hash of these fields, as ``core._scan.record_hash`` gives it from the fields alone."""
    us = (ts - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
    return parse_module._scan.record_hash(us, status, service, user, message)


# --- records ---------------------------------------------------------------------------------


def test_valid_line_gives_exact_columns_and_types():
    data = f"{TS} paid checkout u-42 card charged\n{TS} failed billing u-7\n".encode()
    batch, stats = parse(data, first_line=10)
    assert batch.path == "app.log"
    assert batch.frame.schema == pl.Schema(RECORD_SCHEMA)
    at = utc(2024, 3, 5, 14, 7, 9)
    assert batch.frame.rows(named=True) == [
        {"ts": at, "status": "paid", "service": "checkout", "user": "u-42", "message": "card charged",
         "record_hash": hash_of(at, "paid", "checkout", "u-42", "card charged"), "file": "app.log", "line": 10},
        {"ts": at, "status": "failed", "service": "billing", "user": "u-7", "message": "",
         "record_hash": hash_of(at, "failed", "billing", "u-7", ""), "file": "app.log", "line": 11},
    ]
    assert (stats.lines, stats.records, stats.blank, stats.malformed) == (2, 2, 0, 0)
    assert stats.bytes == len(data)
    assert stats.samples == [] and not stats.reasons
    assert batch.frame["ts"].dtype == pl.Datetime("us", "UTC")
    assert batch.frame["line"].dtype == pl.Int64


def test_message_absent_is_empty_string():
    assert record_of(f"{TS} paid checkout u1".encode())["message"] == ""


def test_message_keeps_spaces_as_is():
    record = record_of(f"{TS} paid checkout u1  two  spaces\tand tab ".encode())
    assert record["message"] == " two  spaces\tand tab "
    assert record["user"] == "u1"


def test_single_space_after_user_gives_empty_message():
    assert record_of(f"{TS} paid checkout u1 ".encode())["message"] == ""


def test_trailing_cr_is_dropped():
    record = record_of(f"{TS} paid checkout u1 hello\r".encode())
    assert record["message"] == "hello"
    assert record_of(f"{TS} paid checkout u1\r".encode())["user"] == "u1"


def test_only_one_trailing_cr_is_dropped():
    assert record_of(f"{TS} paid checkout u1 hello\r\r".encode())["message"] == "hello\r"
    # Without a message the second \r stays in the user field.
    assert reason_of(f"{TS} paid checkout u1\r\r".encode()) == "bad_characters"


def test_unknown_statuses_are_counted_as_records():
    batch, stats = parse(f"{TS} weird-status svc u1\n{TS} PAID svc u1\n{TS} 💸 svc u1\n".encode())
    assert batch.frame["status"].to_list() == ["weird-status", "PAID", "💸"]
    assert stats.records == 3 and stats.malformed == 0


def test_invalid_utf8_in_message_only_gives_record_with_replacement_char():
    record = record_of(TS.encode() + b" paid checkout u1 bad \xff\xfe byte \xe2\x82")
    assert record["message"] == "bad \ufffd\ufffd byte \ufffd"
    assert record["user"] == "u1"


def test_non_ascii_tokens_are_accepted():
    record = record_of(f"{TS} é サービス пользователь ok".encode())
    assert (record["status"], record["service"], record["user"]) == ("é", "サービス", "пользователь")


@given(st.lists(st.sampled_from(["PaymentService", "PaymentServiceX", "PaymentSe+vice", "PaymentSe-vice",
                                  "AuthenticationService", "AuthenticationServicE", "AuthentiXationService", "svc",
                                  "ABCDEFGHIJKLM"]),
                min_size=1, max_size=60),
       st.integers(0, 4))
@settings(max_examples=100, deadline=None)
def test_repeated_long_keys_read_back_as_written(services, shift):
    # Long keys are stored once and repeats point at them: texts with the same first and last 8
    # bytes and length (so the same place in the scan's table) must still come back as written.
    users = [f"user-with-a-long-name-{(i + shift) % 3}" for i in range(len(services))]
    statuses = ["DECLINED_BY_ISSUER" if i % 2 else "OK" for i in range(len(services))]
    data = b"".join(f"{TS} {st_} {svc} {user} m{i}\n".encode()
                    for i, (st_, svc, user) in enumerate(zip(statuses, services, users)))
    batch, stats = parse(data)
    assert stats.records == len(services)
    frame = batch.frame
    assert frame["service"].to_list() == services
    assert frame["user"].to_list() == users
    assert frame["status"].to_list() == statuses
    assert frame.filter(pl.col("service") == services[0]).height == services.count(services[0])


# --- timestamps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-05T14:07:09Z", utc(2024, 3, 5, 14, 7, 9)),
        ("2024-03-05T14:07:09.5Z", utc(2024, 3, 5, 14, 7, 9, 500000)),
        ("2024-03-05T14:07:09.123456Z", utc(2024, 3, 5, 14, 7, 9, 123456)),
        ("2024-03-05T14:07:09.123456789Z", utc(2024, 3, 5, 14, 7, 9, 123456)),
        ("2024-03-05T14:07:09.999999999Z", utc(2024, 3, 5, 14, 7, 9, 999999)),  # truncated, not rounded
        ("2024-03-05T14:07:09.0000019Z", utc(2024, 3, 5, 14, 7, 9, 1)),
        ("2024-03-05T14:07:09+02:00", utc(2024, 3, 5, 12, 7, 9)),
        ("2024-03-05T14:07:09-05:30", utc(2024, 3, 5, 19, 37, 9)),
        ("2024-03-05T14:07:09.25+05:45", utc(2024, 3, 5, 8, 22, 9, 250000)),
        ("2024-03-05T23:30:00-01:00", utc(2024, 3, 6, 0, 30)),  # crosses midnight: UTC hour 0
        ("2024-01-01T00:00:00+23:59", utc(2023, 12, 31, 0, 1)),
        ("2024-01-01T00:00:00-00:00", utc(2024, 1, 1)),
        ("2024-02-29T12:00:00Z", utc(2024, 2, 29, 12)),
        ("2000-02-29T12:00:00Z", utc(2000, 2, 29, 12)),
        ("0001-01-01T00:00:00Z", utc(1, 1, 1)),
        ("9999-12-31T23:59:59.999999999Z", utc(9999, 12, 31, 23, 59, 59, 999999)),
    ],
)
def test_valid_timestamps_are_normalised_to_utc(text, expected):
    assert record_of(f"{text} paid svc u1".encode())["ts"] == expected


# --- blank lines -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"", b" ", b"   ", b"\t", b"\r", b"\r\r", b" \t \x0b\x0c ", "\u3000".encode(), "\x1c".encode(),
     "\x1f".encode(), "\u00a0\u2028\u2029\u0085".encode()],
    ids=["empty", "space", "spaces", "tab", "cr", "two-cr", "mixed-ascii", "ideographic-space",
         "file-separator", "unit-separator", "unicode-spaces"],
)
def test_blank_lines(raw):
    frame, stats = one_line(raw)
    assert stats.blank == 1 and frame.is_empty() and stats.samples == []


def test_zero_width_space_is_not_blank():
    # U+200B is not whitespace for str.isspace: the line is malformed, not blank.
    assert reason_of("\u200b".encode()) == "missing_fields"


# --- malformed lines, in the order of the checks ---------------------------------------------


def test_too_long_by_bytes():
    line = f"{TS} paid svc u1 ".encode()
    exact = line + b"x" * (MAX - len(line))
    assert len(exact) == MAX
    assert record_of(exact)["message"] == "x" * (MAX - len(line))
    assert reason_of(exact + b"x") == "too_long"
    # The dropped \r does not count towards the limit.
    assert record_of(exact + b"\r")["ts"] == utc(2024, 3, 5, 14, 7, 9)


def test_too_long_counts_multibyte_characters_as_bytes():
    line = f"{TS} paid svc u1 ".encode()
    room = MAX - len(line)
    assert record_of(line + "é".encode() * (room // 2))["user"] == "u1"
    assert reason_of(line + "é".encode() * (room // 2 + 1)) == "too_long"


@pytest.mark.parametrize(
    ("invalid", "extra", "expected"),
    [
        (b"\xff", 0, "record"),  # exactly max_line_bytes raw bytes (decoded, it is longer)
        (b"\xff", 1, "too_long"),
        (b"\xe2\x82", 0, "record"),  # a truncated 3-byte sequence: one U+FFFD for two bytes
        (b"\xe2\x82", 1, "too_long"),
    ],
)
def test_too_long_with_invalid_utf8_is_measured_in_raw_bytes(invalid, extra, expected):
    prefix = f"{TS} paid svc u1 ".encode()
    count = (MAX - len(prefix)) // len(invalid)
    raw = prefix + b"x" * (MAX - len(prefix) - count * len(invalid) + extra) + invalid * count
    assert len(raw) == MAX + extra
    frame, stats = one_line(raw)
    if expected == "record":
        assert stats.records == 1
        assert frame["message"][0].endswith("\ufffd" * count)
    else:
        assert stats.samples == [MalformedLine(1, "too_long", "")]


def test_raw_length_recheck_keeps_each_line_in_its_place():
    prefix = f"{TS} paid svc u1 ".encode()
    under = prefix + b"\xff" * (MAX - len(prefix))  # exactly the limit in raw bytes
    over = under + b"\xff"
    lines = [prefix + b"a", over, under + b"\r", over + b"\r", b"", under, over, prefix + b"b\r"]
    batch, stats = parse(b"\n".join(lines) + b"\n", first_line=3)
    assert batch.frame["line"].to_list() == [3, 5, 8, 10]
    assert stats.samples == [MalformedLine(n, "too_long", "") for n in (4, 6, 9)]
    assert (stats.lines, stats.records, stats.blank, stats.malformed) == (8, 4, 1, 3)


def test_too_long_wins_over_every_other_reason():
    assert reason_of(b"\xff" * (MAX + 1)) == "too_long"
    assert reason_of(b"x" * (MAX + 1)) == "too_long"
    assert reason_of(b" " * (MAX + 1)) == "too_long"  # even a blank one


@pytest.mark.parametrize(
    "raw",
    ["x", "just-one-token", f"{TS}", f"{TS} paid", f"{TS} paid svc", "a b c"],
)
def test_missing_fields(raw):
    assert reason_of(raw.encode()) == "missing_fields"


@pytest.mark.parametrize(
    "raw",
    [
        f"{TS}  paid svc u1",  # double space: the message is never shifted into the user field
        f"{TS} paid  svc u1 msg",
        f"{TS} paid svc  u1",
        f" {TS} paid svc u1",  # leading space
        f"{TS} paid svc ",  # empty user
    ],
    ids=["double-space-status", "double-space-service", "double-space-user", "leading-space", "empty-user"],
)
def test_empty_field(raw):
    assert reason_of(raw.encode()) == "empty_field"


@pytest.mark.parametrize("field", range(4))
def test_invalid_utf8_in_each_of_the_first_four_fields(field):
    parts = [TS.encode(), b"paid", b"svc", b"u1", b"message"]
    parts[field] = parts[field][:2] + b"\xff" + parts[field][2:]
    assert reason_of(b" ".join(parts)) == "invalid_utf8"


def test_literal_replacement_character_in_a_field_is_invalid_utf8():
    assert reason_of(f"{TS} paid svc u\ufffd1".encode()) == "invalid_utf8"


def test_invalid_utf8_wins_over_bad_characters_and_timestamp():
    assert reason_of(b"not-a-time pa\tid svc u\xff1") == "invalid_utf8"


@pytest.mark.parametrize("char", ["\t", "\x00", "\x7f", "\u00a0", "\x1b", "\x0b", "\u2028", "\u0085"],
                         ids=["tab", "nul", "del", "nbsp", "esc", "vt", "line-sep", "nel"])
@pytest.mark.parametrize("field", range(4))
def test_bad_characters_in_a_field(char, field):
    parts = [TS, "paid", "svc", "u1", "message"]
    parts[field] = parts[field][:2] + char + parts[field][2:]
    assert reason_of(" ".join(parts).encode()) == "bad_characters"


def test_control_characters_in_message_are_kept():
    record = record_of(f"{TS} paid svc u1 a\x00b\x7fc\u00a0d".encode())
    assert record["message"] == "a\x00b\x7fc\u00a0d"


def test_bad_characters_wins_over_bad_timestamp():
    assert reason_of(b"yesterday pa\x00id svc u1") == "bad_characters"


@pytest.mark.parametrize(
    "text",
    [
        "2024-03-05T25:00:00Z",  # hour 25
        "2024-03-05T24:00:00Z",
        "2024-03-05T14:60:00Z",  # minute 60
        "2024-03-05T14:07:60Z",  # leap second
        "2024-03-05T25:99:00Z",
        "2024-02-30T00:00:00Z",  # Feb 30
        "2025-02-29T00:00:00Z",  # not a leap year
        "1900-02-29T00:00:00Z",
        "2024-04-31T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-00-10T00:00:00Z",
        "2024-01-00T00:00:00Z",
        "2024-03-05T14:07:09",  # no zone
        "2024-03-05T14:07:09.123",
        "2024-03-05T14:07:09z",  # lower-case z
        "2024-03-05t14:07:09Z",  # lower-case t
        "2024-03-05",  # date only
        "2024-03-05T14:07Z",  # missing seconds
        "2024-03-05T14:07:09+24:00",  # offset hours 24
        "2024-03-05T14:07:09+02:60",
        "2024-03-05T14:07:09+0200",
        "2024-03-05T14:07:09+02",
        "2024-03-05T14:07:09.Z",
        "2024-03-05T14:07:09.1234567890Z",  # 10 fraction digits
        "0000-01-01T00:00:00Z",  # year 0000
        "0000-12-31T23:00:00-01:00",  # year 0000 even if it is 0001 in UTC
        "0001-01-01T00:00:00+01:00",  # year 0 once normalised to UTC
        "9999-12-31T23:00:00-01:00",  # year 10000 once normalised to UTC
        "24-03-05T14:07:09Z",
        "+2024-03-05T14:07:09Z",
        "2024-3-05T14:07:09Z",
        "٢٠٢٤-03-05T14:07:09Z",  # non-ASCII digits
        "2024-03-05T14:07:09ZZ",
        "2024-03-05T14:07:09Z+01:00",
        "1709647629",
    ],
)
def test_bad_timestamp(text):
    assert reason_of(f"{text} paid svc u1 msg".encode()) == "bad_timestamp"


def test_valid_feb_29_in_leap_year_vs_not():
    assert record_of(b"2024-02-29T00:00:00Z paid svc u1")["ts"] == utc(2024, 2, 29)
    assert reason_of(b"2025-02-29T00:00:00Z paid svc u1") == "bad_timestamp"


# --- accounting of malformed lines -----------------------------------------------------------


def test_malformed_samples_hold_file_line_reason_and_text():
    lines = [
        f"{TS} paid svc u1",
        "garbage",
        "",
        f"{TS}  paid svc u1",
        "x" * (MAX + 10),
        f"2024-02-30T00:00:00Z paid svc u1 {'m' * 200}",
    ]
    batch, stats = parse(("\n".join(lines) + "\n").encode(), first_line=41)
    assert stats.path == "app.log"
    assert (stats.lines, stats.records, stats.blank, stats.malformed) == (6, 1, 1, 4)
    assert stats.samples == [
        MalformedLine(42, "missing_fields", "garbage"),
        MalformedLine(44, "empty_field", f"{TS}  paid svc u1"),
        MalformedLine(45, "too_long", ""),  # a too-long line's text is never kept
        MalformedLine(46, "bad_timestamp", lines[5][:200]),
    ]
    assert len(stats.samples[-1].text) == 200
    assert stats.reasons == {"missing_fields": 1, "empty_field": 1, "too_long": 1, "bad_timestamp": 1}
    assert batch.frame["line"].to_list() == [41]


def test_sample_text_is_truncated_to_200_characters_not_bytes():
    text = "é" * 200
    _, stats = one_line(f"{TS} paid svc u1\t{text}".encode(), max_line_bytes=1024)
    [sample] = stats.samples
    assert sample.text == f"{TS} paid svc u1\t{text}"[:200]
    assert len(sample.text) == 200


def test_sample_text_keeps_replacement_characters_and_drops_cr():
    _, stats = one_line(b"\xffbad line\r")
    assert stats.samples == [MalformedLine(1, "missing_fields", "\ufffdbad line")]
    _, stats = one_line(b"\xffbad line here now\r")
    assert stats.samples == [MalformedLine(1, "invalid_utf8", "\ufffdbad line here now")]


def test_sample_limit_keeps_earliest_but_counts_all():
    lines = ["bad"] * 30 + [f"{TS} paid svc u1"] + ["worse one"] * 20
    _, stats = parse(("\n".join(lines) + "\n").encode(), sample_limit=5)
    assert stats.malformed == 50
    assert stats.reasons == {"missing_fields": 50}
    assert stats.samples == [MalformedLine(n, "missing_fields", "bad") for n in range(1, 6)]
    assert stats.records == 1


def test_sample_limit_zero_keeps_no_samples():
    _, stats = parse(b"bad\nworse\n", sample_limit=0)
    assert stats.malformed == 2 and stats.samples == []


def test_every_line_is_exactly_one_kind():
    lines = [f"{TS} paid svc u1", "", " ", "bad", f"{TS} paid svc u1 m", "\t", "x" * (MAX * 2)]
    for ending in ("\n", "\r\n"):
        _, stats = parse(ending.join(lines).encode() + ending.encode())
        assert (stats.lines, stats.records, stats.blank, stats.malformed) == (7, 2, 3, 2)


def test_last_line_without_newline_counts():
    batch, stats = parse(f"{TS} paid svc u1\n{TS} paid svc u2".encode())
    assert stats.lines == 2
    assert batch.frame["user"].to_list() == ["u1", "u2"]
    assert batch.frame["line"].to_list() == [1, 2]


def hashes(lines: list[bytes]) -> list[int]:
    batch, stats = parse(b"\n".join(lines) + b"\n")
    assert stats.records == len(lines)
    return batch.frame["record_hash"].to_list()


def test_a_record_hash_names_the_record_not_how_its_line_is_written():
    same = [
        f"{TS} paid svc u1 a message".encode(),
        b"2024-03-05T15:07:09+01:00 paid svc u1 a message",  # the same instant
        b"2024-03-05T14:07:09.0000001Z paid svc u1 a message\r",  # below the microsecond; \r dropped
    ]
    assert len(set(hashes(same))) == 1
    assert hashes(same)[0] == hash_of(utc(2024, 3, 5, 14, 7, 9), "paid", "svc", "u1", "a message")
    # No message and an empty one are the same record.
    assert len(set(hashes([f"{TS} paid svc u1".encode(), f"{TS} paid svc u1 ".encode()]))) == 1
    # Invalid UTF-8 in the message is hashed as it is decoded.
    assert hashes([f"{TS} paid svc u1 caf".encode() + b"\xe9", f"{TS} paid svc u1 caf".encode() + b"\xff"]) == [
        hash_of(utc(2024, 3, 5, 14, 7, 9), "paid", "svc", "u1", "caf\ufffd")] * 2
    different = [
        f"{TS} paid svc u1 a message".encode(),
        f"{TS} paid svc u1 a message ".encode(),
        f"{TS} paid svc u1  a message".encode(),
        f"{TS} paid svc u1a message".encode(),
        f"{TS} paid svcu1 a message".encode(),
        f"{TS} pai dsvc u1 a message".encode(),
        f"{TS} paid svc u1 a messagf".encode(),
        b"2024-03-05T14:07:09.000001Z paid svc u1 a message",
        f"{TS} paid svc u1 a message that is long enough for the hash's loop of sixteen bytes".encode(),
        f"{TS} paid svc u1 a message that is long enough for the hash's loop of sixteen bytez".encode(),
    ]
    assert len(set(hashes(different))) == len(different)


@pytest.mark.parametrize("user, message", [
    ("ü-7", "card charged"),  # past ASCII in a field, not in the message: hashed as it is
    ("u1", "paid for the café on the corner"),  # valid UTF-8: decoding changes nothing
    ("u1", "a message long enough for the loop \udcff in its middle words, and more"),
    ("u1", "a message long enough for the loop, its invalid byte last: \udcff"),
    ("ü-7", "\udce9"),  # a message of one invalid byte, after a field past ASCII
])
def test_a_record_hash_of_bytes_past_ascii_is_the_hash_of_the_decoded_fields(user, message):
    # The scan hashes a line's own bytes and decodes only where it saw bytes past ASCII in the
    # message (\udcXX stands for the invalid byte 0xXX, which decoding replaces with U+FFFD).
    line = f"{TS} paid svc {user} {message}".encode("utf-8", "surrogateescape")
    decoded = line.decode("utf-8", "replace").split(" ", 4)
    assert hashes([line]) == [hash_of(utc(2024, 3, 5, 14, 7, 9), *decoded[1:])]


def test_a_record_hash_is_the_same_in_every_build():
    # duplicate_event's anomaly keys are this hash, and users keep them: a change must be deliberate
    # (a new SCAN_VERSION, which also rebuilds checkpoints that hold the old hashes).
    line = b"2025-07-22T12:34:56Z INFO AuthenticationService user123 User login successful"
    assert hashes([line]) == [12184067320739441930]


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from("0123456789ab.- \t"), max_size=30))
def test_a_record_hash_s_lowest_bit_says_whether_the_message_carries_an_id(message):
    """The scan's answer agrees with duplicate_event's default id pattern (a word with 3 digits or more)."""
    import re

    from plugins.duplicates import ID_PATTERN

    line = f"2025-07-22T12:34:56Z INFO PaymentService u123 {message}".encode()
    [digest] = hashes([line])
    assert digest & 1 == bool(re.search(ID_PATTERN, message))


fields = st.tuples(st.integers(0, 2), st.sampled_from(["a", "b", "ab"]), st.sampled_from(["a", "b", "é"]),
                   st.sampled_from(["", "a", "a b", "\ufffd", "ab" * 9]))


@settings(max_examples=200, deadline=None)
@given(st.lists(fields, min_size=2, max_size=8))
def test_records_share_a_hash_exactly_when_their_fields_are_equal(records):
    lines = [f"2024-03-05T14:07:0{second}Z paid {service} {user} {message}".encode() for second, service, user, message
             in records]
    by_hash: dict[int, set] = {}
    for record, digest in zip(records, hashes(lines), strict=True):
        by_hash.setdefault(digest, set()).add(record)
    assert all(len(group) == 1 for group in by_hash.values())
    assert len(by_hash) == len(set(records))


def test_empty_chunk_has_no_lines():
    batch, stats = parse(b"")
    assert len(batch) == 0 and stats.lines == 0
    assert batch.frame.schema == pl.Schema(RECORD_SCHEMA)


def test_newline_alone_is_one_blank_line():
    _, stats = parse(b"\n")
    assert (stats.lines, stats.blank) == (1, 1)


def test_overlong_lines_reported_by_the_reader_are_counted():
    chunk = Chunk("app.log", f"{TS} paid svc u1\n".encode(), 8, 100, 200, overlong=(5, 7))
    batch, stats = parse_chunk(chunk, MAX, 100)
    assert (stats.lines, stats.records, stats.malformed) == (3, 1, 2)
    assert stats.samples == [MalformedLine(5, "too_long", ""), MalformedLine(7, "too_long", "")]
    assert batch.frame["line"].to_list() == [8]
    assert stats.bytes == 100


MIXED = (
    f"{TS} paid svc u1 first message\r\n\n{TS} paid  svc u2 double space\n"
    f"{TS} paid svc jos\xe9 latin-1\n".encode("latin-1")
    + f"{TS} refund svc u3 caf\u00e9 \u2603\n# notes\n{TS} paid svc u4".encode()
)


def test_the_full_classification_alone_gives_the_same_records_and_lines(monkeypatch):
    expected_batch, expected = parse(MIXED)
    assert expected.records == 3 and expected.malformed == 3  # the case is worth checking
    assert expected_batch.frame["message"].to_list() == ["first message", "café ☃", ""]
    monkeypatch.setattr(parse_module, "_scan", every_line_the_full_way())
    batch, stats = parse(MIXED)
    assert batch.frame.rows() == expected_batch.frame.rows()
    assert (stats.lines, stats.records, stats.blank, stats.samples) == (
        expected.lines, expected.records, expected.blank, expected.samples)


# Timestamps at the edges of what the compiled scan decides alone (no Unicode on these lines).
EDGE_TIMESTAMPS = [
    "2025-07-22T12:34:56Z", "2025-07-22T12:34:56.1Z", "2025-07-22T12:34:56.123456789+05:30",
    "1969-12-31T23:59:59.9999999Z", "1969-12-31T23:59:59.0000001-00:01", "1600-01-01T00:00:00.9999999Z",
    "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+00:01", "0001-01-01T00:59:00-00:01", "0000-12-31T23:00:00-02:00",
    "9999-12-31T23:59:59.999999999Z", "9999-12-31T23:59:59+00:00", "9999-12-31T23:00:00-01:00",
    "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2000-02-29T00:00:00Z",
    "2025-04-31T00:00:00Z", "2025-00-10T00:00:00Z", "2025-13-10T00:00:00Z", "2025-01-00T00:00:00Z",
    "2025-07-22T24:00:00Z", "2025-07-22T12:60:00Z", "2025-07-22T12:00:60Z", "2025-07-22T12:34:56",
    "2025-07-22T12:34:56+24:00", "2025-07-22T12:34:56+05:60", "2025-07-22T12:34:56+0530", "2025-07-22t12:34:56Z",
    "2025-07-22T12:34:56z", "2025-07-22T12:34:56.Z", "2025-07-22T12:34:56.1234567890Z", "2025-07-22 12:34:56Z",
    "25-07-22T12:34:56Z", "+2025-07-22T12:34:56Z", "2025-07-22T12:34:56ZZ", "2025-07-22T1:34:56Z",
]


def polars_instant(timestamp: str) -> datetime | None:
    """The instant a timestamp names by the contract, read by Polars rather than by core._scan."""
    if not re.fullmatch(parse_module._TIMESTAMP, timestamp) or timestamp.startswith("0000"):
        return None
    parsed = pl.Series([timestamp]).str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%#z", strict=False, time_unit="us")
    micros = parsed.cast(pl.Int64)[0]  # years 0 and 10000 have no Python datetime
    first = datetime(1, 1, 1, tzinfo=timezone.utc)
    last = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
    if micros is None or not epoch_us(first) <= micros <= epoch_us(last):
        return None
    return parsed[0]


def epoch_us(instant: datetime) -> int:
    return (instant - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


@pytest.mark.parametrize("timestamp", EDGE_TIMESTAMPS)
def test_the_compiled_scan_reads_timestamps_as_polars_does(monkeypatch, timestamp):
    content = f"{timestamp} paid svc u1 a message\n{timestamp} paid svc u2 caf\xe9".encode()
    batch, stats = parse(content)
    expected = polars_instant(timestamp)
    if expected is None:
        assert batch.frame.is_empty() and stats.reasons == {"bad_timestamp": 2}
    else:
        assert batch.frame["ts"].to_list() == [expected, expected]
    monkeypatch.setattr(parse_module, "_scan", every_line_the_full_way())
    full_batch, full = parse(content)
    assert batch.frame.rows() == full_batch.frame.rows()
    assert stats.samples == full.samples


# Lines on the edges of what the compiled scan decides alone, as raw bytes (no newline).
EDGE_LINES = [
    TS.encode() + b" paid svc u1 message",
    TS.encode() + b" paid svc u1",
    TS.encode() + b" paid svc u1 ",
    TS.encode() + b" paid svc u1 caf\xc3\xa9 \xe2\x98\x83",  # UTF-8 in the message
    TS.encode() + b" paid svc u1 caf\xe9",  # an invalid byte in the message
    TS.encode() + b" paid svc u1 tab\there\rand\x00nul",  # control characters in the message
    TS.encode() + b" paid s\xc3\xa9rvice \xd0\xbf\xd0\xbe\xd0\xbb\xd1\x8c\xd0\xb7 message",
    TS.encode() + b" paid svc u\xc2\x80x",  # U+0080 is not whitespace
    TS.encode() + b" paid svc u\xc2\x85x",  # U+0085 is
    TS.encode() + b" paid svc u\xc2\xa0x",  # U+00A0
    TS.encode() + b" paid svc u\xe1\x9a\x80x",  # U+1680
    TS.encode() + b" paid svc u\xe2\x80\x8ax",  # U+200A
    TS.encode() + b" paid svc u\xe2\x80\x8bx",  # U+200B is not whitespace
    TS.encode() + b" paid svc u\xe2\x80\xa8x",  # U+2028
    TS.encode() + b" paid svc u\xe2\x80\xafx",  # U+202F
    TS.encode() + b" paid svc u\xe3\x80\x80x",  # U+3000
    TS.encode() + b" paid svc u\xef\xbf\xbdx",  # a literal U+FFFD
    TS.encode() + b" paid svc u\xef\xbb\xbfx",  # U+FEFF is not whitespace
    TS.encode() + b" paid svc u\xc0\x80x",  # an overlong NUL
    TS.encode() + b" paid svc u\xe0\x9f\xbfx",  # overlong
    TS.encode() + b" paid svc u\xed\xa0\x80x",  # a surrogate
    TS.encode() + b" paid svc u\xf4\x90\x80\x80x",  # past U+10FFFF
    TS.encode() + b" paid svc u\xf0\x9f\x98\x80",  # an emoji
    TS.encode() + b" paid svc u\xf0\x9f\x98",  # cut short
    TS.encode() + b" paid svc \xe2\x98\x83\x80",  # a stray continuation byte
    TS.encode() + b" paid\x7f svc u1",
    TS.encode() + b" paid\x1c svc u1",
    TS.encode() + b" paid  svc u1",
    b" " + TS.encode() + b" paid svc u1",
    b"\xef\xbb\xbf" + TS.encode() + b" paid svc u1",
    TS.encode() + b" paid svc",
    TS.encode() + b" caf\xc3\xa9",
    b"", b"   ", b"\t\x0b\x0c\x1c\x1f", b"\xc2\xa0", b"    \xc2\xa0", b"  \xe3\x80\x80 ", b"\xc2\x85\t",
    b"\r", b"\r\r", b"  x\xc2\xa0", b"# notes \xe2\x80\x94 prose", b"\x00\x01\x02", b"\xff\xfe\xfd",
]


@pytest.mark.parametrize("optional", [True, False])
@pytest.mark.parametrize("raw", EDGE_LINES)
def test_the_compiled_scan_classifies_edge_lines_as_the_reference_does(raw, optional):
    """With ``optional``, the scan builds the message and record_hash columns too."""
    columns = RECORD_SCHEMA if optional else ("ts", "status", "service", "user")
    for data in filter(None, (raw + b"\n", raw + b"\r\n", raw)):  # with a newline, with \r\n, as the last line
        batch, stats = parse_chunk(Chunk("app.log", data, 1, 0, len(data)), MAX, 100, columns)
        kind, detail = REFERENCE.classify(data.removesuffix(b"\n"), MAX)
        if kind == "record":
            fields = detail
            extra = (fields[4], hash_of(*fields)) if optional else ("", 0)
            assert batch.frame.rows() == [(*fields[:4], *extra, "app.log", 1)]
        elif kind == "blank":
            assert (stats.blank, batch.frame.height, stats.malformed) == (1, 0, 0)
        else:
            assert stats.reasons == {detail: 1} and batch.frame.is_empty()
        assert stats.lines == 1


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")))
def test_the_compiled_scan_decodes_messages_as_python_does(message):
    content = f"{TS} paid svc u1 ".encode() + message + b"\n"
    batch, stats = parse(content)
    assert batch.frame["message"].to_list() == [message.removesuffix(b"\r").decode("utf-8", "replace")]


@pytest.mark.parametrize("columns", [RECORD_SCHEMA, ("ts", "status", "service", "user")])
def test_a_small_batch_gets_the_same_constant_columns_written_out_as_a_large_one_gets_as_scalars(
        monkeypatch, columns):
    """A batch of few rows has its file and placeholder columns written out (no Polars query, which
    a file of ten lines cannot afford); a larger one gets scalar columns. The frames are the same."""
    data = b"".join(f"{TS} INFO Svc{i % 7} user{i} Paid order-{i}\n".encode() for i in range(50))
    chunk = Chunk("shop/app.log", data, 3, 0, len(data))
    small, _ = parse_chunk(chunk, MAX, 100, columns)
    monkeypatch.setattr(parse_module, "SMALL_BATCH_ROWS", 10)
    large, _ = parse_chunk(chunk, MAX, 100, columns)
    assert small.frame.height == 50 and small.frame.schema == large.frame.schema == RECORD_SCHEMA
    assert small.frame.equals(large.frame)
    assert small.frame["file"].unique().to_list() == ["shop/app.log"] and small.frame["line"].to_list() == list(
        range(3, 53))
    if "message" not in columns:
        assert small.frame["message"].unique().to_list() == [""] and small.frame["record_hash"].sum() == 0
