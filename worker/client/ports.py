"""What the client needs from the sidecar; `SidecarClient` has it, tests pass fakes.

`worker.transport.sidecar.SidecarClient`, the edge the worker calls the sidecar through
too, raises the worker's `WorkerError`s; `sidecar_failures` is the one place where they
become the client's `SidecarUnavailable`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Protocol

from worker.client.errors import SidecarUnavailable
from worker.contract.envelopes import InboundMessage, Publication
from worker.errors import WorkerError

__all__ = ["Subscriber", "Transport", "sidecar_failures"]


class Subscriber(Protocol):
    def subscribe(
        self, pubsub: str, topic: str
    ) -> AbstractAsyncContextManager[AsyncIterable[InboundMessage]]:
        """A streaming subscription; entering returns once the sidecar confirmed it.

        Each event is acknowledged as it is read: the client only queues it in memory,
        and must be able to close right after the last event it wanted.
        """
        ...


class Transport(Subscriber, Protocol):
    """Raises `WorkerError` (the edge's `SidecarError`, `CallRefused`) when a call fails."""

    async def wait_ready(self, seconds: float) -> None: ...

    async def publish(
        self, publication: Publication, *, call_timeout: float | None = None
    ) -> None: ...


@contextmanager
def sidecar_failures(message: str | None = None) -> Iterator[None]:
    """A transport's failure, as `SidecarUnavailable` (with `message`, or the failure's)."""
    try:
        yield
    except WorkerError as exc:
        raise SidecarUnavailable(message or str(exc)) from exc
