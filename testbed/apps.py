"""A consumer app for tests: the worker's own app-callback server, recording deliveries."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from testbed.net import free_port
from worker.contract.envelopes import InboundMessage
from worker.pipeline.outcome import Outcome
from worker.transport.dapr import AppServer, Subscription

__all__ = ["RecordingApp"]


@dataclass
class RecordingApp:
    """Subscribes to `routes`; every delivery is queued and answered with `outcome`."""

    routes: Sequence[Subscription]
    outcome: Outcome = Outcome.SUCCESS
    received: asyncio.Queue[InboundMessage] = field(default_factory=asyncio.Queue)
    port: int = 0
    _server: AppServer | None = None

    async def _record(self, message: InboundMessage) -> Outcome:
        await self.received.put(message)
        return self.outcome

    async def start(self) -> int:
        self.port = free_port()
        self._server = AppServer(
            host="127.0.0.1", port=self.port, subscriptions=self.routes, handler=self._record
        )
        await self._server.start()
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)

    async def next_event(self, timeout: float = 20) -> InboundMessage:
        return await asyncio.wait_for(self.received.get(), timeout)
