"""Response events for tests, built from the contract's models (`worker.contract.events`)
and handed over in the shape each consumer reads: a consumer `Event`, a delivered
`InboundMessage`, or a structured CloudEvent as daprd POSTs it.

A test that needs an event the worker could never publish (a malformed one) writes
its dict by hand, so that it stands out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from worker.client.consumer import Event
from worker.contract.envelopes import InboundMessage
from worker.contract.events import EVENT_MODELS, EventEncoder, ResponseEvent, event_id

__all__ = ["MODELS", "as_cloudevent", "as_event", "as_inbound", "response_event", "turn"]

Terminal = Literal["completed", "failed", "cancelled"]
SOURCE = "/llm-stream-worker"

# "started", "chunk", "usage", ... -> the model of that type.
MODELS = {model.type.value.split(".")[2]: model for model in EVENT_MODELS}


def response_event(
    kind: str, request_id: str, attempt: int, seq: int, *, context_id: str = "ctx-1", **own: Any
) -> ResponseEvent:
    """One event of `kind` ("started", "chunk", "usage", "completed", ...), as the model
    validates it: a field the contract requires and the test forgot fails here."""
    return MODELS[kind](
        context_id=context_id, request_id=request_id, attempt=attempt, seq=seq, **own
    )


def turn(
    request_id: str,
    chunks: Sequence[str],
    *,
    attempt: int = 1,
    terminal: Terminal | None = "completed",
    context_id: str = "ctx-1",
    usage: Mapping[str, Any] | None = None,
    **terminal_fields: Any,
) -> list[ResponseEvent]:
    """One attempt of a turn, in seq order, as the worker publishes it: started, a chunk
    per text, usage, the terminal event. `terminal=None`: it died before its usage."""

    def event(kind: str, **own: Any) -> ResponseEvent:
        return response_event(
            kind, request_id, attempt, len(events) + 1, context_id=context_id, **own
        )

    events: list[ResponseEvent] = []
    events.append(event("started", llm_component="echo", model="echo-model", restarted=attempt > 1))
    for index, text in enumerate(chunks):
        events.append(event("chunk", index=index, text=text))
    if terminal is None:
        return events
    counts: dict[str, Any] = {
        "prompt_tokens": 4,
        "completion_tokens": len(chunks),
        "source": "provider",
    }
    counts.update(usage or {})
    counts.setdefault("total_tokens", counts["prompt_tokens"] + counts["completion_tokens"])
    events.append(event("usage", **counts))
    defaults: dict[str, dict[str, Any]] = {
        "completed": {
            "finish_reason": "stop",
            "chunks": len(chunks),
            "text_length": len("".join(chunks)),
        },
        "failed": {"code": "llm_error", "message": "the LLM said no", "retryable": False},
        "cancelled": {"reason": "cancelled by request"},
    }
    events.append(event(terminal, **{**defaults[terminal], **terminal_fields}))
    return events


def as_event(event: ResponseEvent) -> Event:
    """As a consumer (the `Reassembler`) is fed it."""
    return Event(
        type=event.type.value,
        data=event.model_dump(mode="json"),
        id=event_id(event.request_id, event.attempt, event.seq),
    )


def as_inbound(event: ResponseEvent, topic: str = "responses") -> InboundMessage:
    """As a streaming subscription on the sidecar delivers it (the client's transport)."""
    return InboundMessage(
        id=event_id(event.request_id, event.attempt, event.seq),
        topic=topic,
        data=json.dumps(event.model_dump(mode="json")).encode(),
        data_content_type="application/json",
        type=event.type.value,
    )


def as_cloudevent(event: ResponseEvent) -> dict[str, Any]:
    """The structured CloudEvent the worker publishes (what daprd hands an app's route)."""
    encoder = EventEncoder(
        context_id=event.context_id,
        request_id=event.request_id,
        attempt=event.attempt,
        source=SOURCE,
        traceparent=None,
    )
    envelope: dict[str, Any] = json.loads(encoder.encode(event))
    return envelope
