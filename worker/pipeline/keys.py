"""Every state-store key the worker writes, built and parsed here and nowhere else.

A key is `<kind>/<id>` or `<kind>/<id>/<id>`. Ids come from the contract's alphabet
(`[A-Za-z0-9._:-]`), which has no `/`, and a kind is a fixed word, so no two (kind, ids)
can ever give the same key: context `A` with request `B:C` and context `A:B` with request
`C` are `cancel-turn/A/B:C` and `cancel-turn/A:B/C`. Building a key from a value outside
the alphabet is a bug and raises `ValueError` rather than risk a collision.

| key | holds | written by |
| --- | --- | --- |
| `lease/<context_id>` | who answers a turn of this conversation now | guard |
| `turn/<request_id>` | the request's attempt and state (running, done) | guard |
| `ending/<context_id>` | the last events a turn recorded, until they are out | guard |
| `history/<context_id>` | the conversation's completed turns | history |
| `cancel-turn/<context_id>/<request_id>` | one turn was cancelled | cancellation |
| `cancel-context/<context_id>` | the turns of a context were cancelled | cancellation |
"""

from __future__ import annotations

import re
from enum import Enum

__all__ = [
    "Kind",
    "cancel_context",
    "cancel_turn",
    "ending",
    "history",
    "lease",
    "parse",
    "turn",
]

_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_SEPARATOR = "/"


class Kind(Enum):
    LEASE = "lease"
    TURN = "turn"
    ENDING = "ending"
    HISTORY = "history"
    CANCEL_TURN = "cancel-turn"
    CANCEL_CONTEXT = "cancel-context"


_ARITY = {
    Kind.LEASE: 1,
    Kind.TURN: 1,
    Kind.ENDING: 1,
    Kind.HISTORY: 1,
    Kind.CANCEL_TURN: 2,
    Kind.CANCEL_CONTEXT: 1,
}


def _build(kind: Kind, *ids: str) -> str:
    for value in ids:
        if not _ID.fullmatch(value):
            raise ValueError(f"not an id of the contract's alphabet: {value!r}")
    return _SEPARATOR.join((kind.value, *ids))


def lease(context_id: str) -> str:
    return _build(Kind.LEASE, context_id)


def turn(request_id: str) -> str:
    return _build(Kind.TURN, request_id)


def ending(context_id: str) -> str:
    return _build(Kind.ENDING, context_id)


def history(context_id: str) -> str:
    return _build(Kind.HISTORY, context_id)


def cancel_turn(context_id: str, request_id: str) -> str:
    return _build(Kind.CANCEL_TURN, context_id, request_id)


def cancel_context(context_id: str) -> str:
    return _build(Kind.CANCEL_CONTEXT, context_id)


def parse(key: str) -> tuple[Kind, tuple[str, ...]]:
    """The kind and ids of a key built here; `ValueError` for anything else."""
    kind_name, _, rest = key.partition(_SEPARATOR)
    try:
        kind = Kind(kind_name)
    except ValueError:
        raise ValueError(f"not a worker state key: {key!r}") from None
    ids = tuple(rest.split(_SEPARATOR))
    if len(ids) != _ARITY[kind] or not all(_ID.fullmatch(i) for i in ids):
        raise ValueError(f"not a worker state key: {key!r}")
    return kind, ids
