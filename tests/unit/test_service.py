"""The runtime: bounded concurrency and graceful shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

import pytest
from prometheus_client import generate_latest

from worker.contract.envelopes import InboundMessage
from worker.errors import WorkerError
from worker.observability.metrics import Metrics
from worker.pipeline.outcome import Outcome, OutcomePolicy
from worker.service import Worker


@dataclass
class SlowHandler:
    seconds: float
    running: int = 0
    peak: int = 0
    finished: list[str] = field(default_factory=list)

    async def handle(
        self, message: InboundMessage, slot: Callable[[], AbstractAsyncContextManager[None]]
    ) -> Outcome:
        try:
            async with slot():
                self.running += 1
                self.peak = max(self.peak, self.running)
                try:
                    await asyncio.sleep(self.seconds)
                finally:
                    self.running -= 1
        except WorkerError as exc:
            return OutcomePolicy().decide(message.id, exc)
        self.finished.append(message.id)
        return Outcome.SUCCESS


@dataclass
class NullServer:
    started: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: bool = False

    async def start(self) -> None:
        self.started.set()

    async def stop(self, grace: float | None) -> None:
        self.stopped = True


def _message(n: int) -> InboundMessage:
    return InboundMessage(
        id=f"m{n}", topic="prompts", data=b"{}", data_content_type="application/json"
    )


async def _running(
    worker: Worker, shutdown: asyncio.Event, server: NullServer
) -> asyncio.Task[None]:
    task = asyncio.create_task(worker.run(server, shutdown))
    await server.started.wait()
    return task


async def test_concurrency_is_bounded() -> None:
    handler = SlowHandler(0.02)
    worker = Worker(handler, max_concurrent=3, grace=1)
    shutdown, server = asyncio.Event(), NullServer()
    run = await _running(worker, shutdown, server)
    outcomes = await asyncio.gather(*(worker.deliver(_message(n)) for n in range(10)))
    shutdown.set()
    await run
    assert outcomes == [Outcome.SUCCESS] * 10
    assert handler.peak == 3
    assert server.stopped


async def test_shutdown_finishes_streams_within_grace() -> None:
    handler = SlowHandler(0.1)
    worker = Worker(handler, max_concurrent=10, grace=2)
    shutdown, server = asyncio.Event(), NullServer()
    run = await _running(worker, shutdown, server)
    deliveries = [asyncio.create_task(worker.deliver(_message(n))) for n in range(3)]
    await asyncio.sleep(0.01)
    shutdown.set()
    assert await worker.deliver(_message(99)) == Outcome.RETRY  # no new work once stopping
    assert await asyncio.gather(*deliveries) == [Outcome.SUCCESS] * 3
    await run
    assert sorted(handler.finished) == ["m0", "m1", "m2"]


async def test_streams_beyond_grace_are_answered_retry() -> None:
    handler = SlowHandler(10)
    worker = Worker(handler, max_concurrent=1, grace=0.1)
    shutdown, server = asyncio.Event(), NullServer()
    run = await _running(worker, shutdown, server)
    running = asyncio.create_task(worker.deliver(_message(1)))
    queued = asyncio.create_task(worker.deliver(_message(2)))
    await asyncio.sleep(0.02)
    shutdown.set()
    outcomes = await asyncio.wait_for(asyncio.gather(running, queued), 2)
    assert list(outcomes) == [Outcome.RETRY, Outcome.RETRY]
    await run
    assert handler.finished == []


async def test_a_delivery_given_up_by_the_sidecar_still_runs_to_its_end() -> None:
    handler = SlowHandler(0.1)
    worker = Worker(handler, max_concurrent=10, grace=1)
    shutdown, server = asyncio.Event(), NullServer()
    run = await _running(worker, shutdown, server)
    call = asyncio.create_task(worker.deliver(_message(1)))
    await asyncio.sleep(0.02)
    call.cancel()  # what grpc does when the sidecar cancels the call
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.15)
    assert handler.finished == ["m1"]
    shutdown.set()
    await run


@dataclass
class _Answering:
    async def handle(
        self, message: InboundMessage, slot: Callable[[], AbstractAsyncContextManager[None]]
    ) -> Outcome:
        return Outcome.SUCCESS


async def test_metric_labels_come_only_from_the_subscribed_topics() -> None:
    metrics = Metrics()
    worker = Worker(_Answering(), topics={"prompts"}, max_concurrent=2, grace=1, metrics=metrics)
    shutdown, server = asyncio.Event(), NullServer()
    task = await _running(worker, shutdown, server)
    for topic in ("prompts", "invented-1", "invented-2"):
        message = InboundMessage(
            id=topic, topic=topic, data=b"{}", data_content_type="application/json"
        )
        assert await worker.deliver(message) is Outcome.SUCCESS
    shutdown.set()
    await task
    exposition = generate_latest(metrics.registry).decode()
    assert 'topic="prompts"' in exposition
    assert 'topic="other"' in exposition
    assert "invented" not in exposition
