"""``core.redact``: card numbers, e-mail addresses and configured patterns never leave the engine."""

from __future__ import annotations

import json
import pickle
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.cli import main
from core.engine import Pipeline
from core.plugins import rule_types
from core.redact import Redactor
from core.rules import Rule
from core.ruleset import load_rules
from core.settings import load_settings
from core.state import RunState
#: The rules that write into summary.json: what is tested here does not depend on the detectors,
#: whose configuration changes more often.
SUMMARY_RULES = 'rule_files: ["rules/summary.yaml"]\nrules: [payment-statuses, top-services, top-users, peak-hours]\n'

VISA = "4111111111111111"  # the classic test card: Luhn-valid


def luhn_ok(digits: str) -> bool:
    """The Luhn check the textbook way, independent of the code under test: double every second digit."""
    return sum(sum(divmod(int(d) * (1 + i % 2), 10)) for i, d in enumerate(reversed(digits))) % 10 == 0


def check_digit(body: str) -> str:
    return next(d for d in "0123456789" if luhn_ok(body + d))


def card(length: int, prefix: str = "4") -> str:
    body = (prefix + "123456789012345678")[: length - 1]
    return body + check_digit(body)


def not_luhn(number: str) -> str:
    """``number`` with its last digit changed, so that it fails the check."""
    return number[:-1] + str((int(number[-1]) + 1) % 10)


@pytest.fixture
def redactor() -> Redactor:
    return Redactor()


# -- card numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize("length", range(13, 20))
def test_luhn_valid_13_to_19_digit_runs_are_masked_keeping_the_last_four(redactor, length):
    number = card(length)
    assert redactor.redact(f"charge {number} declined") == f"charge [card ****{number[-4:]}] declined"


def test_a_16_digit_order_number_that_fails_luhn_is_kept(redactor):
    order = not_luhn(VISA)
    assert redactor.redact(f"order {order} shipped") == f"order {order} shipped"


@pytest.mark.parametrize("digits", [card(20)[:12], card(20), VISA + "0000"])
def test_runs_shorter_than_13_or_longer_than_19_digits_are_kept(redactor, digits):
    # card(20) is Luhn-valid but no card has 20 digits; VISA + "0000" holds a card but is one number.
    assert redactor.redact(f"ref {digits}") == f"ref {digits}"


@pytest.mark.parametrize("text", [
    "4111 1111 1111 1111", "4111-1111-1111-1111", "4111 1111-1111 1111", "4111111111111111",
])
def test_grouped_card_numbers_are_masked(redactor, text):
    assert redactor.redact(f"card={text}.") == "card=[card ****1111]."


def test_card_next_to_other_numbers_is_still_found(redactor):
    assert redactor.redact(f"qty 2 {VISA} at 2025-07-22") == "qty 2 [card ****1111] at 2025-07-22"
    assert redactor.redact("5678 9012 4111 1111 1111 1111") == "5678 9012 [card ****1111]"


def test_two_cards_in_one_text(redactor):
    other = card(16, "5")
    assert redactor.redact(f"{VISA} then {other}") == f"[card ****1111] then [card ****{other[-4:]}]"


def test_doubled_separators_do_not_join_groups(redactor):
    assert redactor.redact("4111  1111  1111  1111") == "4111  1111  1111  1111"


def test_cards_false_keeps_card_numbers():
    assert Redactor(cards=False).redact(f"card {VISA}") == f"card {VISA}"


def test_digits_at_the_end_of_a_cut_sample_are_masked(redactor):
    text = "x" * 180 + " card 4111 1111 1111"
    assert redactor.redact(text, cut=True) == "x" * 180 + " card [number cut]"
    assert redactor.redact("order 123456", cut=True) == "order 123456"  # six digits may show
    assert redactor.redact(text) == text  # whole, these 12 digits are no card


# -- e-mail addresses and patterns ---------------------------------------------------------------


@pytest.mark.parametrize("address", ["bob@example.com", "first.last+tag@mail.example.co.uk", "ü.ser@bank.de"])
def test_email_addresses_are_masked(redactor, address):
    assert redactor.redact(f"notify <{address}> now") == "notify <[email]> now"


def test_emails_false_keeps_addresses():
    assert Redactor(emails=False).redact("to bob@example.com") == "to bob@example.com"


def test_extra_patterns_are_masked_as_redacted():
    redactor = Redactor(patterns=(r"ORD-\d+", r"token=\S+"))
    assert redactor.redact("ORD-123 token=abc.def ok") == "[redacted] [redacted] ok"


def test_text_with_nothing_to_mask_comes_back_unchanged(redactor):
    line = "2025-07-22T12:34:56Z FAILED checkout u1 card declined 12.50 EUR ref 123456789012"
    assert redactor.redact(line) is line


def test_redactor_pickles_with_its_patterns():
    # Rules are pickled between processes and into the checkpoint, and carry the redactor.
    redactor = Redactor(emails=False, patterns=(r"ORD-\d+",))
    copy = pickle.loads(pickle.dumps(redactor))
    assert copy == redactor
    assert copy.redact(f"ORD-1 {VISA} a@b.cd") == "[redacted] [card ****1111] a@b.cd"


# -- properties ----------------------------------------------------------------------------------

_RUNS = re.compile(r"\d+(?:[ -]\d+)*")


def luhn_spans(text: str) -> list[str]:
    """Every span of whole digit groups (joined by single spaces or dashes) that is a card number."""
    found = []
    for run in _RUNS.finditer(text):
        groups = re.findall(r"\d+", run.group())
        for first in range(len(groups)):
            for stop in range(first + 1, len(groups) + 1):
                digits = "".join(groups[first:stop])
                if 13 <= len(digits) <= 19 and luhn_ok(digits):
                    found.append(digits)
    return found


def grouped(number: str, separator: str, size: int) -> str:
    return separator.join(number[i:i + size] for i in range(0, len(number), size))


_cards = st.builds(
    grouped,
    st.builds(lambda body: body + check_digit(body), st.text("0123456789", min_size=12, max_size=18)),
    st.sampled_from(["", " ", "-"]),
    st.integers(1, 19),
)
_pieces = st.one_of(
    _cards,
    st.text("0123456789", min_size=1, max_size=20),
    st.sampled_from([" ", "-", "  ", "@", ".", "x", "ORD-", "[card ****1111]", "[email]", "a@b.co", "é"]),
    st.text(max_size=5),
)
_texts = st.lists(_pieces, max_size=12).map("".join)


@given(_texts)
def test_redact_is_idempotent_and_leaves_no_card_number(text):
    for redactor in (Redactor(), Redactor(patterns=(r"ORD-\d+",))):
        once = redactor.redact(text)
        assert redactor.redact(once) == once
        assert luhn_spans(once) == []


# -- settings, the rules and the outputs ---------------------------------------------------------


def test_shipped_settings_mask_cards_and_emails_with_no_patterns(workspace):
    settings = load_settings(workspace.settings)
    assert (settings.redact_cards, settings.redact_emails, settings.redact_patterns) == (True, True, ())
    assert Redactor.from_settings(settings) == Redactor()


def test_bad_patterns_are_start_up_errors_naming_the_field(workspace, capsys):
    workspace.configure("""\
        redact:
          patterns: ['ORD-\\d+', '(unclosed', '.*', '']
          email: false
        """)
    assert main(["--settings", str(workspace.settings), "--check"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "runpipeline: configuration error (4 problems):",
        f"  {workspace.settings}: redact: unknown field 'email' (did you mean 'emails'?); "
        "known fields: cards, emails, patterns",
        f"  {workspace.settings}: redact.patterns[3]: expected string of at least 1 character(s), got ''",
        f"  {workspace.settings}: redact.patterns[1]: expected a regular expression "
        "(missing ), unterminated subpattern at position 0), got '(unclosed'",
        f"  {workspace.settings}: redact.patterns[2]: expected a regular expression that matches at least "
        "one character, got '.*'",
    ]


def test_the_engine_gives_every_rule_and_partial_the_redactor(workspace, pm):
    workspace.configure(SUMMARY_RULES + "redact: {emails: false, patterns: ['ORD-\\d+']}\n")
    settings = load_settings(workspace.settings)
    rules = load_rules(settings, rule_types(pm))
    with Pipeline(settings, rules, pm):
        pass
    expected = Redactor(emails=False, patterns=(r"ORD-\d+",))
    assert [rule.redactor for rule in rules] == [expected] * len(rules)
    assert all(r.redactor == expected for r in RunState.empty(rules).rules.values())


def test_rule_empty_carries_the_redactor():
    class Plain(Rule):
        type_name = "plain"

    rule = Plain("plain")
    assert rule.redactor is None and rule.empty().redactor is None
    rule.use_redactor(Redactor(cards=False))
    assert rule.empty().redactor == Redactor(cards=False)


def test_card_number_in_a_malformed_line_never_reaches_summary_json(workspace, capsys):
    long_one = "y" * 185 + " 4111 1111 1111 1111"  # cut at 200 characters inside the card number
    workspace.configure(SUMMARY_RULES)
    workspace.write("a.log", "\n".join([
        "2025-07-22T10:00:00Z SUCCESS checkout alice paid",
        f"broken line card {VISA} from bob@example.com",
        "2025-07-22T10:00:00Z FAILED 4111-1111-1111-1111",
        long_one,
    ]) + "\n")
    assert main(["--settings", str(workspace.settings), "--quiet"]) == 0
    text = (workspace.output / "summary.json").read_text(encoding="utf-8")
    assert "4111" not in text.replace("****1111", "")
    assert "bob@example.com" not in text
    samples = json.loads(text)["malformed_samples"]
    assert [s["text"] for s in samples] == [
        "broken line card [card ****1111] from [email]",
        "2025-07-22T10:00:00Z FAILED [card ****1111]",
        "y" * 185 + " [number cut]",
    ]
