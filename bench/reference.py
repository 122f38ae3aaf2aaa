"""Plain-Python reference implementation of docs/line-contract.md: a test oracle and benchmark baseline."""

import json
import re
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone

DEFAULT_MAX_LINE_BYTES = 65536
CHUNK_BYTES = 1 << 20
REASONS = ("too_long", "missing_fields", "empty_field", "invalid_utf8", "bad_characters", "bad_timestamp")

# [0-9], not \d: Python's \d also matches non-ASCII digits such as "٣".
TIMESTAMP_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(Z|([+-])([0-9]{2}):([0-9]{2}))"
)


def parse_timestamp(text):
    """Return the UTC datetime for an accepted TIMESTAMP field, or None if it is not a real instant."""
    m = TIMESTAMP_RE.fullmatch(text)  # fullmatch: "$" would also accept a trailing "\n"
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    fraction, zone, sign, off_h, off_m = m.group(7, 8, 9, 10, 11)
    micro = int((fraction or "0").ljust(6, "0")[:6])  # kept to the microsecond, truncated
    try:
        # datetime() rejects year 0, Feb 30, hour 24+, minute/second 60+ (so the leap second too).
        local = datetime(year, month, day, hour, minute, second, micro)
    except ValueError:
        return None
    if zone == "Z":
        return local.replace(tzinfo=timezone.utc)
    if int(off_h) > 23 or int(off_m) > 59:
        return None
    offset = timedelta(hours=int(off_h), minutes=int(off_m))
    try:
        return local.replace(tzinfo=timezone(offset if sign == "+" else -offset)).astimezone(timezone.utc)
    except OverflowError:
        # e.g. 0001-01-01T00:00:00+01:00 is year 0 in UTC: outside 0001-9999 once normalised.
        return None


def has_bad_character(text):
    """True if text holds whitespace or a C0/DEL control character."""
    return any(ch.isspace() or ch < "\x20" or ch == "\x7f" for ch in text)


def classify(raw, max_line_bytes=DEFAULT_MAX_LINE_BYTES):
    """Classify one line's content (bytes, no "\\n") as blank, malformed (with reason) or record."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if len(raw) > max_line_bytes:
        return ("malformed", "too_long")
    text = raw.decode("utf-8", errors="replace")
    if text == "" or text.isspace():
        return ("blank", None)
    parts = text.split(" ", 4)
    if len(parts) < 4:
        return ("malformed", "missing_fields")
    fields = parts[:4]
    if any(f == "" for f in fields):
        return ("malformed", "empty_field")
    if any("\ufffd" in f for f in fields):
        return ("malformed", "invalid_utf8")
    if any(has_bad_character(f) for f in fields):
        return ("malformed", "bad_characters")
    ts = parse_timestamp(fields[0])
    if ts is None:
        return ("malformed", "bad_timestamp")
    message = parts[4] if len(parts) == 5 else ""
    return ("record", (ts, fields[1], fields[2], fields[3], message))


def iter_lines(path, max_line_bytes=DEFAULT_MAX_LINE_BYTES):
    """Yield each line's content without "\\n"; yield None for a line already known to be too long.

    Memory stays bounded: once a line's pending bytes exceed max_line_bytes + 1 (so it is too long
    even after dropping a final "\\r"), they are thrown away and the rest of the line is skipped.
    """
    pending = b""
    overflowed = False
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            pieces = chunk.split(b"\n")
            for piece in pieces[:-1]:
                yield None if overflowed else pending + piece
                pending, overflowed = b"", False
            if not overflowed:
                pending += pieces[-1]
                if len(pending) > max_line_bytes + 1:
                    pending, overflowed = b"", True
    if pending or overflowed:  # last line without a final "\n"
        yield None if overflowed else pending


def summarize(paths, max_line_bytes=DEFAULT_MAX_LINE_BYTES):
    """Count lines, records, blanks, malformed reasons, statuses, services, users and UTC hours."""
    kinds = Counter()
    reasons = Counter({reason: 0 for reason in REASONS})
    statuses, services, users = Counter(), Counter(), Counter()
    hours = Counter({hour: 0 for hour in range(24)})
    for path in paths:
        for raw in iter_lines(path, max_line_bytes):
            kind, value = ("malformed", "too_long") if raw is None else classify(raw, max_line_bytes)
            kinds[kind] += 1
            if kind == "malformed":
                reasons[value] += 1
            elif kind == "record":
                ts, status, service, user, _message = value
                statuses[status] += 1
                services[service] += 1
                users[user] += 1
                hours[ts.hour] += 1
    return {
        "lines": sum(kinds.values()),
        "records": kinds["record"],
        "blank": kinds["blank"],
        "malformed": kinds["malformed"],
        "malformed_reasons": dict(reasons),  # all six reasons, zeros included
        "statuses": dict(statuses),
        "services": dict(services),
        "users": dict(users),
        "hours": dict(hours),  # all 24 UTC hours, zeros included
    }


def main(argv=None):
    """CLI: print the summary of the given files as JSON."""
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python bench/reference.py FILE...", file=sys.stderr)
        return 2
    json.dump(summarize(paths), sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
