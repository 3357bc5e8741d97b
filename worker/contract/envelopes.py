"""What passes between an app and its Dapr sidecar, free of any transport type.

A `Publication` is one event on its way out; an `InboundMessage` one CloudEvent
delivered. The worker, the client and the gateway build and read these; only the
transport turns them into the sidecar's own messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from worker.contract.trace import TraceContext

__all__ = ["CLOUDEVENTS_JSON", "InboundMessage", "Publication"]

CLOUDEVENTS_JSON = "application/cloudevents+json"


@dataclass(frozen=True, slots=True)
class Publication:
    """One event on its way out: made by a turn's event stream, sent unchanged.

    `traceparent` goes with the sidecar call, for the sidecar's span (the event data
    carries its own); `kind` names the event for metrics and logs.
    """

    pubsub: str
    topic: str
    data: bytes
    event_id: str
    kind: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    traceparent: str | None = None
    content_type: str = CLOUDEVENTS_JSON


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A pub/sub delivery: the CloudEvent's id, type, data and extension attributes."""

    id: str  # the CloudEvent id Dapr delivered
    topic: str
    data: bytes
    data_content_type: str
    type: str = ""  # the CloudEvent type
    extensions: Mapping[str, object] = field(default_factory=dict)
    # CloudEvent attributes the worker does not act on, kept for consumers of the app
    # server that check what the sidecar delivered (the tests' and the bench's apps).
    source: str = ""
    spec_version: str = ""

    @property
    def traceparent(self) -> str | None:
        """The prompt's trace context, or None when it carries none worth continuing."""
        return TraceContext.of(self.extensions).traceparent

    @property
    def published_at(self) -> float | None:
        """When it was published (the CloudEvent `time` its publisher's sidecar stamped),
        as a Unix time: the same on every redelivery, whichever replica receives it."""
        value = self.extensions.get("time")
        if not isinstance(value, str) or not value:
            return None
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            return None
        return stamp.timestamp() if stamp.tzinfo is not None else None
