"""The app callback daprd calls, and the sidecar's conversation API: the worker's edge.

With `worker.transport.sidecar` (the calls into daprd: publish, subscribe, state, which
the client shares) this is the edge, the only two modules that touch the Dapr SDK's
protos and gRPC. `AppServer` is an asyncio gRPC server rather than the SDK's threaded
`App`, whose 10 threads, shared with the health check, would cap in-flight streams at
ten and starve health checks. Here each delivery is a coroutine, so hundreds of
streams and the health check share one loop.

gRPC errors of calls become `WorkerError`s in `worker.transport.sidecar.map_grpc_errors`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import ai_pb2, appcallback_pb2, appcallback_pb2_grpc
from google.protobuf import empty_pb2
from google.protobuf.json_format import MessageToDict
from pydantic import SecretStr

from worker.contract.envelopes import InboundMessage
from worker.errors import SidecarError
from worker.llm.base import ChatMessage, Usage
from worker.llm.conversation import ConversationReply
from worker.pipeline.outcome import Outcome, unfinished
from worker.transport.sidecar import SidecarClient, map_grpc_errors

__all__ = [
    "AppServer",
    "BulkSubscribe",
    "Conversations",
    "MessageHandler",
    "Subscription",
]

log = logging.getLogger(__name__)

MessageHandler = Callable[[InboundMessage], Awaitable[Outcome]]

_Status = appcallback_pb2.TopicEventResponse.TopicEventResponseStatus
_STATUS = {
    Outcome.SUCCESS: _Status.SUCCESS,
    Outcome.RETRY: _Status.RETRY,
    Outcome.DROP: _Status.DROP,
}
# Room for the headers of a bulk delivery of 10 000 entries (the most settings allow).
_MAX_METADATA_BYTES = 4 * 1024 * 1024


class Conversations:
    """The sidecar's conversation API (ConverseAlpha2), a `Converser` for LLM backends."""

    def __init__(self, sidecar: SidecarClient) -> None:
        self._sidecar = sidecar

    async def converse(
        self,
        component: str,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None,
        scrub_pii: bool,
    ) -> ConversationReply:
        # Dapr 1.18 applies the request's `scrub_pii` to the output only; each input
        # scrubs its own messages only when it asks too.
        request = ai_pb2.ConversationRequestAlpha2(
            name=component,
            inputs=[
                ai_pb2.ConversationInputAlpha2(
                    messages=[_conversation_message(m) for m in messages], scrub_pii=scrub_pii
                )
            ],
            scrub_pii=scrub_pii,
        )
        if temperature is not None:
            request.temperature = temperature
        with map_grpc_errors(f"conversation {component!r}", component=component):
            response = await self._sidecar.stub.ConverseAlpha2(
                request, metadata=self._sidecar.call_metadata
            )
        return _conversation_reply(response)


def _conversation_message(message: ChatMessage) -> ai_pb2.ConversationMessage:
    content = [ai_pb2.ConversationMessageContent(text=message.content)]
    match message.role:
        case "system":
            return ai_pb2.ConversationMessage(
                of_system=ai_pb2.ConversationMessageOfSystem(content=content)
            )
        case "developer":
            return ai_pb2.ConversationMessage(
                of_developer=ai_pb2.ConversationMessageOfDeveloper(content=content)
            )
        case "assistant":
            return ai_pb2.ConversationMessage(
                of_assistant=ai_pb2.ConversationMessageOfAssistant(content=content)
            )
        case "tool":
            return ai_pb2.ConversationMessage(
                of_tool=ai_pb2.ConversationMessageOfTool(name="tool", content=content)
            )
        case _:
            return ai_pb2.ConversationMessage(
                of_user=ai_pb2.ConversationMessageOfUser(content=content)
            )


def _conversation_reply(response: ai_pb2.ConversationResponseAlpha2) -> ConversationReply:
    text: list[str] = []
    finish_reason = "stop"
    model: str | None = None
    usage: Usage | None = None
    for output in response.outputs:
        if output.model:
            model = output.model
        if output.HasField("usage") and output.usage.total_tokens:
            usage = Usage(
                prompt_tokens=output.usage.prompt_tokens,
                completion_tokens=output.usage.completion_tokens,
                total_tokens=output.usage.total_tokens,
            )
        for choice in output.choices:
            text.append(choice.message.content)
            finish_reason = choice.finish_reason or finish_reason
    return ConversationReply("".join(text), finish_reason, model, usage)


@dataclass(frozen=True, slots=True)
class BulkSubscribe:
    """Dapr delivers up to `max_messages` at once (waiting at most `max_await_ms` for them)."""

    max_messages: int
    max_await_ms: int


@dataclass(frozen=True, slots=True)
class Subscription:
    pubsub: str
    topic: str
    dead_letter_topic: str = ""
    # Bulk delivery: on Kafka, the only way for one partition to carry many turns at once
    # (Dapr hands a partition's messages over one at a time otherwise; BENCHMARKS.md).
    bulk: BulkSubscribe | None = None

    def to_proto(self) -> appcallback_pb2.TopicSubscription:
        bulk = None
        if self.bulk is not None:
            bulk = appcallback_pb2.BulkSubscribeConfig(
                enabled=True,
                max_messages_count=self.bulk.max_messages,
                max_await_duration_ms=self.bulk.max_await_ms,
            )
        return appcallback_pb2.TopicSubscription(
            pubsub_name=self.pubsub,
            topic=self.topic,
            dead_letter_topic=self.dead_letter_topic,
            bulk_subscribe=bulk,
        )


class _AppCallback(appcallback_pb2_grpc.AppCallbackServicer):
    def __init__(self, subscriptions: Sequence[Subscription], handler: MessageHandler) -> None:
        self._subscriptions = subscriptions
        self._handler = handler

    async def ListTopicSubscriptions(
        self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext[object, object]
    ) -> appcallback_pb2.ListTopicSubscriptionsResponse:
        return appcallback_pb2.ListTopicSubscriptionsResponse(
            subscriptions=[s.to_proto() for s in self._subscriptions]
        )

    async def OnTopicEvent(
        self,
        request: appcallback_pb2.TopicEventRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> appcallback_pb2.TopicEventResponse:
        outcome = await self._outcome(_inbound(request, request.topic))
        return appcallback_pb2.TopicEventResponse(status=_STATUS[outcome])

    async def OnBulkTopicEvent(
        self,
        request: appcallback_pb2.TopicEventBulkRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> appcallback_pb2.TopicEventBulkResponse:
        """Every entry of the batch runs at once, each answered with its own status.

        Started in entry order (the partition's order): the pipeline's per-context lock
        is taken in that order, so a conversation's turns keep their arrival order.
        """
        entries = list(request.entries)
        outcomes = await asyncio.gather(
            *(self._outcome(_bulk_inbound(entry, request.topic)) for entry in entries)
        )
        return appcallback_pb2.TopicEventBulkResponse(
            statuses=[
                appcallback_pb2.TopicEventBulkResponseEntry(
                    entry_id=entry.entry_id, status=_STATUS[outcome]
                )
                for entry, outcome in zip(entries, outcomes, strict=True)
            ]
        )

    async def _outcome(self, message: InboundMessage) -> Outcome:
        try:
            return await self._handler(message)
        except Exception:
            # The handler decides outcomes; reaching here is a bug. Never answer
            # UNIMPLEMENTED or an error status: Dapr would drop the message silently.
            log.exception("handler failed on message %s", message.id)
            return unfinished()

    async def OnInvoke(
        self, request: common_pb2.InvokeRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> common_pb2.InvokeResponse:
        await context.abort(grpc.StatusCode.NOT_FOUND, f"no method {request.method!r}")
        raise AssertionError("unreachable")  # abort raises

    async def ListInputBindings(
        self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext[object, object]
    ) -> appcallback_pb2.ListInputBindingsResponse:
        return appcallback_pb2.ListInputBindingsResponse()


def _inbound(
    event: appcallback_pb2.TopicEventRequest | appcallback_pb2.TopicEventCERequest, topic: str
) -> InboundMessage:
    """TopicEventRequest and a bulk entry's CloudEvent carry the same fields."""
    return InboundMessage(
        id=event.id,
        topic=topic,
        data=event.data,
        data_content_type=event.data_content_type,
        type=event.type,
        extensions=MessageToDict(event.extensions),
        source=event.source,
        spec_version=event.spec_version,
    )


def _bulk_inbound(entry: appcallback_pb2.TopicEventBulkRequestEntry, topic: str) -> InboundMessage:
    if entry.WhichOneof("event") == "cloud_event":
        return _inbound(entry.cloud_event, topic)
    # A raw (non-CloudEvent) payload: the entry id stands in for the CloudEvent id.
    return InboundMessage(
        id=entry.entry_id, topic=topic, data=entry.bytes, data_content_type=entry.content_type
    )


class _HealthCheck(appcallback_pb2_grpc.AppCallbackHealthCheckServicer):
    async def HealthCheck(
        self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext[object, object]
    ) -> appcallback_pb2.HealthCheckResponse:
        return appcallback_pb2.HealthCheckResponse()


# daprd 1.18.3 presents the token on deliveries and invocations, but not when it asks the
# app for its subscriptions or its health: those only read what the app declares.
_WITHOUT_TOKEN = frozenset(
    {
        "/dapr.proto.runtime.v1.AppCallback/ListTopicSubscriptions",
        "/dapr.proto.runtime.v1.AppCallback/ListInputBindings",
        "/dapr.proto.runtime.v1.AppCallbackHealthCheck/HealthCheck",
    }
)


class _RequireApiToken(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Answers only callers that present Dapr's `APP_API_TOKEN` as `dapr-api-token`.

    The sidecar sends it with every delivery when its `APP_API_TOKEN` is set; anyone else
    who can reach the app port gets UNAUTHENTICATED and no generated reply.
    """

    def __init__(self, token: SecretStr) -> None:
        self._token = token.get_secret_value().encode()

        async def deny(request: object, context: grpc.aio.ServicerContext[object, object]) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong dapr-api-token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if handler_call_details.method in _WITHOUT_TOKEN:
            return await continuation(handler_call_details)
        presented = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "dapr-api-token":
                presented = value.encode() if isinstance(value, str) else value
        if hmac.compare_digest(presented, self._token):
            return await continuation(handler_call_details)
        log.warning("refused a call to %s without the app API token", handler_call_details.method)
        return self._deny


class AppServer:
    """The gRPC app callback server that daprd delivers messages to."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        subscriptions: Sequence[Subscription],
        handler: MessageHandler,
        api_token: SecretStr | None = None,
    ) -> None:
        self._address = f"{host}:{port}"
        self._server = grpc.aio.server(
            interceptors=[_RequireApiToken(api_token)] if api_token else None,
            options=[
                ("grpc.so_reuseport", 0),
                # gRPC cancels calls the app has not taken up within 30 s by default; under a
                # burst of hundreds of deliveries a busy loop can take longer (see BENCHMARKS).
                ("grpc.server_max_unrequested_time_in_server", 3600),
                # No receive limit of our own: a prompt over gRPC's default 4 MiB would be
                # refused before the worker sees it, and the sidecar would redeliver it
                # without end. The worker reads it and dead-letters it with a `failed`
                # event (WORKER_MAX_PROMPT_BYTES); the sidecar's --max-body-size bounds it.
                ("grpc.max_receive_message_length", -1),
                # A bulk delivery carries the metadata of every entry of the batch as
                # gRPC headers (about 180 bytes an entry on Kafka): gRPC's default 8 KiB
                # refuses batches of more than ~45 (RESOURCE_EXHAUSTED), which Dapr then
                # dead-letters without retrying.
                ("grpc.max_metadata_size", _MAX_METADATA_BYTES),
                ("grpc.absolute_max_metadata_size", _MAX_METADATA_BYTES),
            ],
            # Deliveries wait on whole LLM streams; never refuse one for lack of a slot.
            maximum_concurrent_rpcs=None,
        )
        appcallback_pb2_grpc.add_AppCallbackServicer_to_server(
            _AppCallback(subscriptions, handler), self._server
        )
        appcallback_pb2_grpc.add_AppCallbackHealthCheckServicer_to_server(
            _HealthCheck(), self._server
        )

    async def start(self) -> None:
        try:
            self._server.add_insecure_port(self._address)
        except RuntimeError as exc:
            raise SidecarError(f"cannot listen on {self._address}: {exc}") from exc
        await self._server.start()
        log.info("app callback listening on %s", self._address)

    async def stop(self, grace: float | None) -> None:
        await self._server.stop(grace)
