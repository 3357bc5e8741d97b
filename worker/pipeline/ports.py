"""What the pipeline needs from the sidecar, as protocols the transport implements."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from worker.contract.envelopes import Publication
from worker.errors import SidecarError

__all__ = [
    "BulkEventSink",
    "BulkStateStore",
    "EventSink",
    "StateRead",
    "StateStore",
    "SubmittingSink",
]


class EventSink(Protocol):
    async def publish(self, publication: Publication, *, call_timeout: float | None = None) -> None:
        """Returns once the sidecar acknowledged the event; raises `SidecarError`
        (also when `timeout` seconds pass first)."""
        ...


@runtime_checkable
class SubmittingSink(EventSink, Protocol):
    def submit(
        self, publication: Publication, *, call_timeout: float | None = None
    ) -> asyncio.Future[None]:
        """Queue `publication` without waiting; the future settles with its outcome."""
        ...


class BulkEventSink(EventSink, Protocol):
    async def publish_bulk(
        self, publications: Sequence[Publication], *, call_timeout: float | None = None
    ) -> dict[int, str]:
        """Publishes events of one pubsub and topic in one call, in no particular order.

        Returns the events the sidecar could not publish (index -> error); raises
        `SidecarError` when the whole call failed (then none may be taken as published).
        """
        ...


# A key's value and ETag; (None, None) when it is absent.
StateRead = tuple[bytes | None, str | None]


class StateStore(Protocol):
    """Every call takes a `timeout` (seconds): past it, it raises `SidecarError`."""

    async def get_state(
        self, store: str, key: str, *, call_timeout: float | None = None
    ) -> tuple[bytes | None, str | None]:
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
        call_timeout: float | None = None,
    ) -> None:
        """First-write-wins with `etag` (or with `create_only`, for a key that must not
        exist yet): raises `EtagMismatch` when someone else wrote first. Redis reports
        any error of such a write as a mismatch too: a mismatch is a reason to look
        again, not proof that someone else wrote."""
        ...

    async def delete_state(
        self, store: str, key: str, *, etag: str | None = None, call_timeout: float | None = None
    ) -> None: ...


class BulkStateStore(StateStore, Protocol):
    async def get_bulk_state(
        self, store: str, keys: Sequence[str], *, call_timeout: float | None = None
    ) -> dict[str, StateRead | SidecarError]:
        """Every key's read, in one call: its value and ETag, or the error reading it.

        Raises `SidecarError` when the whole call failed.
        """
        ...
