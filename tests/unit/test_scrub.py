"""PiiScrubber: what each kind catches, and a stream giving exactly `scrub` for any chunking."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.pii_corpus import NEGATIVES, POSITIVES, tally
from worker.pipeline.scrub import (
    CREDIT_CARD,
    EMAIL_ADDRESS,
    IP_ADDRESS,
    KINDS,
    MAX_HOLD,
    PHONE_NUMBER,
    SSN,
    PiiScrubber,
)

SCRUBBER = PiiScrubber()


def streamed(chunks: Iterable[str], scrubber: PiiScrubber = SCRUBBER) -> str:
    stream = scrubber.stream()
    out = [stream.feed(chunk) for chunk in chunks]
    out.append(stream.flush())
    assert stream.held == 0
    return "".join(out)


def split_at(text: str, cuts: Iterable[int]) -> list[str]:
    points = [0, *sorted(cuts), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(points)]


# --- each kind ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail john.doe@example.com.", f"mail <{EMAIL_ADDRESS}>."),
        ("a+tag@sub.example.co.uk, b", f"<{EMAIL_ADDRESS}>, b"),
        ("call +44 20 7946 0958 now", f"call <{PHONE_NUMBER}> now"),
        ("(555) 123-4567", f"<{PHONE_NUMBER}>"),
        ("dial 555-123-4567.", f"dial <{PHONE_NUMBER}>."),
        ("or 555.123.4567", f"or <{PHONE_NUMBER}>"),
        ("+1 (212) 555-0143", f"<{PHONE_NUMBER}>"),
        ("1-800-555-0199", f"<{PHONE_NUMBER}>"),
        ("card 4111 1111 1111 1111!", f"card <{CREDIT_CARD}>!"),
        ("card 4111-1111-1111-1111", f"card <{CREDIT_CARD}>"),
        ("card 4111111111111111", f"card <{CREDIT_CARD}>"),
        ("amex 3782 822463 10005", f"amex <{CREDIT_CARD}>"),
        ("host 192.168.1.42:8080", f"host <{IP_ADDRESS}>:8080"),
        ("ip 255.255.255.255.", f"ip <{IP_ADDRESS}>."),
        ("v6 2001:0db8:85a3:0000:0000:8a2e:0370:7334", f"v6 <{IP_ADDRESS}>"),
        ("v6 2001:db8::8a2e:370:7334", f"v6 <{IP_ADDRESS}>"),
        ("v6 fe80::1 and 2001:db8::", f"v6 <{IP_ADDRESS}> and <{IP_ADDRESS}>"),
        ("v6 ::ffff:192.0.2.1", f"v6 <{IP_ADDRESS}>"),
        ("ssn 123-45-6789.", f"ssn <{SSN}>."),
        ("ssn 899-01-0001", f"ssn <{SSN}>"),
    ],
)
def test_each_kind_is_caught(text: str, expected: str) -> None:
    assert SCRUBBER.scrub(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Hello there, how are you today?",
        "card 4111 1111 1111 1112",  # fails Luhn
        "id 4111111111111112",  # fails Luhn
        "ts 1718035200000",  # 13 digits, but no issuer starts with 1
        "zeros 0000 0000 0000 0000",  # passes Luhn, is no card
        "ip 192.168.1.256",  # octet out of range
        "ip 256.1.1.1",
        "ip 1.2.3.4.5",  # too many parts: an OID or a version
        "ip 01.02.03.04",  # leading zeros: a date
        "version 1.2.3",
        "v1.2.3.4",
        "in the year 2024",
        "it costs $1,299.99 or 19.99 EUR",
        "ssn 000-12-3456",  # area 000
        "ssn 666-12-3456",  # area 666
        "ssn 912-34-5678",  # area 9xx
        "ssn 123-45-67890",  # longer run
        "ssn 1123-45-6789",
        "date 2024-03-15 at 12:30:45",
        "slice a[1::2] and std::vector, Face::Add",
        "mac 00:1A:2B:3C:4D:5E",
        "sum 2+2=4, +15 points",
        "mail me @handle or user@localhost",
        "ISBN 978-3-16-148410-0",
    ],
)
def test_non_pii_is_left_alone(text: str) -> None:
    assert SCRUBBER.scrub(text) == text


def test_overlapping_values_yield_one_placeholder() -> None:
    # The email holds a phone-shaped run: the longer, earlier value wins.
    assert SCRUBBER.scrub("x 555-123-4567@example.com y") == f"x <{EMAIL_ADDRESS}> y"


def test_kinds_can_be_chosen() -> None:
    text = "mail a@example.com or call 555-123-4567"
    assert (
        PiiScrubber([EMAIL_ADDRESS]).scrub(text) == f"mail <{EMAIL_ADDRESS}> or call 555-123-4567"
    )
    assert PiiScrubber([]).scrub(text) == text
    assert set(KINDS) == {EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IP_ADDRESS, SSN}


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="PASSPORT"):
        PiiScrubber(["PASSPORT"])


# --- streaming gives exactly scrub() ---------------------------------------------------

TEXTS = [
    "Email john.doe@example.com or call +44 20 7946 0958.",
    "My card is 4111 1111 1111 1111 and my SSN is 123-45-6789, thanks!",
    "Servers 10.0.0.1, 192.168.1.256 and 2001:db8::8a2e:370:7334 (fe80::1) are up.",
    "Call (555) 123-4567 or 555.123.4567; not 555-123-45678 nor 1.2.3.4.5.",
    "a@b.c d@e.fg. x@y.example.com.au.. +1 (212) 555-0143x 4111-1111-1111-1111-",
    "Version 1.2.3 costs $19.99 in 2024; see https://example.com/a?b=c#d now.",
    "Amex 3782 822463 10005 then 4111111111111112 then 123-45-6789-0.",
    "ok\n555 123 4567\t(800)555-0100  +33 1 23 45 67 89  ::ffff:192.0.2.1",
]


@pytest.mark.parametrize("text", TEXTS)
def test_every_two_way_split_gives_scrub(text: str) -> None:
    want = SCRUBBER.scrub(text)
    for i in range(len(text) + 1):
        assert streamed([text[:i], text[i:]]) == want, i


@pytest.mark.parametrize("text", TEXTS)
def test_one_char_at_a_time_gives_scrub(text: str) -> None:
    assert streamed(text) == SCRUBBER.scrub(text)


@pytest.mark.parametrize("text", TEXTS)
def test_random_splits_give_scrub(text: str) -> None:
    rng = random.Random(text)
    want = SCRUBBER.scrub(text)
    for _ in range(200):
        cuts = [rng.randint(0, len(text)) for _ in range(rng.randint(1, 12))]
        assert streamed(split_at(text, cuts)) == want, cuts


def test_value_split_across_tokens_is_caught() -> None:
    chunks = ["Reach me at jo", "hn.d", "oe@exa", "mple.c", "om or +4", "4 20 79", "46 0958."]
    assert streamed(chunks) == f"Reach me at <{EMAIL_ADDRESS}> or <{PHONE_NUMBER}>."


_VALUES = [
    "john.doe@example.com",
    "a@b.io",
    "+44 20 7946 0958",
    "(555) 123-4567",
    "555-123-4567",
    "555.123.4567",
    "4111 1111 1111 1111",
    "4111111111111111",
    "4111 1111 1111 1112",
    "192.168.0.1",
    "10.0.0.256",
    "2001:db8::8a2e:370:7334",
    "fe80::1",
    "123-45-6789",
    "666-45-6789",
    "1.2.3",
    "2024",
    "$19.99",
]
_PROSE = ["Hello", " ", ", ", ". ", " and ", "call", "(", ")", "\n", "é", "x", "-", ":", "@"]
# Characters that can sit inside values, to build near-misses and odd joins.
_TRICKY = "0123456789 .-@:()+_%abcdefxyzABZ\t,é"


@st.composite
def pii_texts(draw: st.DrawFn) -> str:
    part = st.one_of(
        st.sampled_from(_VALUES),
        st.sampled_from(_PROSE),
        st.text(alphabet=_TRICKY, max_size=10),
    )
    return "".join(draw(st.lists(part, max_size=12)))


@settings(max_examples=400, deadline=None, database=None)
@given(text=pii_texts(), data=st.data())
def test_any_chunking_gives_scrub(text: str, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=10))
    assert streamed(split_at(text, cuts)) == SCRUBBER.scrub(text)


@settings(max_examples=100, deadline=None, database=None)
@given(text=st.text(max_size=80), data=st.data())
def test_any_text_any_chunking_gives_scrub(text: str, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=10))
    assert streamed(split_at(text, cuts)) == SCRUBBER.scrub(text)


def test_a_stream_is_fresh_after_flush() -> None:
    stream = SCRUBBER.stream()
    assert stream.feed("ends with 555") == "ends with"
    assert stream.flush() == " 555"
    assert stream.feed("-123-4567 ") + stream.flush() == "-123-4567 "


# --- releases early ----------------------------------------------------------------------


def test_prose_is_released_at_once() -> None:
    stream = SCRUBBER.stream()
    assert stream.feed("Hello there, how are you ") == "Hello there, how are you"
    assert stream.held == 1
    assert stream.feed("today?") == " today?"
    assert stream.held == 0


def test_prose_char_by_char_holds_at_most_the_current_word() -> None:
    text = "The quick brown fox jumps over the lazy dog, then naps. Nothing to see here!"
    stream = SCRUBBER.stream()
    out = []
    for ch in text:
        out.append(stream.feed(ch))
        assert stream.held <= len("Nothing") + 1
    assert "".join(out) + stream.flush() == text


def test_a_value_is_held_only_while_it_can_grow() -> None:
    stream = SCRUBBER.stream()
    assert stream.feed("Mail jane@example.com") == "Mail "
    assert stream.held == len("jane@example.com")  # "...com.au" may still follow
    assert stream.feed(", thanks") == f"<{EMAIL_ADDRESS}>, "
    assert stream.feed(" 555-123-456") == "thanks"
    assert stream.held == len(" 555-123-456")
    assert stream.feed("7 ok") == f" <{PHONE_NUMBER}> "
    assert stream.held == len("ok")


# --- hold-back bound -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "a" * 1000,
        "1 " * 700,
        "4111 1111 1111 1111 " * 40,
        ("x" * 300) + " mail a@example.com " + ("7" * 600),
    ],
)
def test_hold_back_is_bounded(text: str) -> None:
    want = SCRUBBER.scrub(text)
    stream = SCRUBBER.stream()
    out = []
    for ch in text:
        out.append(stream.feed(ch))
        assert stream.held <= MAX_HOLD
    out.append(stream.flush())
    assert "".join(out) == want
    whole = SCRUBBER.stream()
    assert whole.feed(text) + whole.flush() == want
    assert streamed(split_at(text, range(0, len(text), 97))) == want


def test_bound_keeps_values_that_end_runs_short_of_it() -> None:
    # A long unbroken run is cut after its last space within MAX_HOLD, so values
    # further on in that run are still whole.
    text = "1 " * 200 + "4111 1111 1111 1111"
    assert len(text) > MAX_HOLD
    assert SCRUBBER.scrub(text).endswith(f"<{CREDIT_CARD}>")


# --- corpus --------------------------------------------------------------------------------


def test_corpus_is_big_enough() -> None:
    assert len(POSITIVES) >= 60
    assert len(NEGATIVES) >= 60
    assert all(kinds for _, kinds in POSITIVES)
    assert all(any(kind in kinds for _, kinds in POSITIVES) for kind in KINDS)


@pytest.mark.parametrize("mode", ["scrub", "stream"])
def test_corpus_recall_and_false_positives(mode: str) -> None:
    def redact(text: str) -> str:
        return SCRUBBER.scrub(text) if mode == "scrub" else streamed(text)

    tallies = tally(redact)
    values = sum(t.values for t in tallies.values())
    caught = sum(t.caught for t in tallies.values())
    assert caught / values >= 0.95
    assert sum(t.false_positives for t in tallies.values()) <= 3
    assert sum(t.stray for t in tallies.values()) <= 3
