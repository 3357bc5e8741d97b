"""PII scrubbing for a prompt at once, or for a reply as it streams in token by token.

Each value found becomes a placeholder naming its kind (`<EMAIL_ADDRESS>`, the style of
Dapr's own conversation scrubber).

Streaming gives exactly what `scrub` gives on the whole text, for any split into chunks,
because both cut the text the same way: into *segments* at breaks, positions between two
characters that no PII value can hold side by side (a letter then a space, a space then a
letter, anything outside the values' alphabet, ...). No value spans a break, so each
segment is scrubbed on its own, and whether a break sits at a position depends only on the
two characters around it. A stream therefore releases a segment as soon as the break that
ends it is seen and holds back only the open one: the trailing word, number or address.

A segment never grows past `MAX_HOLD` characters: one that would is cut after its last
space within the first `MAX_HOLD` characters (or at `MAX_HOLD` if it has none). That rule
too depends only on the text, so it bounds memory without breaking the equivalence; its
only cost is that a value straddling such a cut, deep inside a long unbroken run, is missed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = [
    "CREDIT_CARD",
    "EMAIL_ADDRESS",
    "IP_ADDRESS",
    "KINDS",
    "MAX_HOLD",
    "PHONE_NUMBER",
    "SSN",
    "PiiScrubber",
    "StreamScrubber",
]

EMAIL_ADDRESS = "EMAIL_ADDRESS"
PHONE_NUMBER = "PHONE_NUMBER"
CREDIT_CARD = "CREDIT_CARD"
IP_ADDRESS = "IP_ADDRESS"
SSN = "SSN"

# Also the precedence when two values start at the same place and are equally long.
KINDS: tuple[str, ...] = (EMAIL_ADDRESS, CREDIT_CARD, SSN, IP_ADDRESS, PHONE_NUMBER)

# Most characters a stream holds back, and the longest segment scrubbed as one.
MAX_HOLD = 256

# Every character any value can hold: emails and IPv6 need letters, digits and ._%+-@:,
# phone and card numbers digits, spaces, parentheses and .-+.
_ALPHABET = r"A-Za-z0-9._%+@:() \-"
# A break sits between two characters iff they can never be neighbours inside a value.
# Only the left character decides the break at the buffer's end (first alternative), so a
# stream never decides one before the right character is there when that one matters.
_BREAK = re.compile(
    rf"(?<=[^{_ALPHABET}])|(?=[^{_ALPHABET}])"
    # Spaces only separate digit groups: "555 123", "(555) 123", "+1 (555)".
    r"|(?<= )(?=[^0-9(])|(?<=[^0-9)])(?= )"
    # Parentheses only wrap digits, letters only sit in emails and IPv6.
    r"|(?<=[A-Za-z_%@:])(?=[()])|(?<=[()])(?=[A-Za-z_%@:])"
)

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
_H = r"[0-9A-Fa-f]{1,4}"
_IPV6 = (
    rf"(?:{_H}:){{7}}{_H}"
    rf"|(?:{_H}:){{1,7}}:"
    rf"|(?:{_H}:){{1,6}}:{_H}"
    rf"|(?:{_H}:){{1,5}}(?::{_H}){{1,2}}"
    rf"|(?:{_H}:){{1,4}}(?::{_H}){{1,3}}"
    rf"|(?:{_H}:){{1,3}}(?::{_H}){{1,4}}"
    rf"|(?:{_H}:){{1,2}}(?::{_H}){{1,5}}"
    rf"|{_H}:(?::{_H}){{1,6}}"
    rf"|:(?::{_H}){{1,7}}"
    # IPv4-mapped and -translated forms: ::ffff:192.0.2.1, 64:ff9b::192.0.2.1.
    rf"|::(?:ffff(?::0{{1,4}})?:)?{_IPV4}"
    rf"|(?:{_H}:){{1,4}}:{_IPV4}"
)
# Trailing guards like (?!\w|\.\d) make a match end where the value really ends, so a
# longer run ("1.2.3.4.5", "123-45-6789-1") is left alone rather than cut short.
_EMAIL = (
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
    r"(?![A-Za-z0-9_-]|\.[A-Za-z0-9])"
)
_PHONE_INTL = r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,4}){1,5}(?![\w(]|[ .-]\d)"
_PHONE_US_PAREN = r"(?<![\w(])\(\d{3}\)[ -]?\d{3}[-. ]\d{4}(?![\w]|[ .-]\d)"
_PHONE_US = r"(?<![\w.+-])(?:1[-. ])?\d{3}([-. ])\d{3}\1\d{4}(?![\w]|[ .-]\d)"
_CARD_PLAIN = r"(?<![\w.-])\d{13,19}(?![\w]|[.-]\d)"
_CARD_GROUPED = r"(?<![\w.-])\d{4}(?P<s>[ -])\d{4,6}(?:(?P=s)\d{1,5}){1,3}(?![\w]|[ .-]\d)"
_SSN = r"(?<![\w.-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w]|[.-]\d)"


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


def _phone_ok(value: str) -> bool:
    # E.164 numbers have at most 15 digits; fewer than 8 is a sum or a short code.
    return 8 <= len(_digits(value)) <= 15


def _card_ok(value: str) -> bool:
    digits = _digits(value)
    # Issuers' numbers start with 2-6 (Mastercard, Amex, Diners, Visa, Discover, JCB,
    # UnionPay); that and Luhn keep order numbers and millisecond timestamps out.
    if not 13 <= len(digits) <= 19 or digits[0] not in "23456" or len(set(digits)) == 1:
        return False
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _ipv6_ok(value: str) -> bool:
    if "." in value:
        return True
    groups = [g for g in value.split(":") if g]
    # Full form, or compressed with a real-looking group: leaves slices like `x[1::2]`
    # and C++/Ruby scopes like `Face::Add` alone (at the cost of bare `::1`).
    return any(c.isdigit() for c in value) and (
        len(groups) == 8 or (len(groups) >= 2 and max(map(len, groups)) >= 3)
    )


def _always(_: str) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    needs: re.Pattern[str]  # a character every value holds: skips hopeless segments
    valid: Callable[[str], bool]


def _rule(kind: str, pattern: str, needs: str, valid: Callable[[str], bool] = _always) -> _Rule:
    return _Rule(kind, re.compile(pattern, re.ASCII), re.compile(needs), valid)


# Every value holds a digit or an @ (IPv6 is only accepted with a digit), so most words
# of prose cost one search.
_HINT = re.compile(r"[0-9@]")
_DIGITS = "[0-9]"
_RULES: tuple[_Rule, ...] = (
    _rule(EMAIL_ADDRESS, _EMAIL, "@"),
    _rule(CREDIT_CARD, _CARD_PLAIN, _DIGITS, _card_ok),
    _rule(CREDIT_CARD, _CARD_GROUPED, _DIGITS, _card_ok),
    _rule(SSN, _SSN, "-"),
    _rule(IP_ADDRESS, rf"(?<![\w.]){_IPV4}(?![\w]|\.\d)", r"\."),
    _rule(IP_ADDRESS, rf"(?<![\w:.])(?:{_IPV6})(?![\w:]|\.\d)", ":", _ipv6_ok),
    _rule(PHONE_NUMBER, _PHONE_INTL, r"\+", _phone_ok),
    _rule(PHONE_NUMBER, _PHONE_US_PAREN, r"\("),
    _rule(PHONE_NUMBER, _PHONE_US, _DIGITS),
)


class PiiScrubber:
    """Replaces PII of the chosen kinds (default: all of `KINDS`) with `<KIND>` placeholders."""

    def __init__(self, kinds: Iterable[str] | None = None) -> None:
        chosen = set(KINDS if kinds is None else kinds)
        unknown = chosen.difference(KINDS)
        if unknown:
            raise ValueError(f"unknown PII kinds: {sorted(unknown)}; known: {list(KINDS)}")
        self._rules = tuple(r for r in _RULES if r.kind in chosen)

    def scrub(self, text: str) -> str:
        """The whole text at once (a prompt)."""
        # The same segmentation as a stream's, so both agree by construction.
        stream = self.stream()
        return stream.feed(text) + stream.flush()

    def stream(self) -> StreamScrubber:
        """A fresh scrubber for one streamed text (a reply)."""
        return StreamScrubber(self._scrub_segment)

    def _scrub_segment(self, segment: str) -> str:
        if _HINT.search(segment) is None:
            return segment
        found: list[tuple[int, int, int, str]] = []
        for rule in self._rules:
            if rule.needs.search(segment) is None:
                continue
            for m in rule.pattern.finditer(segment):
                if rule.valid(m.group()):
                    found.append((m.start(), -m.end(), KINDS.index(rule.kind), rule.kind))
        if not found:
            return segment
        # Leftmost first, then longest, then by precedence; overlapped ones are dropped.
        out: list[str] = []
        pos = 0
        for start, neg_end, _, kind in sorted(found):
            if start >= pos:
                out += (segment[pos:start], f"<{kind}>")
                pos = -neg_end
        out.append(segment[pos:])
        return "".join(out)


class StreamScrubber:
    """Scrubs one streamed text; `feed` each chunk, then `flush` once at its end."""

    def __init__(self, scrub_segment: Callable[[str], str]) -> None:
        self._scrub_segment = scrub_segment
        self._buf = ""
        self._start = 0  # where the open segment begins in _buf; all before it is out
        self._scan = 1  # no break lies in _buf[_start + 1 : _scan]

    @property
    def held(self) -> int:
        """Characters fed but not yet released."""
        return len(self._buf) - self._start

    def feed(self, text: str) -> str:
        """Takes the next chunk; returns the scrubbed text that is now final."""
        self._buf += text
        out: list[str] = []
        while (cut := self._next_cut()) is not None:
            out.append(self._scrub_segment(self._buf[self._start : cut]))
            self._start = cut
            self._scan = cut + 1
        # Compact once per feed, not per segment: a long prompt stays linear.
        self._scan -= self._start
        self._buf = self._buf[self._start :]
        self._start = 0
        return "".join(out)

    def flush(self) -> str:
        """Ends the text: returns the rest, scrubbed. The stream can then start a new one."""
        # Every break inside the buffer was found by feed: what is left is one segment.
        tail = self._scrub_segment(self._buf[self._start :]) if self.held else ""
        self._buf, self._start, self._scan = "", 0, 1
        return tail

    def _next_cut(self) -> int | None:
        start, limit = self._start, self._start + MAX_HOLD
        scan = max(self._scan, start + 1)
        if scan > len(self._buf):
            return None  # nothing held (re would clamp `pos` and find the old break again)
        # Looking no further than the limit keeps a long unbroken run linear; the character
        # at the limit stays in view, so a break there is still seen.
        m = _BREAK.search(self._buf, scan, limit + 1)
        if m is not None and m.start() <= limit:
            return m.start()
        if len(self._buf) > limit:
            # No break within MAX_HOLD, and the next character (known) rules one out at
            # the limit too: cut after the last space, which most often lies between values.
            return self._buf.rfind(" ", start, limit) + 1 or limit
        self._scan = max(len(self._buf), start + 1)
        return None
