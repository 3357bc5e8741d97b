"""A pub/sub delivery as the pipeline sees it, free of any transport type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from worker.observability.tracing import TraceContext

__all__ = ["InboundMessage"]


@dataclass(frozen=True, slots=True)
class InboundMessage:
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
