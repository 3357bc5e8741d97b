"""The worker's runtime: owns every turn's task, bounds concurrency, drains on shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from worker.contract.envelopes import InboundMessage
from worker.errors import ShuttingDown
from worker.observability.metrics import Metrics
from worker.pipeline.outcome import Outcome, unfinished

__all__ = ["Server", "Worker"]

log = logging.getLogger(__name__)


class MessageHandler(Protocol):
    async def handle(
        self,
        message: InboundMessage,
        slot: Callable[[], AbstractAsyncContextManager[None]],
    ) -> Outcome:
        """Handles `message`, doing its work inside `slot()` (a bounded concurrency slot)."""
        ...


class Server(Protocol):
    async def start(self) -> None: ...

    async def stop(self, grace: float | None) -> None: ...


class Worker:
    """Runs each delivery as a task of one TaskGroup, at most `max_concurrent` at a time.

    Dapr's gRPC delivery is not throttled by `app-max-concurrency`, so the bound lives
    here: deliveries beyond it wait for a slot (the sidecar holds them, unacknowledged).
    The handler takes the slot itself, once it knows the delivery can start (its
    conversation is free here), so one busy conversation cannot hold every slot.
    On shutdown new deliveries get RETRY at once, in-flight turns get `grace` seconds to
    finish, and what is still running then is cancelled and answered RETRY.
    """

    def __init__(
        self,
        handler: MessageHandler,
        *,
        topics: Collection[str] = (),
        max_concurrent: int,
        grace: float,
        metrics: Metrics | None = None,
    ) -> None:
        self._handler = handler
        # Metric labels only from this set: a caller cannot mint label values at will.
        self._topics = frozenset(topics)
        self._metrics = metrics
        self._slots = asyncio.Semaphore(max_concurrent)
        self._grace = grace
        self._group: asyncio.TaskGroup | None = None
        self._inflight: set[asyncio.Task[Outcome]] = set()
        self._accepting = False

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    async def run(self, server: Server, shutdown: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            self._accepting = True
            await server.start()
            try:
                await shutdown.wait()
            finally:
                self._accepting = False
                await self._drain()
                # Short grace: only the RETRY answers of cancelled turns are still to go out.
                await server.stop(grace=2.0)
                self._group = None

    async def deliver(self, message: InboundMessage) -> Outcome:
        log.debug("delivery of %s on %s", message.id, message.topic)
        if not self._accepting or self._group is None:
            return unfinished()
        task = self._group.create_task(self._process(message))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        try:
            # Shielded: the sidecar may give up on this call (Redis's processingTimeout
            # cancels it) while the turn streams on. The turn goes on to its end; the
            # redelivered copy then finds it done (or waits for it) and acknowledges it.
            outcome = await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the call was cancelled: nobody is waiting for this answer
            outcome = unfinished()  # cut short by shutdown
        if self._metrics is not None:
            topic = message.topic if message.topic in self._topics else "other"
            self._metrics.messages.labels(topic, outcome.value).inc()
        return outcome

    async def _process(self, message: InboundMessage) -> Outcome:
        return await self._handler.handle(message, self._slot)

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        async with self._slots:
            if not self._accepting:
                raise ShuttingDown("shutting down: not started")
            if self._metrics is not None:
                self._metrics.in_flight.inc()
            try:
                yield
            finally:
                if self._metrics is not None:
                    self._metrics.in_flight.dec()

    async def _drain(self) -> None:
        if not self._inflight:
            return
        log.info("shutting down: waiting up to %.1fs for %d streams", self._grace, self.in_flight)
        _, pending = await asyncio.wait(set(self._inflight), timeout=self._grace)
        if pending:
            log.warning("grace period over: %d streams answered RETRY", len(pending))
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)
