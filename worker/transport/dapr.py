"""The edge: the only module that touches the Dapr SDK (its protos) and gRPC.

Two halves. `SidecarClient` calls the sidecar (publish, state, conversation) over an
asyncio gRPC channel. `AppServer` is the app callback the sidecar calls: an asyncio
gRPC server rather than the SDK's threaded `App`, whose 10 threads, shared with the
health check, would cap in-flight streams at ten and starve health checks. Here each
delivery is a coroutine, so hundreds of streams and the health check share one loop.

Every gRPC error is translated into a `WorkerError` at this edge, in `map_grpc_errors`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
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

from worker.errors import (
    CallRefused,
    EtagMismatch,
    LLMError,
    LLMUnavailable,
    SidecarError,
    UnknownComponent,
    WorkerError,
)
from worker.llm.base import ChatMessage, Usage
from worker.llm.conversation import ConversationReply
from worker.pipeline.inbound import InboundMessage
from worker.pipeline.outcome import Outcome
from worker.pipeline.ports import Publication, StateRead

__all__ = [
    "AppServer",
    "BulkSubscribe",
    "MessageHandler",
    "SidecarClient",
    "Subscription",
    "TopicSubscription",
    "map_grpc_errors",
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


_CONFLICT = (grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION)


@contextmanager
def map_grpc_errors(
    what: str, *, state_write: bool = False, create_only: bool = False, component: str = ""
) -> Iterator[None]:
    """The one place where gRPC's errors become the worker's (see `worker.errors`).

    - a first-write-wins conflict of a state write -> `EtagMismatch`;
    - a conversation call (`component`): not found -> `UnknownComponent`, transient ->
      `LLMUnavailable`, else `LLMError`;
    - any other status -> `SidecarError` (retryable: the sidecar may answer later);
    - an error raised before the call left this process (gRPC refusing the request
      itself, e.g. metadata that is not a legal header value) -> `CallRefused`: sending
      it again cannot help, and it must never escape as a foreign error.
    """
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        detail = _describe(exc)
        if state_write and exc.code() in _CONFLICT:
            raise EtagMismatch(f"{what}: changed meanwhile") from exc
        if create_only and "failed to set key" in (exc.details() or ""):
            # Redis reports a create-only conflict as a plain error, not an ETag one.
            raise EtagMismatch(f"{what}: exists already") from exc
        if component:
            if "not found" in detail.lower() and component in detail:
                raise UnknownComponent(
                    f"no Dapr conversation component named {component!r}"
                ) from exc
            if exc.code() in _TRANSIENT:
                raise LLMUnavailable(f"{what}: {detail}") from exc
            raise LLMError(f"{what}: {detail}") from exc
        raise SidecarError(f"{what} failed: {detail}") from exc
    except (WorkerError, asyncio.CancelledError):
        raise
    except Exception as exc:
        raise CallRefused(f"{what}: gRPC refused the call ({type(exc).__name__})") from exc


# How many keys daprd reads at once for one bulk read (its default is one at a time).
_BULK_READ_PARALLELISM = 16


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
        with map_grpc_errors(f"Dapr sidecar at {self._address}: readiness"):
            await self.stub.GetMetadata(
                metadata_pb2.GetMetadataRequest(),
                metadata=self._metadata,
                timeout=seconds,
                wait_for_ready=True,
            )

    async def publish(self, publication: Publication, *, call_timeout: float | None = None) -> None:
        call_metadata = self._metadata
        if publication.traceparent:
            # Parents the sidecar's own span; the event keeps the traceparent it carries.
            call_metadata = (*call_metadata, ("traceparent", publication.traceparent))
        with map_grpc_errors(f"publish to {publication.pubsub}/{publication.topic}"):
            await self.stub.PublishEvent(
                pubsub_pb2.PublishEventRequest(
                    pubsub_name=publication.pubsub,
                    topic=publication.topic,
                    data=publication.data,
                    data_content_type=publication.content_type,
                    metadata=publication.metadata,
                ),
                metadata=call_metadata,
                timeout=call_timeout,
            )

    async def publish_bulk(
        self, publications: Sequence[Publication], *, call_timeout: float | None = None
    ) -> dict[int, str]:
        """Publications of one pubsub and topic in one call; failed ones by index."""
        first = publications[0]
        request = pubsub_pb2.BulkPublishRequest(
            pubsub_name=first.pubsub,
            topic=first.topic,
            entries=[
                pubsub_pb2.BulkPublishRequestEntry(
                    entry_id=str(n),
                    event=publication.data,
                    content_type=publication.content_type,
                    # Per entry: the sidecar ignores the request's metadata for entries
                    # that have none of their own.
                    metadata=publication.metadata,
                )
                for n, publication in enumerate(publications)
            ],
        )
        what = f"bulk publish of {len(publications)} events to {first.pubsub}/{first.topic}"
        with map_grpc_errors(what):
            response = await self.stub.BulkPublishEvent(
                request, metadata=self._metadata, timeout=call_timeout
            )
        return {int(failed.entry_id): failed.error for failed in response.failedEntries}

    async def get_state(
        self, store: str, key: str, *, call_timeout: float | None = None
    ) -> tuple[bytes | None, str | None]:
        with map_grpc_errors(f"get state {store}/{key}"):
            response = await self.stub.GetState(
                state_pb2.GetStateRequest(store_name=store, key=key),
                metadata=self._metadata,
                timeout=call_timeout,
            )
        if not response.data and not response.etag:
            return None, None
        return response.data, response.etag or None

    async def get_bulk_state(
        self, store: str, keys: Sequence[str], *, call_timeout: float | None = None
    ) -> dict[str, StateRead | SidecarError]:
        """Many keys in one call; a key the store could not read maps to its error."""
        with map_grpc_errors(f"get {len(keys)} states from {store}"):
            response = await self.stub.GetBulkState(
                state_pb2.GetBulkStateRequest(
                    store_name=store, keys=keys, parallelism=_BULK_READ_PARALLELISM
                ),
                metadata=self._metadata,
                timeout=call_timeout,
            )
        read: dict[str, StateRead | SidecarError] = {}
        for item in response.items:
            if item.error:
                read[item.key] = SidecarError(f"get state {store}/{item.key} failed: {item.error}")
            elif not item.data and not item.etag:
                read[item.key] = (None, None)
            else:
                read[item.key] = (item.data, item.etag or None)
        return read

    async def save_state(
        self,
        store: str,
        key: str,
        value: bytes,
        *,
        etag: str | None = None,
        create_only: bool = False,
        ttl_seconds: int | None = None,
        call_timeout: float | None = None,
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
        with map_grpc_errors(
            f"save state {store}/{key}", state_write=True, create_only=create_only
        ):
            await self.stub.SaveState(
                state_pb2.SaveStateRequest(store_name=store, states=[item]),
                metadata=self._metadata,
                timeout=call_timeout,
            )

    async def delete_state(
        self, store: str, key: str, *, etag: str | None = None, call_timeout: float | None = None
    ) -> None:
        request = state_pb2.DeleteStateRequest(store_name=store, key=key)
        if etag is not None:
            request.etag.value = etag
            request.options.concurrency = common_pb2.StateOptions.CONCURRENCY_FIRST_WRITE
        with map_grpc_errors(f"delete state {store}/{key}", state_write=True):
            await self.stub.DeleteState(request, metadata=self._metadata, timeout=call_timeout)

    def subscribe(self, pubsub: str, topic: str) -> TopicSubscription:
        """`async with client.subscribe(...) as events: async for message in events: ...`"""
        return TopicSubscription(self.stub, self._metadata, pubsub, topic)

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
            response = await self.stub.ConverseAlpha2(request, metadata=self._metadata)
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
        with map_grpc_errors(f"subscribe to {self._pubsub}/{self._topic}"):
            await self._call.write(
                pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
                    initial_request=pubsub_pb2.SubscribeTopicEventsRequestInitialAlpha1(
                        pubsub_name=self._pubsub, topic=self._topic
                    )
                )
            )
            # Returns once the sidecar confirmed: events published from now on reach us.
            first = await self._call.read()
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
            with map_grpc_errors(f"subscription {self._topic}"):
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
