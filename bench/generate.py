"""Deterministic generator of realistic payment-service log traffic with bad lines and planted anomalies."""

import argparse
import json
import math
import random
import sys
from bisect import bisect_right
from datetime import datetime, timezone
from itertools import accumulate, pairwise
from types import SimpleNamespace

UTC = timezone.utc

# Most popular first; weights fall off Zipf-like with the rank.
SERVICES = (
    "AuthenticationService", "PaymentService", "CheckoutService", "SessionService", "NotificationService",
    "FraudDetectionService", "OrderService", "CartService", "WalletService", "RefundService",
    "BillingService", "InvoiceService", "SubscriptionService", "TokenizationService", "RiskScoringService",
    "CurrencyExchangeService", "LedgerService", "GatewayService", "MerchantService", "PayoutService",
    "SettlementService", "TaxService", "UserProfileService", "LoyaltyService", "WebhookService",
    "KYCService", "ReconciliationService", "DisputeService", "ChargebackService", "ReportingService",
)
SERVICE_ZIPF_S = 0.8
SILENT_SERVICE = "NotificationService"  # rank 5: ~3.5% of traffic, steady enough for its silence to show
STATUS_WEIGHTS = (("SUCCESS", 0.72), ("INFO", 0.17), ("WARN", 0.06), ("FAILURE", 0.035), ("ERROR", 0.015))
FAILURE_SHARE = 0.05  # FAILURE + ERROR
MESSAGES_PER_EVENT = 48  # concrete messages pre-rendered per (status, service)

# Users: a uniform tail of one-off users plus Zipf-Mandelbrot (s=1, offset Q) over the rest, sampled by
# inverting the continuous CDF so that even 20M distinct users need no tables.
USER_TAIL = 0.15
USER_ZIPF_Q = 10.0
USER_ID_BASE = 10000

# Timestamp variants of clean lines (cumulative thresholds on one random draw).
TS_PLAIN, TS_FRACTION, TS_OFFSET = 0.91, 0.955, 0.985  # above TS_OFFSET: offset and fraction
OFFSETS = ((120, "+02:00"), (330, "+05:30"), (-240, "-04:00"), (-420, "-07:00"), (540, "+09:00"),
           (60, "+01:00"), (-180, "-03:00"), (0, "+00:00"), (600, "+10:00"), (-300, "-05:00"))
FRACTION_DIGITS = (3, 3, 3, 3, 6, 6, 9, 1, 2)
TWO_DIGITS = tuple(f"{i:02d}" for i in range(60))

# Options added after manifests were first written, with their defaults (see given()).
LATER_OPTIONS = {"seen_users": None, "user_tail": USER_TAIL, "message_bytes": 0}

BLOCK_CHARS = 4 << 20
LONG_LINE_BYTES = 70_000

MERCHANTS = ("Acme Books", "Blue Bottle Coffee", "Café Lumière", "Müller GmbH", "Björk Design",
             "Nordic Outdoor", "Señor Taco", "Tokyo Gadgets", "Żabka Market", "Crème & Co", "Pixel Games",
             "Green Grocer", "Øresund Ferries", "Helsinki Saunas", "São Paulo Sports")
CURRENCIES = ("USD", "USD", "USD", "EUR", "EUR", "GBP", "JPY", "CAD", "SEK", "BRL")

MESSAGES = {
    "AuthenticationService": {
        "SUCCESS": ["User login successful", "Login successful via {method}", "Password verified",
                    "MFA challenge passed via {channel}", "Session token issued, expires in {mins} min"],
        "INFO": ["Login attempt from new device: {device}", "User logged out", "MFA code sent via {channel}",
                 "Password reset email requested"],
        "WARN": ["Login from unusual location: {country}", "Password attempt {n} of 5 failed",
                 "Login latency high: {ms} ms"],
        "FAILURE": ["Login failed: invalid password", "Login failed: account locked after 5 attempts",
                    "MFA code rejected", "Login failed: unknown user"],
        "ERROR": ["Identity provider timeout after {ms} ms", "Token signing key unavailable",
                  "Unhandled exception in login handler: {exc}"],
    },
    "PaymentService": {
        "SUCCESS": ["Payment of {amount} {cur} authorized for order {order}",
                    "Payment captured: {amount} {cur} at {merchant} ({brand} ****{card})",
                    "Payment {txn} settled in {ms} ms"],
        "INFO": ["Payment intent created for order {order}: {amount} {cur}",
                 "3-D Secure challenge started for {brand} ****{card}", "Payment {txn} queued for capture"],
        "WARN": ["Payment retry {n} for order {order}", "Acquirer response slow: {ms} ms",
                 "Currency mismatch corrected for order {order}"],
        "FAILURE": ["Payment declined: {reason} ({brand} ****{card})",
                    "Payment of {amount} {cur} declined for order {order}: {reason}",
                    "3-D Secure authentication failed for order {order}"],
        "ERROR": ["Acquirer {upstream} returned HTTP {code}", "Payment {txn} failed: {exc}",
                  "Timeout contacting acquirer after {ms} ms"],
    },
    "RefundService": {
        "SUCCESS": ["Refund of {amount} {cur} issued for order {order}", "Refund {txn} completed in {ms} ms"],
        "INFO": ["Refund requested for order {order}: {amount} {cur}", "Partial refund queued for order {order}"],
        "WARN": ["Refund for order {order} exceeds 30-day window", "Refund retry {n} for {txn}"],
        "FAILURE": ["Refund rejected for order {order}: original payment not captured",
                    "Refund of {amount} {cur} rejected: {reason}"],
        "ERROR": ["Refund {txn} failed: {exc}", "Ledger write failed for refund {txn}"],
    },
}
GENERIC_MESSAGES = {
    "SUCCESS": ["{op} completed in {ms} ms", "{op} succeeded for {ref}", "{op} completed for order {order}"],
    "INFO": ["{op} started for {ref}", "{op} scheduled", "Processing {op_lc} for {ref}", "Cache refreshed"],
    "WARN": ["{op} slow: {ms} ms", "Retrying {op_lc} for {ref} (attempt {n})", "Queue depth high: {depth}"],
    "FAILURE": ["{op} rejected for {ref}: {reason}", "{op} failed validation for order {order}"],
    "ERROR": ["{op} failed: upstream {upstream} returned HTTP {code}", "Unhandled exception in {op_lc}: {exc}"],
}
SERVICE_OPS = {
    "CheckoutService": ("Checkout", "Basket validation"), "SessionService": ("Session refresh", "Session cleanup"),
    "NotificationService": ("Receipt email", "Push notification", "SMS delivery"),
    "FraudDetectionService": ("Fraud screening", "Velocity check"), "OrderService": ("Order creation", "Order update"),
    "CartService": ("Cart update", "Cart merge"), "WalletService": ("Wallet top-up", "Balance check"),
    "BillingService": ("Billing run", "Payment method update"),
    "InvoiceService": ("Invoice generation", "Invoice email"),
    "SubscriptionService": ("Subscription renewal", "Plan change"), "TokenizationService": ("Card tokenization",),
    "RiskScoringService": ("Risk scoring",), "CurrencyExchangeService": ("FX rate lookup", "Currency conversion"),
    "LedgerService": ("Ledger posting", "Balance snapshot"), "GatewayService": ("Gateway routing", "Acquirer call"),
    "MerchantService": ("Merchant onboarding", "Merchant lookup"), "PayoutService": ("Payout", "Payout batch"),
    "SettlementService": ("Settlement batch", "Settlement file import"), "TaxService": ("Tax calculation",),
    "UserProfileService": ("Profile update", "Address validation"),
    "LoyaltyService": ("Points accrual", "Reward redemption"),
    "WebhookService": ("Webhook delivery",), "KYCService": ("Identity verification", "Document check"),
    "ReconciliationService": ("Reconciliation run",), "DisputeService": ("Dispute update", "Evidence upload"),
    "ChargebackService": ("Chargeback import",), "ReportingService": ("Report export", "Daily report build"),
}


def message_values(rng, service):
    """Random values for the placeholders of one message template."""
    op = rng.choice(SERVICE_OPS.get(service, ("Request",)))
    amount = rng.choice((rng.uniform(1, 60), rng.uniform(60, 600), rng.uniform(600, 6000)))
    return {
        "amount": f"{amount:.2f}", "cur": rng.choice(CURRENCIES), "order": f"ORD-{rng.randrange(10**7, 10**8)}",
        "txn": f"txn_{rng.getrandbits(48):012x}", "ms": rng.choice((rng.randint(12, 400), rng.randint(900, 30000))),
        "card": f"{rng.randrange(10000):04d}", "brand": rng.choice(("Visa", "Mastercard", "Amex", "Discover")),
        "merchant": rng.choice(MERCHANTS), "n": rng.randint(2, 4), "mins": rng.choice((15, 30, 60, 720)),
        "method": rng.choice(("password", "passkey", "Google SSO", "Apple ID")),
        "channel": rng.choice(("SMS", "email", "authenticator app")),
        "device": rng.choice(("iPhone 15", "Pixel 8", "Chrome on Windows", "Safari on macOS", "Firefox on Linux")),
        "country": rng.choice(("BR", "NG", "VN", "RU", "RO", "ID", "UA")),
        "reason": rng.choice(("insufficient funds", "card expired", "do not honor", "suspected fraud",
                              "invalid CVV", "limit exceeded")),
        "upstream": rng.choice(("acquirer-eu-1", "acquirer-us-2", "ledger-db", "redis-cache", "fx-provider")),
        "code": rng.choice((500, 502, 503, 504)),
        "exc": rng.choice(("TimeoutError: read timed out", "ConnectionResetError: [Errno 104]",
                           "KeyError: 'currency'", "ValueError: amount must be positive")),
        "op": op, "op_lc": op.lower(), "ref": f"REF-{rng.randrange(10**6, 10**7)}", "depth": rng.randint(500, 9000),
    }


def build_events(rng, exclude=None, pad=None):
    """Return (events, cum_weights): every (\"STATUS SERVICE\", message) pair with its probability.

    `pad`, if given, lengthens each message (see message_padder).
    """
    events, weights = [], []
    for rank, service in enumerate(SERVICES, 1):
        if service == exclude:
            continue
        templates = MESSAGES.get(service, GENERIC_MESSAGES)
        for status, status_weight in STATUS_WEIGHTS:
            weight = status_weight / rank**SERVICE_ZIPF_S / MESSAGES_PER_EVENT
            for _ in range(MESSAGES_PER_EVENT):
                message = rng.choice(templates[status]).format(**message_values(rng, service))
                events.append((f"{status} {service}", pad(message) if pad else message))
                weights.append(weight)
    return events, list(accumulate(weights))


def request_context(rng):
    """Request metadata as key=value pairs, the way services append it to a message."""
    path = rng.choice(("/v1/payments", "/v1/refunds", "/v2/checkout/sessions", "/v1/customers", "/v1/payouts"))
    return [
        f"request_id=req_{rng.getrandbits(48):012x}", f"trace_id={rng.getrandbits(128):032x}",
        f"span_id={rng.getrandbits(64):016x}", f"region={rng.choice(('eu-west-1', 'us-east-1', 'ap-south-1'))}",
        f"client_ip=203.0.{rng.randrange(256)}.{rng.randrange(256)}", f"http={rng.choice(('GET', 'POST'))} {path}",
        f"status_code={rng.choice((200, 200, 201, 400, 402, 502))}", f"latency_ms={rng.randint(3, 2500)}",
        f"attempt={rng.randint(1, 3)}", f"pod=payments-{rng.getrandbits(24):06x}",
        'user_agent="' + rng.choice(("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15",
                                     "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0 Safari/537.36",
                                     "okhttp/4.12.0", "python-requests/2.32.3")) + '"',
    ]


def message_padder(seed, mean_bytes):
    """A function that lengthens a message with request context to `mean_bytes` on average.

    It draws from its own random stream, so the traffic (who, when, which event) stays that of the
    same seed without it; only the messages grow.
    """
    rng = random.Random(f"{seed}-message-bytes")

    def pad(message):
        target = int(mean_bytes * (0.5 + rng.random()))
        context = message
        while len(context) < target:
            context += " | " + " ".join(request_context(rng))
        return context[:max(target, len(message))].rstrip()

    return pad


def service_share(service):
    """Fraction of clean traffic that goes to one service."""
    total = sum(1 / r**SERVICE_ZIPF_S for r in range(1, len(SERVICES) + 1))
    return 1 / (SERVICES.index(service) + 1) ** SERVICE_ZIPF_S / total


def user_sampler(k, tail=USER_TAIL):
    """Return constants (tail, tail_scale, a, b, inv, mult, shift) for drawing user ids over a population of k."""
    mult = int(k * 0.618034) | 1  # golden-ratio stride: popular ranks land on unrelated-looking ids
    while math.gcd(mult, k) != 1:  # the rank -> id scramble must be a bijection modulo k
        mult += 2
    a = 1 + USER_ZIPF_Q
    return tail, k / tail, a, (k + USER_ZIPF_Q) / a, 1 / (1 - tail), mult, k // 3


def user_id(idx, k, sampler):
    """The user name for a popularity rank (0 = most active)."""
    return f"user{(idx * sampler[5] + sampler[6]) % k + USER_ID_BASE}"


def draw_user(rand, k, sampler):
    """One user name; the slow path, used for anomaly lines (the hot loop inlines it)."""
    tail, tail_scale, a, b, inv, _, _ = sampler
    u = rand()
    idx = int(u * tail_scale) if u < tail else int(a * b ** ((u - tail) * inv) - USER_ZIPF_Q) - 1
    return user_id(idx, k, sampler)


def expected_seen(k, draws, tail):
    """Expected distinct users among `draws` draws of draw_user from a population of k."""
    zipf = (1 - tail) / math.log((k + USER_ZIPF_Q) / (1 + USER_ZIPF_Q))

    def seen(rank):  # the chance that a rank is drawn at least once
        return -math.expm1(-draws * (tail / k + zipf * math.log1p(1 / (rank + 1 + USER_ZIPF_Q))))

    exact = min(k, 1000)
    total = math.fsum(seen(rank) for rank in range(exact))
    if k > exact:  # smooth beyond the first ranks: a trapezoid sum on a geometric grid
        xs = [exact * (k / exact) ** (j / 2000) for j in range(2001)]
        total += math.fsum((seen(x0) + seen(x1)) / 2 * (x1 - x0) for x0, x1 in pairwise(xs))
    return total


def population_for(seen, draws, tail):
    """The population size at which `draws` user draws see about `seen` distinct users."""
    low, high = seen, 10**12
    if seen >= draws or expected_seen(high, draws, tail) < seen:
        sys.exit(f"{seen:,} distinct users are out of reach in {draws:,} lines; lower --seen-users "
                 "or raise --user-tail")
    while high > low * 1.0001 + 1:
        middle = int((low * high) ** 0.5)
        low, high = (middle, high) if expected_seen(middle, draws, tail) < seen else (low, middle)
    return high


def iso(t):
    """Epoch seconds as a UTC ISO timestamp string."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def minute_prefix(cache, epoch_minute):
    """\"YYYY-MM-DDTHH:MM:\" for an epoch minute, cached because each minute is reused many times."""
    prefix = cache.get(epoch_minute)
    if prefix is None:
        prefix = cache[epoch_minute] = datetime.fromtimestamp(epoch_minute * 60, UTC).strftime("%Y-%m-%dT%H:%M:")
    return prefix


def fancy_timestamp(g, t, x):
    """A valid timestamp for epoch second t with a fraction and/or a UTC offset (x picks which)."""
    rand = g.rng.random
    fraction = ""
    if x < TS_FRACTION or x >= TS_OFFSET:
        digits = FRACTION_DIGITS[int(rand() * len(FRACTION_DIGITS))]
        fraction = f".{int(rand() * 10**digits):0{digits}d}"
    if x < TS_FRACTION:
        return minute_prefix(g.prefixes, t // 60) + TWO_DIGITS[t % 60] + fraction + "Z"
    minutes, text = OFFSETS[int(rand() * len(OFFSETS))]
    local = t + minutes * 60
    return minute_prefix(g.prefixes, local // 60) + TWO_DIGITS[local % 60] + fraction + text


def free_rank(taken, t, idx, k):
    """The next user rank after idx with no event yet in second t (idx itself if every rank is taken)."""
    for step in range(1, k):
        if t * k + (idx + step) % k not in taken:
            return (idx + step) % k
    return idx


def clean_lines(g, minute, count):
    """Generate `count` clean record lines for one minute; return (lines, epoch seconds)."""
    rng, k = g.rng, g.users
    rand = rng.random
    tail, tail_scale, a, b, inv, mult, shift = g.sampler
    silent = g.silence[0] <= minute < g.silence[1]
    events, cum = (g.quiet_events, g.quiet_cum) if silent else (g.events, g.cum)
    base = g.start + minute * 60
    seconds = sorted([base + int(rand() * 60) for _ in range(count)])
    for _ in range(count // 16):  # small jitter: a few lines step a second out of order
        i = int(rand() * count)
        seconds[i] = min(base + 59, max(base, seconds[i] + (1 if rand() < 0.5 else -1)))
    prefix = minute_prefix(g.prefixes, base // 60)
    lines = []
    append = lines.append
    taken = set()  # (second, user) pairs: no user gets two events in one second, so no accidental duplicates
    for (head, message), t in zip(rng.choices(events, cum_weights=cum, k=count), seconds):
        x = rand()
        ts = prefix + TWO_DIGITS[t - base] + "Z" if x < TS_PLAIN else fancy_timestamp(g, t, x)
        u = rand()
        idx = int(u * tail_scale) if u < tail else int(a * b ** ((u - tail) * inv) - USER_ZIPF_Q) - 1
        if t * k + idx in taken:
            idx = free_rank(taken, t, idx, k)
        taken.add(t * k + idx)
        append(f"{ts} {head} user{(idx * mult + shift) % k + USER_ID_BASE} {message}")
    return lines, seconds


def raw(data):
    """Bytes as a str that encodes back to exactly those bytes (utf-8 + surrogateescape)."""
    return data.decode("utf-8", "surrogateescape")


def utc_text(t, fmt):
    """strftime of epoch second t in UTC."""
    return datetime.fromtimestamp(t, UTC).strftime(fmt)


def bad_ts(fmt):
    """An oddity that swaps the line's timestamp for strftime(fmt) of the same instant."""
    return lambda r, t, p: " ".join([utc_text(t, fmt)] + p[1:])


MARKDOWN = ("# Daily report", "## Settlement summary", "- note: gateway maintenance 02:00-02:30 UTC",
            "* retry queue drained", "---", "| service | failures |", "```", "> forwarded from the on-call channel")
PROSE = ("The nightly reconciliation job finished without errors.", "Deploying payment-gateway v2.14.1 to production",
         "See ticket PAY-4821 for details", "Log rotated")
JUNK_BYTES = b"\x00\x01\x7f\x80\x9f\xc3\xe2\xff\xfeAZ09 "
LATIN1_USER = raw(b"jos\xe9")  # "josé" written in Latin-1: invalid UTF-8
TRUNCATED_UTF8 = raw(b"\xe2\x82")  # the first two bytes of "€"
BAD_UTF8_MESSAGE = " Merchant: Caf" + raw(b"\xe9 Paris \xff\xfe")

# Each oddity turns a clean line (its epoch second t and its five parts p) into a bad or unusual line.
# The weights set how many of each kind one shuffled "deck" holds; every kind appears once per deck.
ODDITIES = {
    "blank_empty": (5, lambda r, t, p: ""),
    "blank_spaces": (2, lambda r, t, p: r.choice(("   ", " \t ", "\t", " "))),
    "blank_crlf": (2, lambda r, t, p: "\r"),
    "blank_unicode_spaces": (1, lambda r, t, p: "\u00a0\u2003 "),
    "markdown": (3, lambda r, t, p: r.choice(MARKDOWN)),
    "prose": (2, lambda r, t, p: r.choice(PROSE)),
    "missing_fields": (2, lambda r, t, p: " ".join(p[: r.choice((1, 2, 3))])),
    "double_space": (2, lambda r, t, p: f"{p[0]} {p[1]} {p[2]}  {p[3]} {p[4]}"),
    "leading_space": (1, lambda r, t, p: " " + " ".join(p)),
    "tab_in_field": (2, lambda r, t, p: f"{p[0]} {p[1]} {p[2]}\t{p[3]} {p[4]}"),
    "tab_separated": (1, lambda r, t, p: "\t".join(p)),
    "nul_in_field": (1, lambda r, t, p: f"{p[0]} {p[1]} {p[2]} {p[3]}\x00 {p[4]}"),
    "ansi_escape_in_status": (1, lambda r, t, p: f"{p[0]} \x1b[31m{p[1]}\x1b[0m {p[2]} {p[3]} {p[4]}"),
    "nbsp_in_field": (1, lambda r, t, p: f"{p[0]} {p[1]} {p[2][:-7]}\u00a0Service {p[3]} {p[4]}"),
    "cr_in_field": (1, lambda r, t, p: f"{p[0]} {p[1]} {p[2]} {p[3]}\r {p[4]}"),
    "binary_junk": (1, lambda r, t, p: raw(bytes(r.choice(JUNK_BYTES) for _ in range(24)))),
    "nul_run": (1, lambda r, t, p: "\x00" * r.randint(4, 64)),
    "invalid_utf8_user": (2, lambda r, t, p: f"{p[0]} {p[1]} {p[2]} {LATIN1_USER} {p[4]}"),
    "invalid_utf8_service": (1, lambda r, t, p: f"{p[0]} {p[1]} {p[2]}{TRUNCATED_UTF8} {p[3]} {p[4]}"),
    "ts_hour_25": (1, bad_ts("%Y-%m-%dT25:%M:%SZ")),
    "ts_feb_30": (1, bad_ts("%Y-02-30T%H:%M:%SZ")),
    "ts_no_zone": (1, bad_ts("%Y-%m-%dT%H:%M:%S")),
    "ts_leap_second": (1, bad_ts("%Y-%m-%dT%H:%M:60Z")),
    "ts_minute_99": (1, bad_ts("%Y-%m-%dT%H:99:%SZ")),
    "ts_date_space_time": (1, bad_ts("%Y-%m-%d %H:%M:%SZ")),
    "ts_unix_seconds": (1, lambda r, t, p: " ".join([str(t)] + p[1:])),
    "ts_lowercase": (1, bad_ts("%Y-%m-%dt%H:%M:%Sz")),
    "ts_offset_hour_24": (1, bad_ts("%Y-%m-%dT%H:%M:%S+24:00")),
    "ts_offset_minute_60": (1, bad_ts("%Y-%m-%dT%H:%M:%S+05:60")),
    "ts_fraction_10_digits": (1, bad_ts("%Y-%m-%dT%H:%M:%S.1234567890Z")),
    "ts_syslog": (1, bad_ts("%b %d %H:%M:%S")),
    # Unusual but valid records:
    "record_crlf": (6, lambda r, t, p: " ".join(p) + "\r"),
    "record_invalid_utf8_message": (2, lambda r, t, p: " ".join(p[:4]) + BAD_UTF8_MESSAGE),
    "record_nul_in_message": (1, lambda r, t, p: " ".join(p) + " \x00\x00 trailing bytes"),
    "record_no_message": (1, lambda r, t, p: " ".join(p[:4])),
    "record_empty_message": (1, lambda r, t, p: " ".join(p[:4]) + " "),
    "record_non_ascii_user": (1, lambda r, t, p: f"{p[0]} {p[1]} {p[2]} zoë.müller {p[4]}"),
}


def next_oddity(g):
    """Draw the next oddity kind from a shuffled deck, refilled when empty (so every kind recurs)."""
    if not g.deck:
        g.deck = [kind for kind, (weight, _) in ODDITIES.items() for _ in range(weight)]
        g.rng.shuffle(g.deck)
    return g.deck.pop()


def make_oddity(g, line, t):
    """Replace one clean line by the next oddity and count it."""
    kind = next_oddity(g)
    g.oddity_counts[kind] = g.oddity_counts.get(kind, 0) + 1
    return ODDITIES[kind][1](g.rng, t, line.split(" ", 4))


# A Java-style stack trace glued into one line: the message of the occasional over-long line.
STACK_TRACE = " | ".join(f"at com.ohmypayments.gateway.Handler{i % 97}.process(Handler.java:{100 + i})"
                         for i in range(LONG_LINE_BYTES // 60))[:LONG_LINE_BYTES]


def long_line(line):
    """A ~70 KB line (a stack trace glued into the message), over the default 64 KiB limit."""
    return " ".join(line.split(" ", 4)[:4]) + " Unhandled exception: NullPointerException " + STACK_TRACE


def gap(g):
    """Geometric gap between two oddity slots (mean 1 / bad_rate)."""
    return 1 + int(g.rng.expovariate(g.bad_rate)) if g.bad_rate > 0 else 1 << 62


def minute_weights(rng, minutes):
    """Traffic intensity per minute: a daily cycle peaking at 14:00 UTC, with a little noise."""
    return [(1 + 0.8 * math.cos(2 * math.pi * ((m % 1440) / 60 - 14) / 24)) * (0.9 + 0.2 * rng.random())
            for m in range(minutes)]


def expected_in(cum, total, first, stop, lines):
    """Expected clean lines in minutes [first, stop)."""
    return lines * (cum[stop - 1] - (cum[first - 1] if first else 0)) / total


def fit(g, minute):
    """A minute of the anomalies' whole-day layout, in this span (a span that ends within a day
    compresses the layout of its whole days; durations too)."""
    return minute * g.minutes // g.layout


def spaced_times(rng, start, seconds, count):
    """`count` sorted random epoch seconds in [start, start + seconds)."""
    return sorted(start + int(rng.random() * seconds) for _ in range(count))


def burst(g, start, count, events, user=None, minutes=10):
    """(t, line) pairs: `count` records spread over the `minutes` from `start`, one random event each.

    Each line gets its own millisecond, so a burst never creates accidental duplicate events.
    """
    lines = []
    for ms in sorted(g.rng.sample(range(minutes * 60_000), count)):
        t = start + ms // 1000
        head, message = g.rng.choice(events)
        message = message.format(req=g.rng.getrandbits(40), ms=g.rng.randint(8, 40))
        who = user or draw_user(g.rng.random, g.users, g.sampler)
        lines.append((t, f"{iso(t)[:-1]}.{ms % 1000:03d}Z {head} {who} {message}"))
    return lines


def plan_anomalies(g, n, weights_cum):
    """Build the extra (planted) lines and their manifest entries; return (extras, manifest_entries)."""
    rng, total, span = g.rng, weights_cum[-1], g.minutes * 60
    whole, length = g.layout // 1440, max(1, fit(g, 10))  # days in the layout; minutes of a burst
    rand_user = lambda: draw_user(rng.random, g.users, g.sampler)
    entries, extras = [], []

    def entry(kind, key, first, last, **counts):
        entries.append({"kind": kind, "key": key, "start": first, "end": last, "counts": counts})

    # A spamming user: a rarely seen user (mid-population rank) suddenly sends thousands of requests.
    spam_user = user_id(g.users * 3 // 5, g.users, g.sampler)
    spam_start = min(fit(g, 9 * 60 + rng.randrange(90)), g.minutes - length)  # minute of day 0
    spam_count = max(30, min(5000, n // 200))
    extras += burst(g, g.start + spam_start * 60, spam_count, (
        ("INFO AuthenticationService", "Session token refreshed (request req_{req:010x})"),
        ("SUCCESS WalletService", "Balance check completed in {ms} ms (request req_{req:010x})"),
        ("SUCCESS PaymentService", "Payment of 1.00 USD authorized (request req_{req:010x})")), spam_user, length)
    entry("spamming_user", spam_user, iso(g.start + spam_start * 60),
          iso(g.start + (spam_start + length) * 60), records=spam_count)

    # A failure spike: PaymentService FAILURE/ERROR lines at ~10x the usual all-service rate.
    spike_start = min(fit(g, (whole // 2) * 1440 + 12 * 60 + rng.randrange(60)), g.minutes - length)
    baseline = expected_in(weights_cum, total, spike_start, spike_start + length, n) * FAILURE_SHARE
    spike_count = max(20, round(10 * baseline))
    extras += burst(g, g.start + spike_start * 60, spike_count, (
        ("FAILURE PaymentService", "Payment declined: issuer unavailable"),
        ("FAILURE PaymentService", "Payment declined: do not honor"),
        ("ERROR PaymentService", "Acquirer acquirer-eu-1 unreachable: circuit breaker open")), None, length)
    entry("failure_spike", "PaymentService", iso(g.start + spike_start * 60),
          iso(g.start + (spike_start + length) * 60),
          failure_error_planted=spike_count, failure_error_expected_all_services=round(baseline, 1))

    # Unknown statuses, scattered over the whole span.
    unknown = {"PENDING_REVIEW": ("FraudDetectionService", "Payment held for manual review (risk score 87)"),
               "CHARGEBACK": ("DisputeService", "Chargeback received for order ORD-55120931, reason code 10.4")}
    for status, (service, message) in unknown.items():
        times = spaced_times(rng, g.start, span, max(2, min(50, n // 100_000)))
        extras += [(t, f"{iso(t)} {status} {service} {rand_user()} {message}") for t in times]
        entry("unknown_status", status, iso(times[0]), iso(times[-1]), records=len(times))

    # Future and epoch timestamps: records whose instant is far outside the log's span. They are
    # placed (t) among ordinary lines, but their own timestamp is years ahead or 1970-01-01.
    weird = max(2, min(20, n // 500_000))
    future = [(t, iso(t + (rng.randint(3, 8) * 365 + 2) * 86400)) for t in spaced_times(rng, g.start, span, weird)]
    extras += [(t, f"{ts} SUCCESS LedgerService {rand_user()} Balance snapshot scheduled") for t, ts in future]
    entry("future_timestamp", "future", min(ts for _, ts in future), max(ts for _, ts in future), records=weird)
    epoch = ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000Z")
    extras += [(t, f"{rng.choice(epoch)} INFO SettlementService {rand_user()} Settlement file SETTLE-{i:04d}.csv "
                   "imported with default date") for i, t in enumerate(spaced_times(rng, g.start, span, weird))]
    entry("epoch_timestamp", "epoch", epoch[0], epoch[0], records=weird)

    # A silent service: steady traffic, then nothing for 70-100 minutes, then back. The window is the
    # enforced silence; the real gap between two of its records is a little longer.
    quiet_start = fit(g, (whole - 1) * 1440 + 14 * 60 + 30 + rng.randrange(45))
    quiet = min(max(1, fit(g, rng.randint(70, 100))), g.minutes - 1)
    quiet_start = min(quiet_start, g.minutes - quiet)
    quiet_stop = quiet_start + quiet
    g.silence = (quiet_start, quiet_stop)
    missing = expected_in(weights_cum, total, quiet_start, quiet_stop, n) * service_share(SILENT_SERVICE)
    entry("silent_service", SILENT_SERVICE, iso(g.start + quiet_start * 60), iso(g.start + quiet_stop * 60),
          records=0, expected_records=round(missing, 1))
    extras.sort(key=lambda pair: pair[0])
    return extras, entries


def plan_duplicates(g, n, extras):
    """Pick a few clean slots whose line will be repeated verbatim; return {slot: total occurrences}."""
    copies = [g.rng.randint(2, 4) for _ in range(max(3, min(8, n // 1_000_000 + 3)))]
    slots = n - extras - sum(c - 1 for c in copies)  # the clean slots left once the copies are in
    return dict(zip(g.rng.sample(range(slots // 20, slots - 1), len(copies)), copies))


def insert_at(lines, inserts):
    """Insert (position, line) pairs (positions relative to the original list) into lines."""
    out, prev = [], 0
    for pos, line in sorted(inserts, key=lambda pair: pair[0]):
        out.extend(lines[prev:pos])
        out.append(line)
        prev = pos
    out.extend(lines[prev:])
    return out


def minute_output(g, minute, count, extras_now):
    """All output lines for one minute: clean lines with oddities, duplicates and anomalies merged in."""
    lines, seconds = clean_lines(g, minute, count) if count else ([], [])
    first, stop = g.slot, g.slot + count
    inserts = []
    while g.next_long < stop:
        if g.next_long not in g.duplicates:
            lines[g.next_long - first] = long_line(lines[g.next_long - first])
            g.long_lines += 1
        g.next_long += g.long_every
    while g.next_odd < stop:
        j = g.next_odd - first
        # Keep the duplicated lines intact, and the file's last line non-empty.
        if g.next_odd not in g.duplicates and g.next_odd < g.slots - 1 and len(lines[j]) < LONG_LINE_BYTES:
            lines[j] = make_oddity(g, lines[j], seconds[j])
        g.next_odd += gap(g)
    for slot, copies in g.duplicates.items():
        if first <= slot < stop:
            j = slot - first
            inserts += [(j + 1, lines[j])] * (copies - 1)
            g.duplicate_entries.append({"kind": "duplicate_event", "key": lines[j], "start": iso(seconds[j]),
                                        "end": iso(seconds[j]), "counts": {"occurrences": copies}})
    inserts += [(bisect_right(seconds, t), line) for t, line in extras_now]
    g.slot = stop
    return insert_at(lines, inserts) if inserts else lines


def write_log(g, path, bounds, extras, final_newline):
    """Write every minute's lines to path in large blocks."""
    with open(path, "wb") as out:
        block, size, e, sep = [], 0, 0, ""
        for minute in range(len(bounds) - 1):
            first_e, stop_t = e, g.start + (minute + 1) * 60
            while e < len(extras) and extras[e][0] < stop_t:
                e += 1
            lines = minute_output(g, minute, bounds[minute + 1] - bounds[minute], extras[first_e:e])
            if lines:
                block.append("\n".join(lines))
                size += len(block[-1])
            if block and (size >= BLOCK_CHARS or minute == len(bounds) - 2):
                # Blocks carry no final "\n": the separator goes in front, so the file's end is ours to choose.
                out.write((sep + "\n".join(block)).encode("utf-8", "surrogateescape"))
                block, size, sep = [], 0, "\n"
        if sep and final_newline:
            out.write(b"\n")


def generate(args):
    """Write the log file and return its manifest."""
    rng = random.Random(args.seed)
    start = int(datetime.fromisoformat(args.start.replace("Z", "+00:00")).timestamp())
    minutes = max(2, round(args.days * 1440))
    users = population_for(args.seen_users, args.lines, args.user_tail) if args.seen_users else args.distinct_users
    g = SimpleNamespace(rng=rng, start=start, minutes=minutes, layout=math.ceil(args.days) * 1440, users=users,
                        sampler=user_sampler(users, args.user_tail), prefixes={}, deck=[], oddity_counts={},
                        bad_rate=0.0 if args.no_bad else args.bad_rate, long_lines=0, silence=(0, 0),
                        duplicates={}, duplicate_entries=[], slot=0)
    pad = message_padder(args.seed, args.message_bytes) if args.message_bytes else None
    g.events, g.cum = build_events(rng, pad=pad)
    g.quiet_events, g.quiet_cum = build_events(rng, exclude=SILENT_SERVICE, pad=pad)
    weights_cum = list(accumulate(minute_weights(rng, minutes)))
    extras, entries = ([], []) if args.no_anomalies else plan_anomalies(g, args.lines, weights_cum)
    if len(extras) > args.lines // 2:
        sys.exit("too few --lines for the planted anomalies; raise --lines or pass --no-anomalies")
    if not args.no_anomalies:
        g.duplicates = plan_duplicates(g, args.lines, len(extras))
    g.slots = args.lines - len(extras) - sum(c - 1 for c in g.duplicates.values())
    bounds = [0] + [round(g.slots * c / weights_cum[-1]) for c in weights_cum]
    g.next_odd = gap(g)
    g.long_every = args.long_every if args.long_every > 0 and not args.no_bad else 1 << 62
    g.next_long = g.long_every // 4
    write_log(g, args.out, bounds, extras, not args.no_final_newline)
    return {
        "generator": "bench/generate.py", "args": given(args), "lines": args.lines,
        "span": {"start": iso(start), "end": iso(start + minutes * 60)},
        "clean_slots": g.slots, "distinct_users_population": users,
        "oddities": dict(sorted(g.oddity_counts.items())), "long_lines": g.long_lines,
        "anomalies": entries + g.duplicate_entries,
    }


def given(args):
    """The arguments for the manifest; options added later appear only when used, so that the
    manifest of earlier arguments stays byte for byte what it was."""
    return {k: v for k, v in vars(args).items() if k not in LATER_OPTIONS or v != LATER_OPTIONS[k]}


def span_days(text):
    """--days: a whole number stays an int (as it always was), a fraction of a day is a float."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of days, found {text!r}")
    return int(value) if value.is_integer() else value


def parse_args(argv):
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lines", type=int, required=True, help="total number of lines to write")
    p.add_argument("--out", required=True, help="output log file")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--distinct-users", type=int, default=20_000, help="size of the user population")
    p.add_argument("--manifest", help="manifest JSON path (default: OUT.manifest.json)")
    p.add_argument("--seen-users", type=int, metavar="N",
                   help="about N distinct users in the file: sets the population size (instead of --distinct-users)")
    p.add_argument("--user-tail", type=float, default=USER_TAIL,
                   help="share of the user draws spread evenly over the population (one-off users); the rest "
                        "is Zipf-like")
    p.add_argument("--message-bytes", type=int, default=0, metavar="N",
                   help="lengthen the messages with request context to N bytes on average (0: as they are)")
    p.add_argument("--days", type=span_days, default=3,
                   help="length of the time span in days (a fraction is fine: 0.25 is 6 hours)")
    p.add_argument("--start", default="2025-07-21T00:00:00Z",
                   help="UTC start of the span (keep it at midnight so traffic peaks at 14:00 UTC)")
    p.add_argument("--bad-rate", type=float, default=0.01, help="fraction of bad or unusual lines")
    p.add_argument("--long-every", type=int, default=2_000_000,
                   help="one ~70 KB over-long line per this many lines (0: none)")
    p.add_argument("--no-bad", action="store_true", help="only clean lines (no oddities, no long lines)")
    p.add_argument("--no-anomalies", action="store_true", help="no planted anomalies")
    p.add_argument("--no-final-newline", action="store_true", help="end the file without a final newline")
    args = p.parse_args(argv)
    if not 0 < args.user_tail < 1:
        p.error(f"--user-tail must be between 0 and 1, found {args.user_tail}")
    return args


def main(argv=None):
    """CLI entry point."""
    args = parse_args(argv)
    manifest = generate(args)
    with open(args.manifest or args.out + ".manifest.json", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
