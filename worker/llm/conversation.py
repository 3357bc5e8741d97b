"""Any Dapr conversation component (echo, openai, anthropic, ollama, ...) via ConverseAlpha2.

Released Dapr has no streaming conversation RPC: the whole reply arrives at once and
becomes one delta. A streaming RPC, once Dapr ships one, is another backend beside this.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Protocol

from worker.llm.base import ChatMessage, Finish, LLMRequest, StreamItem, TextDelta, Usage

__all__ = ["ConversationBackend", "ConversationReply", "Converser"]


@dataclass(frozen=True, slots=True)
class ConversationReply:
    text: str
    finish_reason: str
    model: str | None
    usage: Usage | None


class Converser(Protocol):
    """The sidecar's conversation API, as the transport offers it."""

    async def converse(
        self,
        component: str,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None,
        scrub_pii: bool,
    ) -> ConversationReply: ...


@dataclass(frozen=True, slots=True)
class ConversationBackend:
    name: str
    converser: Converser
    model: str | None = None
    # Which provider the component calls is the component's business, not ours.
    provider: str = "dapr"
    # Dapr scrubs the reply itself when asked (the pipeline has scrubbed the inputs).
    scrubs_pii: bool = True
    # Dapr 1.18's ConversationRequestAlpha2 has no max_tokens field.
    honours_max_tokens: bool = False

    async def stream(self, request: LLMRequest) -> AsyncGenerator[StreamItem, None]:
        reply = await self.converser.converse(
            self.name,
            request.messages,
            temperature=request.temperature,
            scrub_pii=request.scrub_pii,
        )
        if reply.text:
            yield TextDelta(reply.text)
        if reply.usage is not None:
            yield reply.usage
        yield Finish(reply.finish_reason or "stop")
