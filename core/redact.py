"""Mask card numbers, e-mail addresses and configured patterns in any text that leaves the engine."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from core import safestate

if TYPE_CHECKING:
    from core.settings import Settings

#: A run of 13 or more digits, grouped or not: each gap between two digits is at most one space
#: or dash. The lookbehinds make it start where the run starts, so each match is a whole run;
#: they follow the first digit so that the search skips to digits (5.7x faster on digitless text).
_RUN = re.compile(r"\d(?<!\d\d)(?<!\d[ -]\d)(?:[ -]?\d){12,}")
#: A run of 7 or more digits that reaches the end of a cut text: the start of what may be a card
#: number whose end was cut off. Six digits (the issuer's prefix) may be shown; more may not.
_CUT_RUN = re.compile(r"\d(?<!\d\d)(?<!\d[ -]\d)(?:[ -]?\d){6,}[ -]?\Z")
_GROUP = re.compile(r"\d+")
_EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)+")

CARD_DIGITS = range(13, 20)
REDACTED = "[redacted]"
EMAIL = "[email]"
CUT_NUMBER = "[number cut]"


def luhn_valid(digits: str) -> bool:
    """True when a string of digits passes the Luhn check, as every payment card number does."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)  # \d also matches other scripts' digits; int() reads them all
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def card_mask(digits: str) -> str:
    """What stands in for a card number: only its last four digits are kept."""
    return f"[card ****{digits[-4:]}]"


def pattern_problems(patterns: object) -> list[str]:
    """``redact.patterns[i]: expected ..., got ...`` for each pattern that cannot be used.

    Items that are not text, or empty, are left to the settings' JSON Schema, which reports them.
    """
    if not isinstance(patterns, list):
        return []
    problems = []
    for index, pattern in enumerate(patterns):
        if not isinstance(pattern, str) or not pattern:
            continue
        why = _pattern_problem(pattern)
        if why:
            problems.append(f"redact.patterns[{index}]: expected {why}, got {pattern!r}")
    return problems


def _pattern_problem(pattern: str) -> str:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        return f"a regular expression ({exc})"
    if compiled.fullmatch(""):  # it would insert the mask between every two characters
        return "a regular expression that matches at least one character"
    return ""


@safestate.register
@dataclass(frozen=True)
class Redactor:
    """The one redaction step: card numbers, e-mail addresses, then each extra pattern.

    A card number is a run of 13 to 19 digits, alone or in groups joined by single spaces or
    dashes, that passes the Luhn check; a run that fails it (an order number, say) is kept. In a
    longer grouped run, every span of whole groups that is a card number is masked.
    """

    cards: bool = True
    emails: bool = True
    patterns: tuple[str, ...] = ()
    _compiled: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "patterns", tuple(self.patterns))  # a list would make it unhashable
        object.__setattr__(self, "_compiled", tuple(re.compile(p) for p in self.patterns))

    def __getstate__(self) -> dict[str, Any]:
        """Its settings: the compiled patterns are made again from them (see ``core.safestate``)."""
        return {"cards": self.cards, "emails": self.emails, "patterns": self.patterns}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in ("cards", "emails", "patterns"):
            object.__setattr__(self, name, state[name])
        self.__post_init__()

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        """The redactor the ``redact:`` block of validated settings asks for (built once per block)."""
        return _built(settings.redact_cards, settings.redact_emails, settings.redact_patterns)

    def redact(self, text: str, *, cut: bool = False) -> str:
        """``text`` with what it must not show masked.

        :param cut: the text is the start of a longer one (a sample); then digits at its very
            end may be the start of a card number and are masked too.
        """
        if self.cards and cut:
            text = _CUT_RUN.sub(CUT_NUMBER, text)
        if not self._compiled and "@" not in text and (not self.cards or _RUN.search(text) is None):
            return text  # most lines: nothing to mask, one scan
        if self.cards:
            text = _RUN.sub(_mask_cards, text)
        if self.emails and "@" in text:
            text = _EMAIL.sub(EMAIL, text)
        for pattern in self._compiled:
            text = pattern.sub(REDACTED, text)
        return text


@cache
def _built(cards: bool, emails: bool, patterns: tuple[str, ...]) -> Redactor:
    return Redactor(cards, emails, patterns)


def _mask_cards(match: re.Match[str]) -> str:
    """A run with each span of whole groups that is a card number masked; overlapping spans as one."""
    run = match.group()
    groups = [(m.start(), m.end()) for m in _GROUP.finditer(run)]
    covered = _card_groups(run, groups)
    if not any(covered):
        return run
    pieces, last = [], 0
    for first, stop in _spans(covered):
        start, end = groups[first][0], groups[stop - 1][1]
        digits = "".join(run[a:b] for a, b in groups[first:stop])
        pieces += [run[last:start], card_mask(digits)]
        last = end
    pieces.append(run[last:])
    return "".join(pieces)


def _card_groups(run: str, groups: list[tuple[int, int]]) -> list[bool]:
    """For each group, whether some span of whole groups holding it is a Luhn-valid 13-19 digits."""
    covered = [False] * len(groups)
    for first in range(len(groups)):
        digits = ""
        for stop in range(first, len(groups)):
            digits += run[groups[stop][0]:groups[stop][1]]
            if len(digits) > CARD_DIGITS[-1]:
                break
            if len(digits) in CARD_DIGITS and luhn_valid(digits):
                covered[first:stop + 1] = [True] * (stop + 1 - first)
    return covered


def _spans(covered: list[bool]) -> list[tuple[int, int]]:
    """The ``[first, stop)`` index ranges of consecutive True values."""
    spans, first = [], None
    for index, flag in enumerate([*covered, False]):
        if flag and first is None:
            first = index
        elif not flag and first is not None:
            spans.append((first, index))
            first = None
    return spans
