"""A pub/sub delivery as the pipeline sees it, free of any transport type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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

    @property
    def traceparent(self) -> str | None:
        """The prompt's trace context, or None when it carries none worth continuing."""
        return TraceContext.of(self.extensions).traceparent
