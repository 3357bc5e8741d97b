"""Test-side calls into a sidecar's gRPC API (the worker has its own edge module)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import grpc
from dapr.proto.runtime.v1 import dapr_pb2_grpc, pubsub_pb2

__all__ = ["publish_structured"]


async def publish_structured(
    grpc_address: str,
    *,
    pubsub: str,
    topic: str,
    event: Mapping[str, Any],
    metadata: Mapping[str, str] | None = None,
    traceparent: str | None = None,
) -> None:
    """Publish `event` as a structured CloudEvent, the way the worker publishes."""
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        await stub.PublishEvent(
            pubsub_pb2.PublishEventRequest(
                pubsub_name=pubsub,
                topic=topic,
                data=json.dumps(event).encode(),
                data_content_type="application/cloudevents+json",
                metadata=dict(metadata or {}),
            ),
            metadata=(("traceparent", traceparent),) if traceparent else None,
        )
