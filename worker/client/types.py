"""What the client hands back: the contract's stream dicts and an OpenAI-style response."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NotRequired, TypedDict

__all__ = [
    "ChatCompletion",
    "ChatCompletionMessage",
    "Choice",
    "CompletionUsage",
    "ContentEvent",
    "ContextIdEvent",
    "FinalUsageEvent",
    "StreamEvent",
    "UsageData",
]


class UsageData(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ContextIdEvent(TypedDict):
    """From `started`. A second one with `restarted: True` begins a new attempt:
    discard the content received so far (contract section 3.5)."""

    type: Literal["context_id"]
    data: str
    restarted: NotRequired[bool]


class ContentEvent(TypedDict):
    """From `chunk`: the next piece of the reply."""

    type: Literal["content"]
    data: str


class FinalUsageEvent(TypedDict):
    """From `usage`: the token counts of the turn."""

    type: Literal["final_usage"]
    data: UsageData


StreamEvent = ContextIdEvent | ContentEvent | FinalUsageEvent


@dataclass(frozen=True, slots=True)
class CompletionUsage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    # "provider" or "estimated" (the worker estimates where the provider reports none).
    source: str = "provider"

    def as_dict(self) -> UsageData:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class ChatCompletionMessage:
    content: str
    role: Literal["assistant"] = "assistant"


@dataclass(frozen=True, slots=True)
class Choice:
    message: ChatCompletionMessage
    finish_reason: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class ChatCompletion:
    """The whole reply, shaped like OpenAI's: `.choices[0].message.content`, `.usage`."""

    id: str  # the request id
    context_id: str
    choices: list[Choice]
    usage: CompletionUsage | None
    model: str | None = None
    llm_component: str | None = None
    # How many attempts the worker needed; more than 1 after a restart (section 3.5).
    attempt: int = 1
    object: Literal["chat.completion"] = field(default="chat.completion")
