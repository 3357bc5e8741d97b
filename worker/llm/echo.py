"""A backend that streams the user's message back word by word: for demos, tests, benchmarks.

It needs no network and no key, yet streams like a real model (one delta per word, a
configurable pause between words), so the whole pipeline can be exercised end to end.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from worker.llm.base import ChatMessage, Finish, LLMRequest, StreamItem, TextDelta

__all__ = ["EchoBackend"]

# A word with the whitespace before it (and, for the last word, after it), so the deltas
# concatenate to the exact original text.
_WORDS = re.compile(r"\s*\S+(?:\s+\Z)?")


@dataclass(frozen=True, slots=True)
class EchoBackend:
    name: str = "echo"
    delay: float = 0.05
    model: str | None = "echo"
    provider: str = "echo"

    def __post_init__(self) -> None:
        if self.delay < 0:
            raise ValueError(f"EchoBackend delay must be >= 0 seconds, got {self.delay!r}")

    @property
    def scrubs_pii(self) -> bool:
        return False

    @property
    def honours_max_tokens(self) -> bool:
        return True

    async def stream(self, request: LLMRequest) -> AsyncGenerator[StreamItem, None]:
        text = _echoed_text(request.messages)
        # Whitespace-only text has no word but is still echoed, as one delta.
        words = _WORDS.findall(text) or ([text] if text else [])
        for count, word in enumerate(words):
            if count == request.max_tokens:
                yield Finish("length")
                return
            if count:
                # sleep(0) still yields to the loop, so a fast echo cannot starve the others.
                await asyncio.sleep(self.delay)
            yield TextDelta(word)
        # No Usage: the pipeline estimates token counts when a backend reports none.
        yield Finish("stop")


def _echoed_text(messages: Sequence[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return message.content
    return messages[-1].content if messages else ""
