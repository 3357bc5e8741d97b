"""The edge: the only module that touches the Dapr SDK (its protos) and gRPC.

Two halves. `SidecarClient` calls the sidecar (publish, state, conversation) over an
asyncio gRPC channel. `AppServer` is the app callback the sidecar calls: an asyncio
gRPC server rather than the SDK's threaded `App`, whose 10 threads, shared with the
health check, would cap in-flight streams at ten and starve health checks. Here each
delivery is a coroutine, so hundreds of streams and the health check share one loop.

Every gRPC error is translated into a `WorkerError` at this edge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import grpc
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import (
    ai_pb2,
    appcallback_pb2,
    appcallback_pb2_grpc,
    dapr_pb2_grpc,
    metadata_pb2,
    pubsub_pb2,
    state_pb2,
)
from google.protobuf import empty_pb2
from google.protobuf.json_format import MessageToDict
from pydantic import SecretStr

from worker.errors import EtagMismatch, LLMError, LLMUnavailable, SidecarError, UnknownComponent
from worker.llm.base import ChatMessage, Usage
from worker.llm.conversation import ConversationReply
from worker.pipeline.inbound import InboundMessage
from worker.pipeline.outcome import Outcome
from worker.pipeline.ports import BulkEntry

__all__ = [
    "AppServer",
    "BulkSubscribe",
    "MessageHandler",
    "SidecarClient",
    "Subscription",
    "TopicSubscription",
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
# gRPC codes meaning "the sidecar (or what is behind it) could not be reached right now".
_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
}


def _describe(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


class SidecarClient:
    """Calls into the local daprd over one asyncio gRPC channel."""

    def __init__(self, address: str, *, api_token: SecretStr | None = None) -> None:
        self._address = address
        self._metadata: tuple[tuple[str, str], ...] = (
            (("dapr-api-token", api_token.get_secret_value()),) if api_token else ()
        )
        self._channel: grpc.aio.Channel | None = None
        self._stub: dapr_pb2_grpc.DaprStub | None = None

    async def __aenter__(self) -> Self:
        self._channel = grpc.aio.insecure_channel(
            self._address,
            # Many streams share this one channel; keep it from idling out between prompts.
            options=[("grpc.keepalive_time_ms", 30_000), ("grpc.http2.max_pings_without_data", 0)],
        )
        self._stub = dapr_pb2_grpc.DaprStub(self._channel)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    @property
    def stub(self) -> dapr_pb2_grpc.DaprStub:
        if self._stub is None:
            raise SidecarError("the sidecar client is not open (use `async with`)")
        return self._stub

    async def wait_ready(self, seconds: float) -> None:
        """Wait until the sidecar answers its metadata API."""
        try:
            await self.stub.GetMetadata(
                metadata_pb2.GetMetadataRequest(),
                metadata=self._metadata,
                timeout=seconds,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            raise SidecarError(
                f"Dapr sidecar at {self._address} not ready: {_describe(exc)}"
            ) from exc

    async def publish(
        self,
        *,
        pubsub: str,
        topic: str,
        data: bytes,
        content_type: str,
        metadata: Mapping[str, str],
        traceparent: str | None = None,
    ) -> None:
        call_metadata = self._metadata
        if traceparent:
            # Parents the sidecar's own span; the event keeps the traceparent it carries.
            call_metadata = (*call_metadata, ("traceparent", traceparent))
        try:
            await self.stub.PublishEvent(
                pubsub_pb2.PublishEventRequest(
                    pubsub_name=pubsub,
                    topic=topic,
                    data=data,
                    data_content_type=content_type,
                    metadata=metadata,
                ),
                metadata=call_metadata,
            )
        except grpc.aio.AioRpcError as exc:
            raise SidecarError(f"publish to {pubsub}/{topic} failed: {_describe(exc)}") from exc

    async def publish_bulk(
        self, *, pubsub: str, topic: str, entries: Sequence[BulkEntry]
    ) -> dict[str, str]:
        request = pubsub_pb2.BulkPublishRequest(
            pubsub_name=pubsub,
            topic=topic,
            entries=[
                pubsub_pb2.BulkPublishRequestEntry(
                    entry_id=entry.entry_id,
                    event=entry.data,
                    content_type=entry.content_type,
                    # Per entry: the sidecar ignores the request's metadata for entries
                    # that have none of their own.
                    metadata=entry.metadata,
                )
                for entry in entries
            ],
        )
        try:
            response = await self.stub.BulkPublishEvent(request, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise SidecarError(
                f"bulk publish of {len(entries)} events to {pubsub}/{topic} failed: "
                f"{_describe(exc)}"
            ) from exc
        return {failed.entry_id: failed.error for failed in response.failedEntries}

    async def get_state(self, store: str, key: str) -> tuple[bytes | None, str | None]:
        try:
            response = await self.stub.GetState(
                state_pb2.GetStateRequest(store_name=store, key=key), metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise SidecarError(f"get state {store}/{key} failed: {_describe(exc)}") from exc
        if not response.data and not response.etag:
            return None, None
        return response.data, response.etag or None

    async def save_state(
        self,
        store: str,
        key: str,
        value: bytes,
        *,
        etag: str | None = None,
        create_only: bool = False,
        ttl_seconds: int | None = None,
    ) -> None:
        item = common_pb2.StateItem(key=key, value=value)
        if etag is not None or create_only:
            # First-write without an ETag is "create only"; Redis also marks the key so
            # that a later create-only write of it fails instead of overwriting.
            item.options.concurrency = common_pb2.StateOptions.CONCURRENCY_FIRST_WRITE
        if etag is not None:
            item.etag.value = etag
        if ttl_seconds is not None:
            item.metadata["ttlInSeconds"] = str(ttl_seconds)
        try:
            await self.stub.SaveState(
                state_pb2.SaveStateRequest(store_name=store, states=[item]),
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION):
                raise EtagMismatch(f"state {store}/{key} changed meanwhile") from exc
            if create_only and "failed to set key" in (exc.details() or ""):
                # Redis reports a create-only conflict as a plain error, not an ETag one.
                raise EtagMismatch(f"state {store}/{key} exists already") from exc
            raise SidecarError(f"save state {store}/{key} failed: {_describe(exc)}") from exc

    async def delete_state(self, store: str, key: str, *, etag: str | None = None) -> None:
        request = state_pb2.DeleteStateRequest(store_name=store, key=key)
        if etag is not None:
            request.etag.value = etag
            request.options.concurrency = common_pb2.StateOptions.CONCURRENCY_FIRST_WRITE
        try:
            await self.stub.DeleteState(request, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION):
                raise EtagMismatch(f"state {store}/{key} changed meanwhile") from exc
            raise SidecarError(f"delete state {store}/{key} failed: {_describe(exc)}") from exc

    def subscribe(self, pubsub: str, topic: str) -> TopicSubscription:
        """`async with client.subscribe(...) as events: async for message in events: ...`"""
        return TopicSubscription(self.stub, self._metadata, pubsub, topic)

    async def converse(
        self,
        component: str,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None,
        max_tokens: int | None,
        scrub_pii: bool,
    ) -> ConversationReply:
        request = ai_pb2.ConversationRequestAlpha2(
            name=component,
            inputs=[
                ai_pb2.ConversationInputAlpha2(
                    messages=[_conversation_message(m) for m in messages]
                )
            ],
            scrub_pii=scrub_pii,
        )
        if temperature is not None:
            request.temperature = temperature
        if max_tokens is not None:
            request.max_tokens = max_tokens
        try:
            response = await self.stub.ConverseAlpha2(request, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            detail = _describe(exc)
            if "not found" in detail.lower() and component in detail:
                raise UnknownComponent(
                    f"no Dapr conversation component named {component!r}"
                ) from exc
            if exc.code() in _TRANSIENT:
                raise LLMUnavailable(f"conversation {component!r}: {detail}") from exc
            raise LLMError(f"conversation {component!r}: {detail}") from exc
        return _conversation_reply(response)


class TopicSubscription:
    """A streaming subscription on the sidecar (no app port needed).

    For readers that keep what they read in memory (the Python client): every event is
    acknowledged as it is read, so it is the reader's from then on.
    """

    def __init__(
        self,
        stub: dapr_pb2_grpc.DaprStub,
        metadata: tuple[tuple[str, str], ...],
        pubsub: str,
        topic: str,
    ) -> None:
        self._stub = stub
        self._metadata = metadata
        self._pubsub = pubsub
        self._topic = topic
        self._call: Any = None

    async def __aenter__(self) -> Self:
        self._call = self._stub.SubscribeTopicEventsAlpha1(metadata=self._metadata)
        try:
            await self._call.write(
                pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
                    initial_request=pubsub_pb2.SubscribeTopicEventsRequestInitialAlpha1(
                        pubsub_name=self._pubsub, topic=self._topic
                    )
                )
            )
            # Returns once the sidecar confirmed: events published from now on reach us.
            first = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise SidecarError(
                f"subscribe to {self._pubsub}/{self._topic} failed: {_describe(exc)}"
            ) from exc
        if first is grpc.aio.EOF or not first.HasField("initial_response"):
            raise SidecarError(f"subscribe to {self._pubsub}/{self._topic}: no confirmation")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._call is not None:
            self._call.cancel()

    def __aiter__(self) -> AsyncIterator[InboundMessage]:
        return self._events()

    async def _events(self) -> AsyncIterator[InboundMessage]:
        while True:
            try:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    return
                event = response.event_message
                # Acknowledged on receipt, before the caller sees it: a caller may close
                # the stream right after the last event it wanted, and daprd redelivers an
                # event still unacknowledged then to the closed stream without end, while
                # every later subscription on that sidecar waits behind it.
                await self._call.write(
                    pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
                        event_processed=pubsub_pb2.SubscribeTopicEventsRequestProcessedAlpha1(
                            id=event.id,
                            status=appcallback_pb2.TopicEventResponse(status=_Status.SUCCESS),
                        )
                    )
                )
            except grpc.aio.AioRpcError as exc:
                raise SidecarError(f"subscription {self._topic} broke: {_describe(exc)}") from exc
            yield InboundMessage(
                id=event.id,
                topic=event.topic,
                data=event.data,
                data_content_type=event.data_content_type,
                type=event.type,
                extensions=MessageToDict(event.extensions),
            )


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
            return Outcome.RETRY

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


class AppServer:
    """The gRPC app callback server that daprd delivers messages to."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        subscriptions: Sequence[Subscription],
        handler: MessageHandler,
    ) -> None:
        self._address = f"{host}:{port}"
        self._server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                # gRPC cancels calls the app has not taken up within 30 s by default; under a
                # burst of hundreds of deliveries a busy loop can take longer (see BENCHMARKS).
                ("grpc.server_max_unrequested_time_in_server", 3600),
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
