"""The sidecar client: the worker's and the Python client's calls into daprd over gRPC.

With `worker.transport.dapr` (the app callback daprd calls, and the conversation API)
this is the edge: the only two modules that touch the Dapr SDK's protos and gRPC. It
stands apart from the app callback so that the client (`worker.client`) can publish
and subscribe through the same code without loading any of the worker's runtime: it
imports only the contract's floor (`worker.contract`) and the error tree.

Every gRPC error is translated into a `WorkerError` at this edge, in `map_grpc_errors`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self

import grpc
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import (
    appcallback_pb2,
    dapr_pb2_grpc,
    metadata_pb2,
    pubsub_pb2,
    state_pb2,
)
from google.protobuf.json_format import MessageToDict
from pydantic import SecretStr

from worker.contract.envelopes import InboundMessage, Publication
from worker.errors import (
    CallRefused,
    EtagMismatch,
    LLMError,
    LLMUnavailable,
    SidecarError,
    UnknownComponent,
    WorkerError,
)

__all__ = ["SidecarClient", "TopicSubscription", "map_grpc_errors"]

# How a streaming subscription answers each event it reads (see `TopicSubscription`).
_ACK = appcallback_pb2.TopicEventResponse(
    status=appcallback_pb2.TopicEventResponse.TopicEventResponseStatus.SUCCESS
)
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
    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata every call carries (the API token, when there is one)."""
        return self._metadata

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
    ) -> dict[str, tuple[bytes | None, str | None] | SidecarError]:
        """Many keys in one call; a key the store could not read maps to its error."""
        with map_grpc_errors(f"get {len(keys)} states from {store}"):
            response = await self.stub.GetBulkState(
                state_pb2.GetBulkStateRequest(
                    store_name=store, keys=keys, parallelism=_BULK_READ_PARALLELISM
                ),
                metadata=self._metadata,
                timeout=call_timeout,
            )
        read: dict[str, tuple[bytes | None, str | None] | SidecarError] = {}
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
                            status=_ACK,
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
