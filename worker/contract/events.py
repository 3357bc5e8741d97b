"""Response events (section 2 of the contract): their data models and CloudEvent envelope."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar, Literal

from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Cancelled",
    "Chunk",
    "Completed",
    "EventType",
    "Failed",
    "ResponseEvent",
    "Started",
    "UsageReport",
    "event_id",
    "to_cloudevent",
]

FailureCode = Literal[
    "invalid_prompt", "unknown_component", "llm_unavailable", "llm_error", "timeout", "internal"
]


class EventType(StrEnum):
    STARTED = "llm.stream.started.v1"
    CHUNK = "llm.stream.chunk.v1"
    USAGE = "llm.stream.usage.v1"
    COMPLETED = "llm.stream.completed.v1"
    FAILED = "llm.stream.failed.v1"
    CANCELLED = "llm.stream.cancelled.v1"


class ResponseEvent(BaseModel):
    """Fields every event's `data` carries; `data` is authoritative over extensions."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: ClassVar[EventType]
    terminal: ClassVar[bool] = False

    context_id: str
    request_id: str
    attempt: int = Field(ge=1)
    seq: int = Field(ge=1)


class Started(ResponseEvent):
    type = EventType.STARTED
    llm_component: str
    model: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    restarted: bool = False


class Chunk(ResponseEvent):
    type = EventType.CHUNK
    index: int = Field(ge=0)
    text: str


class UsageReport(ResponseEvent):
    type = EventType.USAGE
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)
    source: Literal["provider", "estimated"]


class Completed(ResponseEvent):
    type = EventType.COMPLETED
    terminal = True
    finish_reason: str
    chunks: int = Field(ge=0)
    text_length: int = Field(ge=0)


class Failed(ResponseEvent):
    type = EventType.FAILED
    terminal = True
    code: FailureCode
    message: str
    retryable: bool


class Cancelled(ResponseEvent):
    type = EventType.CANCELLED
    terminal = True
    reason: str


def event_id(request_id: str, attempt: int, seq: int) -> str:
    """Stable across republishes, so consumers can de-duplicate by id."""
    return f"{request_id}:{attempt}:{seq}"


def to_cloudevent(event: ResponseEvent, *, source: str, traceparent: str | None) -> bytes:
    """The structured-mode JSON (application/cloudevents+json) of one response event."""
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id(event.request_id, event.attempt, event.seq),
        "source": source,
        "type": event.type.value,
        "subject": event.context_id,
        "partitionkey": event.context_id,
        # Zero-padded so that string order is numeric order (extensions travel as strings).
        "sequence": f"{event.seq:010d}",
        "datacontenttype": "application/json",
    }
    if traceparent:
        attributes["traceparent"] = traceparent
    _, body = to_structured(CloudEvent(attributes, event.model_dump(mode="json")))
    return body
