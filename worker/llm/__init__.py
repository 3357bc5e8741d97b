"""LLM backends behind one small interface (`LLMBackend`)."""

from worker.llm.base import Finish, LLMBackend, LLMRequest, StreamItem, TextDelta, Usage

__all__ = ["Finish", "LLMBackend", "LLMRequest", "StreamItem", "TextDelta", "Usage"]
