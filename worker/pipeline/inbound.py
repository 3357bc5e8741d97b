"""A pub/sub delivery as the pipeline sees it, free of any transport type."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["InboundMessage"]

# W3C Trace Context: version-traceid-parentid-flags, lowercase hex. Anything else in a
# delivered event (a newline, a non-ASCII character) is not a trace and must not travel
# on as gRPC metadata or into our events.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


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
        value = self.extensions.get("traceparent")
        if not isinstance(value, str) or not _TRACEPARENT.fullmatch(value):
            return None
        version, trace_id, parent_id, _ = value.split("-")
        if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
            return None  # invalid by the spec
        return value
