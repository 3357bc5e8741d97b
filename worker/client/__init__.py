"""A Python client of the streaming worker, over Dapr, and building blocks for consumers.

    from worker.client import AsyncClient, Client, generate

    with Client() as client:                     # the sidecar at 127.0.0.1:$DAPR_GRPC_PORT
        for event in client.generate("Tell me a story"):
            if event["type"] == "content":
                print(event["data"], end="")

`worker.client.consumer.Reassembler` reassembles response streams for any service
that subscribes to the response topic itself.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from worker.client.consumer import Event, Finished, Reassembler
from worker.client.errors import (
    ClientError,
    GenerationCancelled,
    GenerationFailed,
    GenerationTimeout,
    InvalidRequest,
    MalformedEvent,
    SidecarUnavailable,
)
from worker.client.options import ClientOptions, GenerateOptions
from worker.client.prompt import Messages
from worker.client.types import (
    ChatCompletion,
    ChatCompletionMessage,
    Choice,
    CompletionUsage,
    ContentEvent,
    ContextIdEvent,
    FinalUsageEvent,
    StreamEvent,
    UsageData,
)

if TYPE_CHECKING:
    from worker.client.aio import AsyncClient, default_address
    from worker.client.stream import AsyncReplyStream
    from worker.client.sync import Client, ReplyStream, generate

# Loaded on first use: they bring the transport (gRPC, the Dapr SDK), which the building
# blocks above (the Reassembler, prompts, types), used by the gateway, do not need.
_LAZY = {
    "AsyncClient": "worker.client.aio",
    "default_address": "worker.client.aio",
    "AsyncReplyStream": "worker.client.stream",
    "Client": "worker.client.sync",
    "ReplyStream": "worker.client.sync",
    "generate": "worker.client.sync",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AsyncClient",
    "AsyncReplyStream",
    "ChatCompletion",
    "ChatCompletionMessage",
    "Choice",
    "Client",
    "ClientError",
    "ClientOptions",
    "CompletionUsage",
    "ContentEvent",
    "ContextIdEvent",
    "Event",
    "FinalUsageEvent",
    "Finished",
    "GenerateOptions",
    "GenerationCancelled",
    "GenerationFailed",
    "GenerationTimeout",
    "InvalidRequest",
    "MalformedEvent",
    "Messages",
    "Reassembler",
    "ReplyStream",
    "SidecarUnavailable",
    "StreamEvent",
    "UsageData",
    "default_address",
    "generate",
]
