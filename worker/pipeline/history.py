"""Context continuity: completed turns kept per context id in the Dapr state store.

Bounded by turns and characters (oldest dropped first) and by a TTL, so a
conversation's state never grows without limit. Stored text is what the LLM saw,
so a scrubbed prompt is stored scrubbed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from worker.errors import EtagMismatch
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
    ) -> None:
        self._store = store
        self._store_name = store_name
        self._max_turns = max_turns
        self._max_chars = max_chars
        self._ttl = ttl_seconds

    async def load(self, context_id: str) -> list[ChatMessage]:
        turns, _ = await self._load_turns(context_id)
        return [message for turn in turns for message in turn]

    async def append(self, context_id: str, prompt: Sequence[ChatMessage], reply: str) -> None:
        if self._max_turns == 0:
            return
        turn = [m for m in prompt if m.role not in _LEADING_ROLES]
        turn.append(ChatMessage("assistant", reply))
        # One turn at a time per context makes a race rare; the ETag makes it harmless.
        for _ in range(3):
            turns, etag = await self._load_turns(context_id)
            turns = self._bounded([*turns, turn])
            value = json.dumps(
                [[{"role": m.role, "content": m.content} for m in t] for t in turns]
            ).encode()
            try:
                await self._store.save_state(
                    self._store_name,
                    keys.history(context_id),
                    value,
                    etag=etag,
                    create_only=etag is None,
                    ttl_seconds=self._ttl,
                )
                return
            except EtagMismatch:
                continue
        log.warning("history of context %s not saved: kept changing under us", context_id)

    def _bounded(self, turns: list[list[ChatMessage]]) -> list[list[ChatMessage]]:
        turns = turns[-self._max_turns :]
        size = sum(len(m.content) for t in turns for m in t)
        while turns and size > self._max_chars:
            size -= sum(len(m.content) for m in turns.pop(0))
        return turns

    async def _load_turns(self, context_id: str) -> tuple[list[list[ChatMessage]], str | None]:
        raw, etag = await self._store.get_state(self._store_name, keys.history(context_id))
        if raw is None:
            return [], etag
        try:
            stored = json.loads(raw)
            turns = [[ChatMessage(m["role"], m["content"]) for m in turn] for turn in stored]
        except (ValueError, KeyError, TypeError):
            log.warning("history of context %s unreadable; starting afresh", context_id)
            return [], etag
        return turns, etag
