"""Context continuity: completed turns kept per context id in the Dapr state store.

Bounded by turns and characters (oldest dropped first) and by a TTL, so a
conversation's state never grows without limit. Stored text is what the LLM saw,
so a scrubbed prompt is stored scrubbed.

Each turn is stored with its request id, and writing a request's turn again replaces it:
the history is written before a turn's last events are published, so an attempt that
dies after writing it is answered again without itself as context, and its successor's
reply takes its place instead of following it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from worker.errors import EtagMismatch, SidecarError
from worker.llm.base import ChatMessage
from worker.pipeline import keys
from worker.pipeline.ports import StateStore

__all__ = ["ConversationHistory", "with_history"]

log = logging.getLogger(__name__)

_LEADING_ROLES = ("system", "developer")


def with_history(
    messages: Sequence[ChatMessage], history: Sequence[ChatMessage]
) -> list[ChatMessage]:
    """The prompt's instructions first, then the stored turns, then the new messages."""
    lead = [m for m in messages if m.role in _LEADING_ROLES]
    rest = [m for m in messages if m.role not in _LEADING_ROLES]
    return [*lead, *history, *rest]


class ConversationHistory:
    def __init__(
        self,
        store: StateStore,
        store_name: str,
        *,
        max_turns: int,
        max_chars: int,
        ttl_seconds: int,
        timeout: float | None = None,
    ) -> None:
        self._store = store
        self._store_name = store_name
        self._max_turns = max_turns
        self._max_chars = max_chars
        self._ttl = ttl_seconds
        self._timeout = timeout

    async def load(self, context_id: str, *, excluding: str | None = None) -> list[ChatMessage]:
        turns, _ = await self._load_turns(context_id)
        return [m for request_id, turn in turns if request_id != excluding for m in turn]

    async def append(
        self, context_id: str, request_id: str, prompt: Sequence[ChatMessage], reply: str
    ) -> None:
        """Add (or replace) the request's turn; `SidecarError` if it could not be saved."""
        if self._max_turns == 0:
            return
        turn = [m for m in prompt if m.role not in _LEADING_ROLES]
        turn.append(ChatMessage("assistant", reply))
        # One turn at a time per context makes a race rare; the ETag makes it harmless.
        # A mismatch may also be a Redis error: read again and retry either way.
        for _ in range(3):
            turns, etag = await self._load_turns(context_id)
            if any(r == request_id for r, _ in turns):
                turns = [(r, turn if r == request_id else t) for r, t in turns]
            else:
                turns = [*turns, (request_id, turn)]
            value = json.dumps(
                [
                    {
                        "request_id": r,
                        "messages": [{"role": m.role, "content": m.content} for m in t],
                    }
                    for r, t in self._bounded(turns)
                ]
            ).encode()
            try:
                await self._store.save_state(
                    self._store_name,
                    keys.history(context_id),
                    value,
                    etag=etag,
                    create_only=etag is None,
                    ttl_seconds=self._ttl,
                    call_timeout=self._timeout,
                )
                return
            except EtagMismatch:
                continue
        raise SidecarError(f"history of context {context_id} not saved: kept changing under us")

    def _bounded(self, turns: list[_Turn]) -> list[_Turn]:
        turns = turns[-self._max_turns :]
        size = sum(len(m.content) for _, t in turns for m in t)
        while turns and size > self._max_chars:
            size -= sum(len(m.content) for m in turns.pop(0)[1])
        return turns

    async def _load_turns(self, context_id: str) -> tuple[list[_Turn], str | None]:
        raw, etag = await self._store.get_state(
            self._store_name, keys.history(context_id), call_timeout=self._timeout
        )
        if raw is None:
            return [], etag
        try:
            turns = [_parse_turn(stored) for stored in json.loads(raw)]
        except (ValueError, KeyError, TypeError):
            log.warning("history of context %s unreadable; starting afresh", context_id)
            return [], etag
        return turns, etag


# A stored turn: the request it answered ("" when stored before ids were kept), messages.
_Turn = tuple[str, list[ChatMessage]]


def _parse_turn(stored: object) -> _Turn:
    if isinstance(stored, dict):
        request_id, messages = str(stored["request_id"]), stored["messages"]
    else:
        request_id, messages = "", stored  # the earlier format: a bare list of messages
    if not isinstance(messages, list):
        raise TypeError("a stored turn holds a list of messages")
    return request_id, [ChatMessage(m["role"], m["content"]) for m in messages]
