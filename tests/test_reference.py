"""Pin bench/reference.py's reading of docs/line-contract.md, case by case."""

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import load_bench

ROOT = Path(__file__).resolve().parents[1]
ref = load_bench("reference")

UTC = timezone.utc
GOOD = b"2025-07-22T12:34:56Z INFO AuthenticationService user123 User login successful"


def line(ts=b"2025-07-22T12:34:56Z", status=b"INFO", service=b"PaymentService", user=b"user1", message=b"ok"):
    """A line built from its five parts joined by single spaces."""
    return b" ".join([ts, status, service, user, message])


def reason(raw, **kwargs):
    """The malformed reason for raw, failing if the line is not malformed."""
    kind, value = ref.classify(raw, **kwargs)
    assert kind == "malformed", (raw, kind, value)
    return value


def instant(ts):
    """The UTC datetime a record with this timestamp gets."""
    kind, value = ref.classify(line(ts=ts))
    assert kind == "record", (ts, kind, value)
    return value[0]


def write(tmp_path, data, name="log.txt"):
    """Write bytes to a file under tmp_path and return its path."""
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- records --------------------------------------------------------------------------------------

def test_record_fields():
    assert ref.classify(GOOD) == (
        "record",
        (datetime(2025, 7, 22, 12, 34, 56, tzinfo=UTC), "INFO", "AuthenticationService", "user123",
         "User login successful"),
    )


def test_message_is_kept_as_is_including_spaces_and_tabs():
    _, rec = ref.classify(line(message=b"a  b\tc  "))
    assert rec[4] == "a  b\tc  "


def test_four_parts_give_an_empty_message():
    assert ref.classify(b"2025-07-22T12:34:56Z INFO Svc user1")[1][4] == ""


def test_trailing_space_after_user_gives_an_empty_message():
    assert ref.classify(b"2025-07-22T12:34:56Z INFO Svc user1 ")[1][4] == ""


def test_unknown_status_is_still_a_record():
    assert ref.classify(line(status=b"PENDING_REVIEW"))[1][1] == "PENDING_REVIEW"


def test_invalid_utf8_in_message_only_is_a_record():
    kind, rec = ref.classify(line(message=b"Caf\xe9 Paris \xff"))
    assert kind == "record" and rec[4] == "Caf\ufffd Paris \ufffd"


def test_control_characters_in_message_are_allowed():
    assert ref.classify(line(message=b"nul \x00 esc \x1b del \x7f"))[0] == "record"


def test_non_ascii_user_is_allowed():
    assert ref.classify(line(user="zoë.müller".encode()))[1][3] == "zoë.müller"


def test_c1_control_is_not_a_bad_character():
    # The contract names only U+0000-U+001F and U+007F; U+0080 is neither those nor whitespace.
    assert ref.classify(line(user="a\u0080b".encode()))[0] == "record"


# --- blank ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"", b" ", b"   ", b"\t", b" \t \x0b\x0c", b"\r", b"\r\r",
                                 "\u00a0\u2003\u3000".encode(), b"\x1c\x1d\x1e\x1f"])
def test_blank(raw):
    assert ref.classify(raw) == ("blank", None)


def test_invalid_utf8_alone_is_not_blank():
    assert reason(b"\xff") == "missing_fields"


def test_nul_alone_is_not_blank():
    assert reason(b"\x00\x00") == "missing_fields"


# --- CRLF -----------------------------------------------------------------------------------------

def test_crlf_drops_one_carriage_return():
    assert ref.classify(GOOD + b"\r") == ref.classify(GOOD)


def test_only_one_carriage_return_is_dropped():
    assert ref.classify(GOOD + b"\r\r")[1][4] == "User login successful\r"


def test_second_carriage_return_in_user_field_is_bad():
    assert reason(b"2025-07-22T12:34:56Z INFO Svc user1\r\r") == "bad_characters"


# --- too_long -------------------------------------------------------------------------------------

def test_too_long():
    assert reason(b"x" * 11, max_line_bytes=10) == "too_long"


def test_exactly_max_bytes_is_not_too_long():
    assert ref.classify(GOOD, max_line_bytes=len(GOOD))[0] == "record"


def test_length_is_measured_after_dropping_the_carriage_return():
    assert ref.classify(GOOD + b"\r", max_line_bytes=len(GOOD))[0] == "record"


def test_length_is_in_bytes_not_characters():
    raw = line(message="é".encode() * 10)
    assert reason(raw, max_line_bytes=len(raw) - 1) == "too_long"


def test_too_long_is_checked_before_blank():
    assert reason(b" " * 20, max_line_bytes=10) == "too_long"


def test_default_limit_is_64_kib():
    assert ref.classify(b"x" * 65536)[1] != "too_long"
    assert reason(b"x" * 65537) == "too_long"


# --- missing_fields -------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"2025-07-22T12:34:56Z INFO PaymentService", b"2025-07-22T12:34:56Z",
                                 b"# Daily report", b"---", b"a\tb\tc\td\te"])
def test_missing_fields(raw):
    assert reason(raw) == "missing_fields"


def test_missing_fields_beats_bad_timestamp():
    assert reason(b"garbage INFO Svc") == "missing_fields"


# --- empty_field ----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    b"2025-07-22T12:34:56Z  INFO Svc user1 msg",        # double space after the timestamp
    b"2025-07-22T12:34:56Z INFO Svc  user1 msg",        # message would shift into USER
    b" 2025-07-22T12:34:56Z INFO Svc user1 msg",        # leading space
    b"2025-07-22T12:34:56Z INFO Svc  ",                 # four parts, the last two empty
])
def test_empty_field(raw):
    assert reason(raw) == "empty_field"


def test_double_space_inside_message_is_fine():
    assert ref.classify(b"2025-07-22T12:34:56Z INFO Svc user1 a  b")[0] == "record"


def test_empty_field_beats_invalid_utf8_and_bad_characters():
    assert reason(b"2025-07-22T12:34:56Z  \xff Svc\t user1") == "empty_field"


# --- invalid_utf8 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    line(user=b"jos\xe9"),                         # Latin-1 byte
    line(service=b"Payment\xe2\x82"),             # truncated multi-byte sequence
    line(status=b"\xed\xa0\x80"),                 # encoded surrogate
    line(ts=b"2025-07-22T12:34:56\xffZ"),
    line(user="us\ufffder".encode()),             # a literal U+FFFD counts too
])
def test_invalid_utf8(raw):
    assert reason(raw) == "invalid_utf8"


def test_invalid_utf8_beats_bad_characters():
    assert reason(line(service=b"Svc\t", user=b"\xff")) == "invalid_utf8"


# --- bad_characters -------------------------------------------------------------------------------

@pytest.mark.parametrize("field", [b"a\tb", b"a\x00b", b"\x1b[31mERROR\x1b[0m", b"a\x7fb", b"a\rb",
                                   "a\u00a0b".encode(), "a\u2003b".encode(), "a\u2028b".encode(),
                                   b"a\x0bb", b"a\x1fb"])
@pytest.mark.parametrize("where", ["status", "service", "user"])
def test_bad_characters(field, where):
    assert reason(line(**{where: field})) == "bad_characters"


def test_bad_characters_in_timestamp_beats_bad_timestamp():
    assert reason(line(ts=b"2025-07-22T12:34:56Z\t")) == "bad_characters"


def test_tab_instead_of_separator():
    assert reason(b"2025-07-22T12:34:56Z INFO Svc\tuser1 some message") == "bad_characters"


# --- bad_timestamp --------------------------------------------------------------------------------

@pytest.mark.parametrize("ts", [
    "2025-07-22T25:00:00Z",          # hour 25
    "2025-07-22T24:00:00Z",          # hour 24
    "2025-07-22T12:60:00Z",          # minute 60
    "2025-07-22T25:99:00Z",
    "2025-07-22T23:59:60Z",          # leap second
    "2025-02-30T12:00:00Z",          # Feb 30
    "2025-02-29T12:00:00Z",          # not a leap year
    "2100-02-29T12:00:00Z",          # century, not a leap year
    "2025-04-31T12:00:00Z",
    "2025-13-01T12:00:00Z",
    "2025-00-10T12:00:00Z",
    "2025-07-00T12:00:00Z",
    "0000-01-01T00:00:00Z",          # year 0
    "2025-07-22T12:00:00",           # no zone
    "2025-07-22t12:00:00Z",          # lower-case t
    "2025-07-22T12:00:00z",          # lower-case z
    "2025-07-22T12:00:00.Z",         # empty fraction
    "2025-07-22T12:00:00.1234567890Z",  # 10-digit fraction
    "2025-07-22T12:00:00,5Z",        # comma fraction
    "2025-07-22T12:00:00+24:00",     # offset hour 24
    "2025-07-22T12:00:00+05:60",     # offset minute 60
    "2025-07-22T12:00:00+0530",      # offset without colon
    "2025-07-22T12:00:00+05",
    "2025-07-22T12:00:00UTC",
    "2025-7-22T12:00:00Z",           # one-digit month
    "25-07-22T12:00:00Z",
    "12025-07-22T12:00:00Z",
    "2025-07-22T1:00:00Z",
    "2025-07-22",                    # date only
    "1753187696",                    # unix seconds
    "٢٠٢٥-٠٧-٢٢T12:00:00Z",          # Arabic-Indic digits: \d would take them, [0-9] does not
    "2025-07-22T12:00:00Z+01:00",
    "2025/07/22T12:00:00Z",
    "Jul",
])
def test_bad_timestamp(ts):
    assert reason(line(ts=ts.encode())) == "bad_timestamp"


def test_byte_order_mark_is_not_stripped():
    # U+FEFF is neither whitespace nor a C0 control, so it stays in TIMESTAMP and breaks the form.
    assert reason("\ufeff".encode() + GOOD) == "bad_timestamp"


def test_normalising_below_year_1_is_bad_timestamp():
    # A real instant, but in UTC it is year 0, outside 0001-9999 (a choice the contract leaves open).
    assert reason(line(ts=b"0001-01-01T00:30:00+01:00")) == "bad_timestamp"


def test_normalising_above_year_9999_is_bad_timestamp():
    assert reason(line(ts=b"9999-12-31T23:30:00-01:00")) == "bad_timestamp"


# --- timestamps that are accepted -----------------------------------------------------------------

@pytest.mark.parametrize("ts, expected", [
    ("2024-02-29T12:00:00Z", datetime(2024, 2, 29, 12, tzinfo=UTC)),            # leap year
    ("2000-02-29T00:00:00Z", datetime(2000, 2, 29, tzinfo=UTC)),                # leap century
    ("2025-07-22T12:00:00+05:30", datetime(2025, 7, 22, 6, 30, tzinfo=UTC)),
    ("2025-07-22T20:00:00-07:00", datetime(2025, 7, 23, 3, tzinfo=UTC)),         # crosses into the next day
    ("2025-01-01T00:30:00+01:00", datetime(2024, 12, 31, 23, 30, tzinfo=UTC)),   # back into last year
    ("2025-07-22T12:00:00+00:00", datetime(2025, 7, 22, 12, tzinfo=UTC)),
    ("2025-07-22T12:00:00-00:00", datetime(2025, 7, 22, 12, tzinfo=UTC)),
    ("2025-07-22T12:00:00+23:59", datetime(2025, 7, 21, 12, 1, tzinfo=UTC)),     # largest offset
    ("2025-07-22T12:00:00.5Z", datetime(2025, 7, 22, 12, 0, 0, 500000, tzinfo=UTC)),
    ("2025-07-22T12:00:00.123Z", datetime(2025, 7, 22, 12, 0, 0, 123000, tzinfo=UTC)),
    ("2025-07-22T12:00:00.123456Z", datetime(2025, 7, 22, 12, 0, 0, 123456, tzinfo=UTC)),
    ("2025-07-22T12:00:00.1234569Z", datetime(2025, 7, 22, 12, 0, 0, 123456, tzinfo=UTC)),  # truncated
    ("2025-07-22T12:00:00.999999999Z", datetime(2025, 7, 22, 12, 0, 0, 999999, tzinfo=UTC)),
    ("2025-07-22T12:00:00.000000000+02:00", datetime(2025, 7, 22, 10, tzinfo=UTC)),
    ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),
    ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
    ("9999-12-31T23:59:59.999999999Z", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ("2031-03-14T09:26:53Z", datetime(2031, 3, 14, 9, 26, 53, tzinfo=UTC)),
])
def test_accepted_timestamp(ts, expected):
    assert instant(ts.encode()) == expected


def test_record_timestamp_is_utc():
    assert instant(b"2025-07-22T12:00:00+05:30").tzinfo == UTC


# --- summarize: splitting files into lines --------------------------------------------------------

@pytest.mark.parametrize("data, lines", [
    (b"", 0),                      # an empty file has no lines
    (b"\n", 1),                    # one empty line
    (b"\n\n", 2),
    (GOOD, 1),                     # last line without a newline counts
    (GOOD + b"\n", 1),             # no extra empty line after the final newline
    (GOOD + b"\n\n", 2),
    (GOOD + b"\r\n" + GOOD + b"\r\n", 2),
    (GOOD + b"\n" + GOOD, 2),
    (b"\r", 1),
])
def test_line_count(tmp_path, data, lines):
    assert ref.summarize([write(tmp_path, data)])["lines"] == lines


def test_summary_counts(tmp_path):
    data = b"\n".join([
        GOOD,
        b"2025-07-22T23:30:00-02:00 FAILURE PaymentService user9 Payment declined",  # 01:30 UTC
        b"2025-07-22T12:00:00.5Z PENDING_REVIEW FraudDetectionService user123 held\r",
        b"",
        b"  \t",
        b"# Daily report",
        b"2025-02-30T12:00:00Z INFO Svc user1 x",
        b"x" * 30,
    ])
    summary = ref.summarize([write(tmp_path, data)], max_line_bytes=100)
    assert summary["lines"] == 8
    assert (summary["records"], summary["blank"], summary["malformed"]) == (3, 2, 3)
    assert summary["malformed_reasons"] == {"too_long": 0, "missing_fields": 2, "empty_field": 0,
                                            "invalid_utf8": 0, "bad_characters": 0, "bad_timestamp": 1}
    assert summary["statuses"] == {"INFO": 1, "FAILURE": 1, "PENDING_REVIEW": 1}
    assert summary["services"] == {"AuthenticationService": 1, "PaymentService": 1, "FraudDetectionService": 1}
    assert summary["users"] == {"user123": 2, "user9": 1}
    assert len(summary["hours"]) == 24
    assert {h: n for h, n in summary["hours"].items() if n} == {12: 2, 1: 1}


def test_summary_over_several_files(tmp_path):
    a = write(tmp_path, GOOD, "a.txt")  # no final newline: must not glue onto the next file
    b = write(tmp_path, GOOD + b"\n", "b.txt")
    summary = ref.summarize([a, b])
    assert (summary["lines"], summary["records"]) == (2, 2)


def test_too_long_line_across_many_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(ref, "CHUNK_BYTES", 1000)
    data = GOOD + b"\n" + b"y" * 50_000 + b"\n" + GOOD + b"\n" + b"z" * 50_000
    summary = ref.summarize([write(tmp_path, data)], max_line_bytes=10_000)
    assert (summary["lines"], summary["records"], summary["malformed_reasons"]["too_long"]) == (4, 2, 2)


def test_line_of_max_bytes_plus_cr_spanning_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(ref, "CHUNK_BYTES", 7)
    summary = ref.summarize([write(tmp_path, GOOD + b"\r\n" + GOOD + b"\r")], max_line_bytes=len(GOOD))
    assert summary["records"] == 2


def naive_lines(data):
    """The contract's split, the obvious way: on "\\n", minus the empty piece after a final newline."""
    pieces = data.split(b"\n")
    return pieces[:-1] if pieces[-1] == b"" else pieces


@settings(max_examples=300, deadline=None)
@given(data=st.lists(st.sampled_from([b"\n", b"\r", b" ", b"\t", b"x", b"\xff", GOOD, b"y" * 9]), max_size=30),
       chunk=st.integers(1, 40), limit=st.integers(0, 40))
def test_chunked_reading_matches_whole_file_split(tmp_path_factory, data, chunk, limit):
    data = b"".join(data)
    path = tmp_path_factory.mktemp("h") / "f.txt"
    path.write_bytes(data)
    expected = [ref.classify(raw, limit) for raw in naive_lines(data)]
    ref.CHUNK_BYTES, saved = chunk, ref.CHUNK_BYTES
    try:
        got = [("malformed", "too_long") if raw is None else ref.classify(raw, limit)
               for raw in ref.iter_lines(path, limit)]
    finally:
        ref.CHUNK_BYTES = saved
    assert got == expected


# --- CLI and the shipped example ------------------------------------------------------------------

def test_cli_prints_json(tmp_path, capsys):
    assert ref.main([str(write(tmp_path, GOOD))]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["records"] == 1 and out["hours"]["12"] == 1


def test_example_expected_is_current():
    expected = json.loads((ROOT / "tests" / "data" / "example_expected.json").read_text())
    got = json.loads(json.dumps(ref.summarize([ROOT / "data" / "example_input.txt"]), sort_keys=True))
    assert got == expected


def test_example_covers_every_non_too_long_reason():
    summary = ref.summarize([ROOT / "data" / "example_input.txt"])
    assert all(n > 0 for r, n in summary["malformed_reasons"].items() if r != "too_long")
    assert summary["malformed_reasons"]["too_long"] == 0 and summary["blank"] > 0
