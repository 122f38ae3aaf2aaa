"""A second, independent traffic generator: heavy, skewed, strongly cyclic traffic, written with numpy.

    python bench/traffic.py --lines 10000000 --out heavy.log --seed 1             # no anomaly
    python bench/traffic.py --lines 1000000 --out heavy.log --seed 1 --plant      # planted anomalies

Profile "heavy" (the one a real payment platform throws at the detectors, without anything wrong):
users Zipf(1.1) over 200,000 people (the top one alone ~13% of all records), ~60 services with
Zipf-like weights, a daily cycle with ~6x more traffic at midday than at night and mild variation
from day to day, statuses in fixed proportions whatever the hour, and messages that are fixed texts
without ids, so identical lines (same second, user, service and message) happen by chance.

With --plant, the same traffic carries a spamming user, a failure spike, a silent service and four
duplicated lines, listed in `OUT.manifest.json` in the manifest format of bench/generate.py. A span
shorter than two days (--days 0.25 is fine) holds the two-day layout of the anomalies, compressed.
Everything is drawn from one seeded numpy Generator: the same arguments give the same bytes.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import numpy as np

UTC = timezone.utc

# Most popular first; weights fall off with the rank (SERVICE_ZIPF_S).
SERVICES = (
    "AuthenticationService", "PaymentService", "CheckoutService", "SessionService", "LedgerService",
    "NotificationService", "FraudDetectionService", "OrderService", "CartService", "WalletService",
    "RefundService", "BillingService", "InvoiceService", "SubscriptionService", "TokenizationService",
    "RiskScoringService", "CurrencyExchangeService", "GatewayService", "MerchantService", "PayoutService",
    "SettlementService", "TaxService", "UserProfileService", "LoyaltyService", "WebhookService",
    "KYCService", "ReconciliationService", "DisputeService", "ChargebackService", "ReportingService",
    "PricingService", "CatalogService", "InventoryService", "ShippingService", "AddressService",
    "EmailService", "SmsService", "PushService", "AuditService", "ConsentService",
    "ComplianceService", "SanctionsScreeningService", "AccountService", "CardIssuingService", "ClearingService",
    "TreasuryService", "FxQuoteService", "PromotionService", "CouponService", "GiftCardService",
    "DirectDebitService", "BankTransferService", "ApplePayService", "GooglePayService", "ThreeDSecureService",
    "VelocityService", "DeviceFingerprintService", "RateLimitService", "SchedulerService", "ExportService",
)
SERVICE_ZIPF_S = 0.9
SILENT_SHARE = (0.02, 0.04)  # the silent service is one of the mid-sized ones

STATUSES = ("SUCCESS", "INFO", "WARN", "FAILURE", "ERROR")
STATUS_P = (0.72, 0.17, 0.06, 0.035, 0.015)
FAILING = (3, 4)  # indexes of FAILURE and ERROR in STATUSES

# Fixed texts per status, most frequent first: no ids, so two events can print the same line.
MESSAGES = {
    "SUCCESS": ("User login successful", "Password verified", "Payment authorized", "Session refreshed",
                "Balance check completed", "Request completed"),
    "INFO": ("Session started", "User logged out", "Cache refreshed", "Request received", "Token issued"),
    "WARN": ("Response slow", "Retrying request", "Login from new device", "Rate limit approaching"),
    "FAILURE": ("Payment declined", "Login failed: invalid password", "Card verification failed",
                "Request rejected"),
    "ERROR": ("Upstream timeout", "Internal error", "Database connection lost"),
}
MESSAGE_ZIPF_S = 0.8

# Users: Zipf over a finite population, rank 0 the busiest; ids are a seeded shuffle of 6-digit numbers.
USER_ZIPF_S = 1.1
DAY_NIGHT = 6.0  # traffic at PEAK_HOUR over traffic 12 hours earlier (a raised cosine between them)
PEAK_HOUR = 12.5  # UTC: the hours 12-13 and 00-01 are the busiest and the quietest
DAY_JITTER = 0.1  # each day's level is 1 +- this, interpolated from noon to noon

# Planted anomalies (--plant).
SPAM_RECORDS = 500
SPAM_RANKS = (20_000, 100_000)  # a user with a record or two per million lines
SPAM_SERVICES = ("AuthenticationService", "PaymentService", "CheckoutService", "WalletService")
SPIKE_MINUTES = 15
SPIKE_FACTOR = 5.0
SILENCE_MINUTES = (60, 120)
SILENCE_START_HOURS = (8, 16)  # daytime: the service is busy before and after
DUPLICATES = 4
DUPLICATE_COPIES = (2, 3)
GAP_SECONDS = 2 * 3600  # between any two planted anomalies
DUPLICATE_LINES = (  # (status, service, message with an order id): each line is unique to its order
    ("SUCCESS", "PaymentService", "Payment of {amount} {currency} authorized for order ord-{order}"),
    ("SUCCESS", "RefundService", "Refund of {amount} {currency} issued for order ord-{order}"),
    ("INFO", "OrderService", "Order ord-{order} confirmed: {amount} {currency}"),
    ("SUCCESS", "LedgerService", "Ledger entry posted for order ord-{order}: {amount} {currency}"),
)
CURRENCIES = ("EUR", "USD", "GBP", "SEK", "JPY")

BLOCK_ROWS = 1 << 19  # rows assembled and written at a time (~70 MB of bytes and mask)


def zipf_weights(n: int, s: float) -> np.ndarray:
    """Probabilities proportional to rank**-s for ranks 1..n."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -s
    return w / w.sum()


def parse_instant(text: str) -> int:
    """An ISO timestamp as epoch seconds."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def iso(t: int) -> str:
    """Epoch seconds as a UTC ISO timestamp, the way the log writes it."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- tables: every field value as padded bytes, so rows are assembled by fancy indexing


def text_table(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, mask): each text as a row of a uint8 matrix padded to the longest, and which bytes count."""
    raw = [t.encode("utf-8") for t in texts]
    width = max(map(len, raw))
    table = np.zeros((len(raw), width), dtype=np.uint8)
    for i, b in enumerate(raw):
        table[i, :len(b)] = np.frombuffer(b, dtype=np.uint8)
    lengths = np.array([len(b) for b in raw])
    return table, np.arange(width) < lengths[:, None]


def second_table(start: int, seconds: int) -> np.ndarray:
    """`YYYY-MM-DDTHH:MM:SSZ` for every second of the span, one 20-byte row each."""
    stamps = np.datetime64(start, "s") + np.arange(seconds)
    text = np.char.add(np.datetime_as_string(stamps, unit="s"), "Z").astype("S20")
    return text.view(np.uint8).reshape(seconds, 20)


def user_table(rng: np.random.Generator, users: int) -> tuple[np.ndarray, np.ndarray]:
    """Names `userNNNNNN` for popularity ranks 0..users-1: as bytes rows, and their numbers."""
    digits = 6
    while 9 * 10 ** (digits - 1) < 2 * users:  # room to scatter the ids
        digits += 1
    ids = rng.choice(9 * 10 ** (digits - 1), size=users, replace=False) + 10 ** (digits - 1)
    powers = 10 ** np.arange(digits - 1, -1, -1)
    table = np.empty((users, 4 + digits), dtype=np.uint8)
    table[:, :4] = np.frombuffer(b"user", dtype=np.uint8)
    table[:, 4:] = (ids[:, None] // powers) % 10 + ord("0")
    return table, ids


def build_tables(rng: np.random.Generator, args: argparse.Namespace, start: int) -> SimpleNamespace:
    """Every lookup table the rows index into (messages may grow with the planted duplicates)."""
    heads = [f"{status} {service}" for status in STATUSES for service in SERVICES]
    users, ids = user_table(rng, args.users)
    return SimpleNamespace(
        seconds=second_table(start, span_seconds(args.days)), users=users, user_ids=ids, heads=text_table(heads),
        messages=[text for status in STATUSES for text in MESSAGES[status]],
        message_cums=[np.cumsum(zipf_weights(len(MESSAGES[s]), MESSAGE_ZIPF_S)) for s in STATUSES],
        message_offsets=np.cumsum([0] + [len(MESSAGES[s]) for s in STATUSES])[:-1],
        service_p=zipf_weights(len(SERVICES), SERVICE_ZIPF_S), user_p=zipf_weights(args.users, USER_ZIPF_S))


# ---- traffic: per-second volume, then one draw per field


def span_seconds(days: float) -> int:
    """The span's length in seconds."""
    return round(days * 86400)


def intensity(rng: np.random.Generator, start: int, days: float) -> np.ndarray:
    """Relative traffic per second: a raised cosine over the UTC hour, from 1 at night to DAY_NIGHT
    at PEAK_HOUR, times a level per day that drifts smoothly from one noon to the next."""
    t = np.arange(start, start + span_seconds(days), dtype=np.float64)
    hour = (t % 86400) / 3600
    cycle = 1 + (DAY_NIGHT - 1) * (1 - np.cos(2 * np.pi * (hour - PEAK_HOUR + 12) / 24)) / 2
    noons = np.arange(start - start % 86400 - 86400, start + span_seconds(days) + 86400, 86400) + 43200
    levels = 1 + DAY_JITTER * (2 * rng.random(len(noons)) - 1)
    return cycle * np.interp(t, noons, levels)


def draw_status_messages(rng: np.random.Generator, tables: SimpleNamespace, status: np.ndarray) -> np.ndarray:
    """A message code for each status, drawn from that status's own texts."""
    u = rng.random(len(status))
    message = np.empty(len(status), dtype=np.int32)
    for s in range(len(STATUSES)):
        rows = np.flatnonzero(status == s)
        local = np.searchsorted(tables.message_cums[s], u[rows], side="right")
        message[rows] = tables.message_offsets[s] + np.minimum(local, len(MESSAGES[STATUSES[s]]) - 1)
    return message


def draw_rows(rng: np.random.Generator, tables: SimpleNamespace, weights: np.ndarray, n: int,
              silence: tuple[int, int, int] | None) -> dict[str, np.ndarray]:
    """`n` records in time order: second index, status, service, user rank, message code.

    A silence (service, first second, stop second) takes the service's share off the volume of its
    window and draws the window's services without it: exactly what dropping its lines would leave.
    """
    if silence is not None:
        service, first, stop = silence
        weights = weights.copy()
        weights[first:stop] *= 1 - tables.service_p[service]
    second = np.repeat(np.arange(len(weights), dtype=np.int32), rng.multinomial(n, weights / weights.sum()))
    status = rng.choice(len(STATUSES), size=n, p=STATUS_P).astype(np.int8)
    service = rng.choice(len(SERVICES), size=n, p=tables.service_p).astype(np.int16)
    if silence is not None:
        quiet = np.flatnonzero((second >= first) & (second < stop))
        others = tables.service_p.copy()
        others[silence[0]] = 0
        service[quiet] = rng.choice(len(SERVICES), size=len(quiet), p=others / others.sum())
    user = np.searchsorted(np.cumsum(tables.user_p), rng.random(n), side="right")
    user = np.minimum(user, len(tables.user_p) - 1).astype(np.int32)
    return {"second": second, "status": status, "service": service, "user": user,
            "message": draw_status_messages(rng, tables, status)}


# ---- planted anomalies


def plan_windows(rng: np.random.Generator, days: float, lengths: list[int], daytime: list[bool]) -> list[int]:
    """Start seconds (from the span's start) for anomalies of the given lengths: all after the first
    day, GAP_SECONDS apart; whole minutes unless one second long; `daytime` ones start between
    SILENCE_START_HOURS. Rejection sampling."""
    for _ in range(10_000):
        starts = []
        for length, day in zip(lengths, daytime):
            step = 1 if length == 1 else 60
            if day:
                first = int(rng.integers(1, int(days))) * 86400 + SILENCE_START_HOURS[0] * 3600
                stop = first + (SILENCE_START_HOURS[1] - SILENCE_START_HOURS[0]) * 3600
            else:
                first, stop = 86400, span_seconds(days) - length
            starts.append(first + step * int(rng.integers(0, (stop - first) // step)))
        spans = sorted((s, s + length) for s, length in zip(starts, lengths))
        if all(b[0] - a[1] >= GAP_SECONDS for a, b in zip(spans, spans[1:])):
            return starts
    raise SystemExit("could not place the planted anomalies GAP_SECONDS apart; use more --days")


def spike(rng: np.random.Generator, tables: SimpleNamespace, rows: dict[str, np.ndarray],
          first: int, stop: int) -> dict[str, int]:
    """Turn lines of [first, stop) into FAILURE/ERROR until the failure rate is SPIKE_FACTOR x normal."""
    inside = np.flatnonzero((rows["second"] >= first) & (rows["second"] < stop))
    normal = sum(STATUS_P[s] for s in FAILING)
    flip = inside[rng.random(len(inside)) < (SPIKE_FACTOR - 1) * normal / (1 - normal)]
    flip = flip[~np.isin(rows["status"][flip], FAILING)]
    before = int(np.isin(rows["status"][inside], FAILING).sum())
    share = STATUS_P[FAILING[0]] / normal
    rows["status"][flip] = np.where(rng.random(len(flip)) < share, *FAILING)
    rows["message"][flip] = draw_status_messages(rng, tables, rows["status"][flip])
    return {"records": len(inside), "failure_error_before": before, "failure_error_planted": before + len(flip)}


def spam_rows(rng: np.random.Generator, tables: SimpleNamespace, user: int, first: int,
              seconds: int) -> dict[str, np.ndarray]:
    """SPAM_RECORDS ordinary-looking events of one user within the `seconds` from `first`."""
    status = rng.choice(len(STATUSES), size=SPAM_RECORDS, p=STATUS_P).astype(np.int8)
    services = np.array([SERVICES.index(s) for s in SPAM_SERVICES], dtype=np.int16)
    return {"second": np.sort(first + rng.integers(0, seconds, SPAM_RECORDS)).astype(np.int32), "status": status,
            "service": rng.choice(services, size=SPAM_RECORDS), "user": np.full(SPAM_RECORDS, user, np.int32),
            "message": draw_status_messages(rng, tables, status)}


def duplicate_rows(rng: np.random.Generator, tables: SimpleNamespace, second: int, template: tuple[str, str, str],
                   copies: int) -> dict[str, np.ndarray]:
    """`copies` identical rows of a new message with an order id in it (added to the message table)."""
    status, service, text = template
    amount = f"{rng.integers(100, 60000) / 100:.2f}"
    message = text.format(amount=amount, currency=CURRENCIES[int(rng.integers(len(CURRENCIES)))],
                          order=f"{int(rng.integers(1 << 24)):06x}")
    tables.messages.append(message)
    user = int(np.searchsorted(np.cumsum(tables.user_p), rng.random()))
    one = {"second": second, "status": STATUSES.index(status), "service": SERVICES.index(service), "user": user,
           "message": len(tables.messages) - 1}
    return {k: np.full(copies, v, dtype=np.int32) for k, v in one.items()}


def insert_rows(rng: np.random.Generator, rows: dict[str, np.ndarray], extras: list[dict[str, np.ndarray]],
                near: list[bool]) -> dict[str, np.ndarray]:
    """Insert each group of extra rows among the rows of their own second (time order holds).

    A `near` group lands as a cluster: its rows adjacent or at most a few lines apart.
    """
    positions, pieces = [], []
    for group, clustered in zip(extras, near):
        lo = np.searchsorted(rows["second"], group["second"], side="left")
        hi = np.searchsorted(rows["second"], group["second"], side="right")
        if clustered:
            gaps = rng.integers(0, 4, len(lo))  # original lines between one copy and the next
            gaps[0] = 0
            pos = np.minimum(lo[0] + int(rng.integers(0, hi[0] - lo[0] + 1)) + np.cumsum(gaps), hi[0])
        else:
            pos = lo + (rng.random(len(lo)) * (hi - lo + 1)).astype(np.int64)
        positions.append(pos)
        pieces.append(group)
    pos = np.concatenate(positions)
    order = np.argsort(pos, kind="stable")
    return {k: np.insert(v, pos[order], np.concatenate([p[k] for p in pieces])[order].astype(v.dtype))
            for k, v in rows.items()}


def plant(rng: np.random.Generator, tables: SimpleNamespace, args: argparse.Namespace, start: int,
          weights: np.ndarray) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Heavy traffic with every planted anomaly in it; return (rows, manifest entries)."""
    copies = [int(rng.integers(DUPLICATE_COPIES[0], DUPLICATE_COPIES[1] + 1)) for _ in range(DUPLICATES)]
    silence_len = 60 * int(rng.integers(SILENCE_MINUTES[0], SILENCE_MINUTES[1] + 1))
    lengths = [60, SPIKE_MINUTES * 60, silence_len] + [1] * DUPLICATES
    starts = plan_windows(rng, max(2, args.days), lengths, [False, False, True] + [False] * DUPLICATES)
    squeeze = min(1.0, args.days / 2)  # under two days, the span holds the two-day layout, compressed
    spam_at, spike_at, quiet_at, *dup_at = (int(first * squeeze) for first in starts)
    spam_len, spike_len, silence_len = (max(1, int(length * squeeze)) for length in lengths[:3])
    mid = np.flatnonzero((tables.service_p >= SILENT_SHARE[0]) & (tables.service_p <= SILENT_SHARE[1]))
    quiet_service = int(rng.choice(mid))
    silence = (quiet_service, quiet_at, quiet_at + silence_len)
    base = args.lines - SPAM_RECORDS - sum(copies)
    if base < args.lines // 2:
        raise SystemExit("too few --lines for the planted anomalies; raise --lines or leave out --plant")
    rows = draw_rows(rng, tables, weights, base, silence)
    entries = []

    def entry(kind: str, key: str, first: int, stop: int, **counts: Any) -> None:
        entries.append({"kind": kind, "key": key, "start": iso(start + first), "end": iso(start + stop),
                        "counts": counts})

    entry("failure_spike", "all", spike_at, spike_at + spike_len,
          **spike(rng, tables, rows, spike_at, spike_at + spike_len))
    window = weights[quiet_at:quiet_at + silence_len].sum() / weights.sum()
    entry("silent_service", SERVICES[quiet_service], quiet_at, quiet_at + silence_len, records=0,
          expected_records=round(float(base * window * tables.service_p[quiet_service]), 1),
          share_of_traffic=round(float(tables.service_p[quiet_service]), 4))
    spam_user = int(rng.integers(*SPAM_RANKS))
    entry("spamming_user", f"user{tables.user_ids[spam_user]}", spam_at, spam_at + spam_len, records=SPAM_RECORDS,
          popularity_rank=spam_user + 1)
    duplicates = [duplicate_rows(rng, tables, at, t, n) for at, t, n in zip(dup_at, DUPLICATE_LINES, copies)]
    for at, group, n in zip(dup_at, duplicates, copies):
        entry("duplicate_event", line_text(tables, group, 0), at, at, occurrences=n)
    extras = [spam_rows(rng, tables, spam_user, spam_at, spam_len), *duplicates]
    return insert_rows(rng, rows, extras, [False] + [True] * len(duplicates)), entries


# ---- writing


def line_text(tables: SimpleNamespace, rows: dict[str, np.ndarray], i: int) -> str:
    """One row as its log line (the slow path, for the manifest)."""
    head = f"{STATUSES[rows['status'][i]]} {SERVICES[rows['service'][i]]}"
    stamp = tables.seconds[rows["second"][i]].tobytes().decode()
    return f"{stamp} {head} {tables.users[rows['user'][i]].tobytes().decode()} {tables.messages[rows['message'][i]]}"


def assemble(tables: SimpleNamespace, messages: tuple[np.ndarray, np.ndarray], rows: dict[str, np.ndarray],
             bad: np.ndarray) -> bytes:
    """The bytes of some rows: every field gathered into a padded matrix, then the padding dropped."""
    messages, message_mask = messages
    heads, head_mask = tables.heads
    head = rows["status"].astype(np.int32) * len(SERVICES) + rows["service"]
    message = rows["message"]
    parts = [(tables.seconds[rows["second"]], None), (b" ", None), (heads[head], head_mask[head]), (b" ", None),
             (tables.users[rows["user"]], None), (b" ", None), (messages[message], message_mask[message]),
             (b"\n", None)]
    n = len(head)
    widths = [len(p) if isinstance(p, bytes) else p.shape[1] for p, _ in parts]
    matrix = np.empty((n, sum(widths)), dtype=np.uint8)
    mask = np.ones((n, sum(widths)), dtype=bool)
    col = 0
    for (part, part_mask), width in zip(parts, widths):
        matrix[:, col:col + width] = np.frombuffer(part, np.uint8) if isinstance(part, bytes) else part
        if part_mask is not None:
            mask[:, col:col + width] = part_mask
        col += width
    matrix[bad, 11:13] = np.frombuffer(b"25", np.uint8)  # hour 25: a malformed timestamp
    return matrix[mask].tobytes()


def write_log(rng: np.random.Generator, tables: SimpleNamespace, rows: dict[str, np.ndarray], path: str,
              bad_rate: float) -> int:
    """Write the rows in blocks; return how many got a malformed timestamp."""
    n = len(rows["second"])
    bad = rng.random(n) < bad_rate if bad_rate > 0 else np.zeros(n, dtype=bool)
    messages = text_table(tables.messages)  # complete now: the planted duplicates added theirs
    with open(path, "wb") as out:
        for first in range(0, n, BLOCK_ROWS):
            block = {k: v[first:first + BLOCK_ROWS] for k, v in rows.items()}
            out.write(assemble(tables, messages, block, bad[first:first + BLOCK_ROWS]))
    return int(bad.sum())


def generate(args: argparse.Namespace) -> dict[str, Any]:
    """Write the log file and return its manifest."""
    rng = np.random.default_rng(args.seed)
    start = parse_instant(args.start)
    tables = build_tables(rng, args, start)
    weights = intensity(rng, start, args.days)
    if args.plant:
        rows, entries = plant(rng, tables, args, start, weights)
    else:
        rows, entries = draw_rows(rng, tables, weights, args.lines, None), []
    malformed = write_log(rng, tables, rows, args.out, args.bad_rate)
    top = np.bincount(rows["user"], minlength=1).max()
    return {
        "generator": "bench/traffic.py", "profile": args.profile, "args": vars(args), "lines": len(rows["second"]),
        "span": {"start": iso(start), "end": iso(start + span_seconds(args.days))},
        "distinct_users_population": args.users, "services": len(SERVICES),
        "top_user_share": round(float(top) / len(rows["user"]), 4), "malformed_lines": malformed,
        "anomalies": sorted(entries, key=lambda e: (e["start"], e["kind"])),
    }


def span_days(text: str) -> float:
    """--days: a whole number stays an int (as it always was), a fraction of a day is a float."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of days, found {text!r}")
    return int(value) if value.is_integer() else value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lines", type=int, required=True, help="total number of lines to write")
    p.add_argument("--out", required=True, help="output log file")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--days", type=span_days, default=3,
                   help="length of the time span in days (a fraction is fine: 0.25 is 6 hours)")
    p.add_argument("--start", default="2025-07-21T00:00:00Z", help="UTC start of the span (midnight: whole days)")
    p.add_argument("--profile", choices=("heavy",), default="heavy", help="shape of the traffic")
    p.add_argument("--users", type=int, default=200_000, help="size of the user population")
    p.add_argument("--plant", action="store_true",
                   help="plant anomalies (default: none) in days 2 and later (in the second half of a shorter span)")
    p.add_argument("--bad-rate", type=float, default=0.0, help="fraction of lines with a malformed timestamp")
    p.add_argument("--manifest", help="manifest JSON path (default: OUT.manifest.json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    args = parse_args(argv)
    manifest = generate(args)
    with open(args.manifest or args.out + ".manifest.json", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
