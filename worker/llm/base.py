"""The interface every LLM backend implements.

A backend turns one request into an async stream of items: text deltas as they come,
at most one `Usage` (when the provider reports it) and one `Finish`. Closing the
iterator early (`aclose()`) must close the underlying call, so a cancelled turn stops
paying for tokens. A backend that returns the whole reply at once simply yields one delta.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "ChatMessage",
    "Finish",
    "LLMBackend",
    "LLMRequest",
    "StreamItem",
    "TextDelta",
    "Usage",
]

Role = Literal["system", "developer", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class LLMRequest:
    messages: Sequence[ChatMessage]
    temperature: float | None = None
    max_tokens: int | None = None
    # The messages are scrubbed already when this is set; a backend whose `scrubs_pii` is
    # true scrubs the reply itself, other backends' replies are scrubbed by the pipeline.
    scrub_pii: bool = False
    # The prompt's W3C trace context, for backends that call out over HTTP.
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str


StreamItem = TextDelta | Usage | Finish


class LLMBackend(Protocol):
    """One configured LLM; `name` is what a prompt's `llm_component` selects."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str | None: ...

    @property
    def provider(self) -> str:
        """`gen_ai.provider.name` of the OpenTelemetry GenAI conventions (`openai`, ...)."""
        ...

    @property
    def scrubs_pii(self) -> bool:
        """True when the backend scrubs the reply itself (Dapr's conversation `scrub_pii`)."""
        ...

    @property
    def honours_max_tokens(self) -> bool:
        """False when the backend has no way to pass `max_tokens` on: such prompts are refused."""
        ...

    def stream(self, request: LLMRequest) -> AsyncGenerator[StreamItem, None]:
        """Stream the reply; raises `LLMUnavailable`, `LLMError` or `LLMTimeout`."""
        ...
