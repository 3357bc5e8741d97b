"""The consumer app: stamps every event as its sidecar hands it over."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import grpc
from dapr.proto.runtime.v1 import appcallback_pb2, dapr_pb2_grpc, pubsub_pb2

from bench.config import LIMIT_TYPE, TERMINAL_TYPES
from testbed.net import free_port
from worker.contract.envelopes import InboundMessage
from worker.pipeline.outcome import Outcome
from worker.transport.dapr import AppServer, Subscription

__all__ = ["Recorder", "Status"]


Status = appcallback_pb2.TopicEventResponse.TopicEventResponseStatus


class Recorder:
    """The consumer app: stamps and keeps every event; counts terminal ones.

    Two ways to receive, as a downstream service would: `streaming` (the default) holds
    one streaming subscription per topic on its sidecar (what `worker.client` uses), and
    `callback` is an app-callback gRPC server that the sidecar calls once per event.
    The consumer shares the machine with what it measures, so the lighter one is the
    default: a unary call per event costs this Python process about twice the CPU.
    """

    def __init__(self, topics: Sequence[str], mode: str = "streaming") -> None:
        self.topics = topics
        self.mode = mode
        self.events: list[tuple[float, str, bytes]] = []
        self.terminal = 0
        self.limit_events = 0
        self.last_limit_at = 0.0
        self.limit_samples: list[tuple[float, bytes]] = []
        self._server: AppServer | None = None
        self._calls: list[Any] = []
        self._readers: list[asyncio.Task[None]] = []

    def record(self, now: float, kind: str, data: bytes) -> None:
        if kind == LIMIT_TYPE:  # the limit reference: only counted
            self.limit_events += 1
            self.last_limit_at = now
            if self.limit_events % 10 == 1:  # every tenth, for the latency floor
                self.limit_samples.append((now, data))
        else:
            self.events.append((now, kind, data))
            # The naive app's last event: {"kind": "completed", ...}, reserialized by daprd.
            if kind in TERMINAL_TYPES or b'"completed"' in data[:24]:
                self.terminal += 1

    async def _delivered(self, message: InboundMessage) -> Outcome:
        self.record(time.monotonic(), message.type, message.data)
        return Outcome.SUCCESS

    async def subscribe(self, stub: dapr_pb2_grpc.DaprStub) -> None:
        """In `streaming` mode: one subscription per topic, live once this returns."""
        if self.mode != "streaming":
            return
        for topic in self.topics:
            call = stub.SubscribeTopicEventsAlpha1()
            await call.write(
                pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
                    initial_request=pubsub_pb2.SubscribeTopicEventsRequestInitialAlpha1(
                        pubsub_name="pubsub", topic=topic
                    )
                )
            )
            first = await call.read()
            if first is grpc.aio.EOF or not first.HasField("initial_response"):
                raise RuntimeError(f"streaming subscription to {topic} not confirmed")
            self._calls.append(call)
            self._readers.append(asyncio.create_task(self._read(call)))

    async def _read(self, call: Any) -> None:
        success = appcallback_pb2.TopicEventResponse(status=Status.SUCCESS)
        while (response := await call.read()) is not grpc.aio.EOF:
            event = response.event_message
            self.record(time.monotonic(), event.type, event.data)
            await call.write(
                pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
                    event_processed=pubsub_pb2.SubscribeTopicEventsRequestProcessedAlpha1(
                        id=event.id, status=success
                    )
                )
            )

    async def start(self) -> int:
        """The worker's own app-callback server, on a free port (its sidecar waits for
        one); it subscribes to the topics in `callback` mode only."""
        port = free_port()
        callback = self.mode == "callback"
        self._server = AppServer(
            host="127.0.0.1",
            port=port,
            subscriptions=[Subscription("pubsub", topic) for topic in self.topics if callback],
            handler=self._delivered,
        )
        await self._server.start()
        return port

    async def stop(self) -> None:
        for call in self._calls:
            call.cancel()
        for reader in self._readers:
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader
        if self._server is not None:
            await self._server.stop(grace=None)

    def reset(self) -> None:
        self.events = []
        self.terminal = 0
