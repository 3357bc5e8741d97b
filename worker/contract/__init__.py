"""The wire contract (shared/contract.md) as pydantic models: the single source of its schema."""

from worker.contract.events import EventType, ResponseEvent
from worker.contract.prompt import CancelRequest, Message, Prompt

__all__ = ["CancelRequest", "EventType", "Message", "Prompt", "ResponseEvent"]
