"""A Python client of the streaming worker, over Dapr, and building blocks for consumers.

    from worker.client import AsyncClient, Client, generate

    with Client() as client:                     # the sidecar at 127.0.0.1:$DAPR_GRPC_PORT
        for event in client.generate("Tell me a story"):
            if event["type"] == "content":
                print(event["data"], end="")

`worker.client.consumer.Reassembler` reassembles response streams for any service
that subscribes to the response topic itself.
"""

from worker.client.aio import AsyncClient, default_address
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
from worker.client.prompt import GenerateOptions, Messages
from worker.client.stream import AsyncReplyStream
from worker.client.sync import Client, ReplyStream, generate
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

__all__ = [
    "AsyncClient",
    "AsyncReplyStream",
    "ChatCompletion",
    "ChatCompletionMessage",
    "Choice",
    "Client",
    "ClientError",
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
