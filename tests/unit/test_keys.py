"""State keys: one encoding, in which no two (kind, ids) share a key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.pipeline import keys

ids = st.from_regex(r"\A[A-Za-z0-9._:-]{1,16}\Z")


def test_the_reported_cancel_collision_is_two_keys() -> None:
    # Context `A` with request `B:C` used to share `cancel:A:B:C` with context `A:B`, request `C`.
    assert keys.cancel_turn("A", "B:C") != keys.cancel_turn("A:B", "C")


@given(ids, ids, ids, ids)
def test_different_ids_never_share_a_cancel_key(a: str, b: str, c: str, d: str) -> None:
    if (a, b) != (c, d):
        assert keys.cancel_turn(a, b) != keys.cancel_turn(c, d)


@given(st.sampled_from(list(keys.Kind)), ids, ids)
def test_every_key_parses_back_to_its_kind_and_ids(
    kind: keys.Kind, first: str, second: str
) -> None:
    builders = {
        keys.Kind.LEASE: lambda: keys.lease(first),
        keys.Kind.TURN: lambda: keys.turn(first),
        keys.Kind.ENDING: lambda: keys.ending(first),
        keys.Kind.HISTORY: lambda: keys.history(first),
        keys.Kind.CANCEL_TURN: lambda: keys.cancel_turn(first, second),
        keys.Kind.CANCEL_CONTEXT: lambda: keys.cancel_context(first),
    }
    expected = (first, second) if kind is keys.Kind.CANCEL_TURN else (first,)
    assert keys.parse(builders[kind]()) == (kind, expected)


@pytest.mark.parametrize("bad", ["", "a/b", "a b", "é", "x" * 129, "a\nb"])
def test_an_id_outside_the_alphabet_is_refused_not_encoded(bad: str) -> None:
    with pytest.raises(ValueError, match="alphabet"):
        keys.lease(bad)


@pytest.mark.parametrize("key", ["lease", "lease/", "lease/a/b", "cancel-turn/a", "other/a"])
def test_foreign_keys_do_not_parse(key: str) -> None:
    with pytest.raises(ValueError, match="not a worker state key"):
        keys.parse(key)
