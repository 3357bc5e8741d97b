"""A fault-injecting proxy in front of a real daprd's gRPC API.

It speaks the Dapr proto (every unary call is forwarded byte for byte to the real
sidecar) and fails chosen `PublishEvent` calls, chosen entries of bulk publishes and,
while `fail_state()` says so, every state write, which the real sidecar cannot be made
to do on demand. Everything else, and every
event it lets through, is the real thing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from dapr.proto.runtime.v1 import pubsub_pb2

from testbed.net import free_port

__all__ = ["FaultySidecar"]

_PUBLISH = "/dapr.proto.runtime.v1.Dapr/PublishEvent"
_BULK_PUBLISH = "/dapr.proto.runtime.v1.Dapr/BulkPublishEvent"
_STATE_WRITES = {
    "/dapr.proto.runtime.v1.Dapr/SaveState",
    "/dapr.proto.runtime.v1.Dapr/DeleteState",
}


def _identity(data: bytes) -> bytes:
    return data


@dataclass
class FaultySidecar:
    """`fail(n)` says whether the n-th publish (from 1) is refused with UNAVAILABLE;
    `fail_entry(n)` whether the n-th bulk-published event is (reported as failed, and
    not forwarded)."""

    fail: Callable[[int], bool]
    fail_entry: Callable[[int], bool] = lambda n: False
    fail_state: Callable[[], bool] = lambda: False
    port: int = field(default_factory=free_port)
    refused_state: int = 0
    publishes: int = 0
    refused: int = 0
    bulk_calls: int = 0
    bulk_entries: int = 0
    refused_entries: int = 0
    _target: str = ""
    _server: Any = None
    _channel: Any = None

    async def start(self, target_port: int) -> int:
        self._target = f"127.0.0.1:{target_port}"
        self._channel = grpc.aio.insecure_channel(self._target)
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers([_Forwarder(self)])
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self._server.start()
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
        if self._channel is not None:
            await self._channel.close()

    async def forward(self, method: str, request: bytes, context: Any) -> bytes:
        if method in _STATE_WRITES and self.fail_state():
            self.refused_state += 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "injected: state store unavailable")
        if method == _BULK_PUBLISH:
            return await self._bulk_publish(request, context)
        if method == _PUBLISH:
            self.publishes += 1
            if self.fail(self.publishes):
                self.refused += 1
                await context.abort(grpc.StatusCode.UNAVAILABLE, "injected: sidecar unavailable")
        return await self._forward(method, request, context)

    async def _bulk_publish(self, request: bytes, context: Any) -> bytes:
        bulk = pubsub_pb2.BulkPublishRequest.FromString(request)
        self.bulk_calls += 1
        refused: list[str] = []
        kept = []
        for entry in bulk.entries:
            self.bulk_entries += 1
            if self.fail_entry(self.bulk_entries):
                refused.append(entry.entry_id)
            else:
                kept.append(entry)
        self.refused_entries += len(refused)
        response = pubsub_pb2.BulkPublishResponse()
        if kept:
            del bulk.entries[:]
            bulk.entries.extend(kept)
            forwarded = await self._forward(_BULK_PUBLISH, bulk.SerializeToString(), context)
            response.MergeFromString(forwarded)
        for entry_id in refused:
            response.failedEntries.add(entry_id=entry_id, error="injected: entry refused")
        return response.SerializeToString()

    async def _forward(self, method: str, request: bytes, context: Any) -> bytes:
        call = self._channel.unary_unary(
            method, request_serializer=_identity, response_deserializer=_identity
        )
        metadata = tuple((m.key, m.value) for m in context.invocation_metadata() or ())
        try:
            response: bytes = await call(request, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
        return response


class _Forwarder:
    """A generic handler (grpc only needs a `service` method): every method is forwarded."""

    def __init__(self, proxy: FaultySidecar) -> None:
        self._proxy = proxy

    def service(self, handler_call_details: Any) -> Any:
        method = handler_call_details.method

        async def handle(request: bytes, context: Any) -> bytes:
            return await self._proxy.forward(method, request, context)

        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=_identity, response_serializer=_identity
        )
