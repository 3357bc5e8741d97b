"""What the client needs from the sidecar; `SidecarClient` has it, tests pass fakes."""

from __future__ import annotations

from collections.abc import AsyncIterable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from worker.pipeline.inbound import InboundMessage
from worker.pipeline.ports import Publication

__all__ = ["Subscriber", "Transport"]


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
    async def wait_ready(self, seconds: float) -> None: ...

    async def publish(
        self, publication: Publication, *, call_timeout: float | None = None
    ) -> None: ...
