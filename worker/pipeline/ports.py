"""What the pipeline needs from the sidecar, as protocols the transport implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["BulkEntry", "BulkEventSink", "EventSink", "StateStore"]


class EventSink(Protocol):
    async def publish(
        self,
        *,
        pubsub: str,
        topic: str,
        data: bytes,
        content_type: str,
        metadata: Mapping[str, str],
        traceparent: str | None = None,
    ) -> None:
        """Returns once the sidecar acknowledged the event; raises `SidecarError`.

        `traceparent` goes with the call, for the sidecar's span (the event carries its own).
        """
        ...


@dataclass(frozen=True, slots=True)
class BulkEntry:
    """One event of a bulk publish; `entry_id` is unique within the call."""

    entry_id: str
    data: bytes
    content_type: str
    metadata: Mapping[str, str]


class BulkEventSink(EventSink, Protocol):
    async def publish_bulk(
        self, *, pubsub: str, topic: str, entries: Sequence[BulkEntry]
    ) -> dict[str, str]:
        """Publishes the entries in one call, in no particular order between them.

        Returns the entries the sidecar could not publish (entry id -> error); raises
        `SidecarError` when the whole call failed (then none may be taken as published).
        """
        ...


class StateStore(Protocol):
    async def get_state(self, store: str, key: str) -> tuple[bytes | None, str | None]:
        """The value and its ETag, or (None, None) when the key is absent."""
        ...

    async def save_state(
        self,
        store: str,
        key: str,
        value: bytes,
        *,
        etag: str | None = None,
        create_only: bool = False,
        ttl_seconds: int | None = None,
    ) -> None:
        """First-write-wins with `etag` (or with `create_only`, for a key that must not
        exist yet): raises `EtagMismatch` when someone else wrote first."""
        ...

    async def delete_state(self, store: str, key: str, *, etag: str | None = None) -> None: ...
