"""W3C trace context as a CloudEvent carries it (`traceparent`, `tracestate`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["TraceContext"]

# W3C Trace Context: `version-traceid-parentid-flags` in lowercase hex; a tracestate of
# list members in printable ASCII, at most 512 characters.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_TRACESTATE = re.compile(r"[\x20-\x7e]{1,512}")


@dataclass(frozen=True, slots=True)
class TraceContext:
    """W3C trace context: what a CloudEvent carries as `traceparent` and `tracestate`."""

    traceparent: str | None = None
    tracestate: str | None = None

    @classmethod
    def of(cls, extensions: Mapping[str, object]) -> TraceContext:
        """The trace context of an inbound CloudEvent's extension attributes.

        Only a well-formed context is kept. The attributes are whatever the publisher
        wrote; one with a newline or a non-ASCII character, passed on as gRPC metadata
        or an HTTP header, would be refused there (it once ended the process).
        """
        parent = extensions.get("traceparent")
        if not isinstance(parent, str) or not _TRACEPARENT.fullmatch(parent):
            return cls()
        version, trace_id, parent_id, _ = parent.split("-")
        if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
            return cls()  # invalid by the spec
        state = extensions.get("tracestate")
        if not isinstance(state, str) or not _TRACESTATE.fullmatch(state):
            state = None
        return cls(parent, state)

    @property
    def trace_id(self) -> str | None:
        parts = (self.traceparent or "").split("-")
        return parts[1] if len(parts) >= 4 and len(parts[1]) == 32 else None
