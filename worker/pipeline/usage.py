"""Token usage when the provider reports none: estimated, and marked so."""

from __future__ import annotations

import math
from collections.abc import Iterable

from worker.llm.base import ChatMessage, Usage

__all__ = ["estimate_tokens", "estimate_usage"]

# About four characters a token for English under common BPE tokenizers; a few
# tokens of framing per message, as chat formats add.
_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 3


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / _CHARS_PER_TOKEN) if text else 0


def estimate_usage(messages: Iterable[ChatMessage], reply: str) -> Usage:
    prompt = sum(estimate_tokens(m.content) + _TOKENS_PER_MESSAGE for m in messages)
    completion = estimate_tokens(reply)
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )
