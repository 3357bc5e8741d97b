"""A minimal gRPC app callback that records what the real sidecar delivers to it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc
from google.protobuf import empty_pb2

from testbed.net import free_port

__all__ = ["RecordingApp", "Route"]

Status = appcallback_pb2.TopicEventResponse.TopicEventResponseStatus


@dataclass(frozen=True)
class Route:
    pubsub: str
    topic: str
    dead_letter_topic: str = ""


@dataclass
class RecordingApp(appcallback_pb2_grpc.AppCallbackServicer):
    """Subscribes to `routes`; every delivery is queued and answered with `status`."""

    routes: Sequence[Route]
    status: int = Status.SUCCESS
    received: asyncio.Queue[appcallback_pb2.TopicEventRequest] = field(
        default_factory=asyncio.Queue
    )
    port: int = 0
    _server: grpc.aio.Server | None = None

    async def ListTopicSubscriptions(
        self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext[object, object]
    ) -> appcallback_pb2.ListTopicSubscriptionsResponse:
        return appcallback_pb2.ListTopicSubscriptionsResponse(
            subscriptions=[
                appcallback_pb2.TopicSubscription(
                    pubsub_name=route.pubsub,
                    topic=route.topic,
                    dead_letter_topic=route.dead_letter_topic,
                )
                for route in self.routes
            ]
        )

    async def OnTopicEvent(
        self,
        request: appcallback_pb2.TopicEventRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> appcallback_pb2.TopicEventResponse:
        await self.received.put(request)
        return appcallback_pb2.TopicEventResponse(status=self.status)  # type: ignore[arg-type]

    async def OnInvoke(
        self, request: common_pb2.InvokeRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> common_pb2.InvokeResponse:
        return common_pb2.InvokeResponse()

    async def start(self) -> int:
        self.port = free_port()
        # Like the worker's: a dead-lettered prompt over 4 MiB must reach this app too.
        self._server = grpc.aio.server(options=[("grpc.max_receive_message_length", -1)])
        appcallback_pb2_grpc.add_AppCallbackServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self._server.start()
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)

    async def next_event(self, timeout: float = 20) -> appcallback_pb2.TopicEventRequest:
        return await asyncio.wait_for(self.received.get(), timeout)
