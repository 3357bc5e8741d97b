"""`AsyncClient`: publish prompts to the worker and read its replies, over Dapr."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Literal, Self, Unpack, overload

from pydantic import SecretStr

from worker.client.dispatch import Dispatcher
from worker.client.errors import ClientError, SidecarUnavailable
from worker.client.options import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    ClientOptions,
    GenerateOptions,
)
from worker.client.ports import Transport, sidecar_failures
from worker.client.prompt import Messages, build_prompt
from worker.client.stream import AsyncReplyStream
from worker.client.types import ChatCompletion
from worker.contract.envelopes import Publication
from worker.contract.ids import assign_context_id
from worker.transport.sidecar import SidecarClient

__all__ = ["AsyncClient", "default_address"]

log = logging.getLogger(__name__)


def default_address() -> str:
    """The local sidecar: `127.0.0.1:$DAPR_GRPC_PORT` (50001 when unset)."""
    return f"127.0.0.1:{os.environ.get('DAPR_GRPC_PORT') or '50001'}"


class AsyncClient:
    """A client of the streaming worker, through the local Dapr sidecar.

        async with AsyncClient() as client:
            async for event in await client.generate("Tell me a story"):
                ...
            reply = await client.generate(messages, stream=False)

    It publishes each prompt as plain JSON to `prompt_topic` and reads the replies
    from `response_topic` (or `reply_topic`, which the prompt then asks for)
    through one streaming subscription on the sidecar, shared by all requests in
    flight; no app port is needed. Its keywords are `ClientOptions`.

    `llm_component=None` leaves the choice to the worker
    (its `DAPR_LLM_COMPONENT_DEFAULT`); the client does not read that variable.
    `timeout` is how long to wait for each next event of a reply, the first
    included; a long reply that keeps streaming never times out. `connect_timeout`
    bounds each wait on the sidecar itself: to answer at all, to confirm the
    subscription, to take a prompt.
    """

    def __init__(self, address: str | None = None, **options: Unpack[ClientOptions]) -> None:
        self.address = address or default_address()
        self._pubsub = options.get("pubsub", "pubsub")
        self._prompt_topic = options.get("prompt_topic", "prompts")
        self._cancel_topic = options.get("cancel_topic", "cancellations")
        self._reply_topic = options.get("reply_topic")
        self._topic = self._reply_topic or options.get("response_topic", "responses")
        self._llm_component = options.get("llm_component")
        self._timeout = options.get("timeout", DEFAULT_TIMEOUT)
        self._connect_timeout = options.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        token = options.get("api_token")
        token = token if token is not None else os.environ.get("DAPR_API_TOKEN")
        self._api_token = SecretStr(token) if token else None
        self._transport = options.get("transport")
        self._stack = AsyncExitStack()
        self._dispatcher: Dispatcher | None = None

    @property
    def in_flight(self) -> int:
        """Requests whose events are being routed (streams not finished or closed)."""
        return self._dispatcher.requests if self._dispatcher else 0

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Connect to the sidecar; `SidecarUnavailable` if it does not answer in time."""
        if self._dispatcher is not None:
            return
        transport = self._transport
        try:
            with sidecar_failures(
                f"cannot reach the Dapr sidecar at {self.address} "
                f"within {self._connect_timeout:g} s"
            ):
                if transport is None:
                    # Ours to close; a transport passed in belongs to the caller.
                    transport = await self._stack.enter_async_context(
                        SidecarClient(self.address, api_token=self._api_token)
                    )
                await transport.wait_ready(self._connect_timeout)
        except SidecarUnavailable:
            await self._stack.aclose()
            raise
        self._transport = transport
        self._dispatcher = Dispatcher(transport, pubsub=self._pubsub, topic=self._topic)

    async def _publish(
        self,
        transport: Transport,
        topic: str,
        data: bytes,
        *,
        event_id: str,
        kind: str,
        metadata: Mapping[str, str],
    ) -> None:
        """Plain JSON (Dapr wraps it in a CloudEvent) to `topic`; `SidecarUnavailable`
        when the sidecar refuses it or does not take it within `connect_timeout`."""
        publication = Publication(
            pubsub=self._pubsub,
            topic=topic,
            data=data,
            event_id=event_id,
            kind=kind,
            content_type="application/json",
            metadata=metadata,
        )
        try:
            async with asyncio.timeout(self._connect_timeout):
                with sidecar_failures():
                    await transport.publish(publication)
        except TimeoutError as exc:
            raise SidecarUnavailable(
                f"the Dapr sidecar at {self.address} did not take the {kind} within "
                f"{self._connect_timeout:g} s (it may still arrive)"
            ) from exc

    async def _cancel(self, transport: Transport, request_id: str, context_id: str) -> None:
        """Ask the worker to stop a reply nobody reads any more (contract section 4)."""
        body = json.dumps({"context_id": context_id, "request_id": request_id}).encode()
        try:
            await self._publish(
                transport,
                self._cancel_topic,
                body,
                event_id=f"cancel:{request_id}",
                kind="cancel",
                # The conversation's partition, like its prompts (contract section 4).
                metadata={"partitionKey": context_id},
            )
        except SidecarUnavailable as exc:
            log.warning("request %s: cancel not sent: %s", request_id, exc)

    async def aclose(self) -> None:
        if self._dispatcher is not None:
            await self._dispatcher.aclose()
            self._dispatcher = None
        await self._stack.aclose()

    @overload
    async def generate(
        self,
        messages: Messages,
        *,
        stream: Literal[True] = ...,
        **options: Unpack[GenerateOptions],
    ) -> AsyncReplyStream: ...

    @overload
    async def generate(
        self, messages: Messages, *, stream: Literal[False], **options: Unpack[GenerateOptions]
    ) -> ChatCompletion: ...

    @overload
    async def generate(
        self, messages: Messages, *, stream: bool, **options: Unpack[GenerateOptions]
    ) -> AsyncReplyStream | ChatCompletion: ...

    async def generate(
        self, messages: Messages, *, stream: bool = True, **options: Unpack[GenerateOptions]
    ) -> AsyncReplyStream | ChatCompletion:
        """Publish a prompt; its reply as a stream of dicts, or whole with `stream=False`.

        `messages` is a list of `{"role", "content"}` or one string (a user message).
        `context_id` continues a conversation (the worker prepends its stored turns
        unless `history=False`); `timeout=None` takes the client's. Raises
        `InvalidRequest` before publishing anything the worker would reject, and
        `SidecarUnavailable` when the sidecar cannot be reached; the reply raises
        `GenerationFailed`, `GenerationCancelled` or `GenerationTimeout`.
        """
        if not options.get("llm_component"):
            # `options` is this call's own dict (its keywords): changing it is private.
            options["llm_component"] = self._llm_component
        prompt = build_prompt(messages, reply_topic=self._reply_topic, **options)
        if self._dispatcher is None or self._transport is None:
            raise ClientError("the client is not open (use `async with AsyncClient()`)")
        dispatcher = self._dispatcher
        transport = self._transport
        # Subscribed before publishing, so that no event of the reply can be missed.
        # Both wait on the sidecar, which can hang rather than fail: bounded.
        try:
            async with asyncio.timeout(self._connect_timeout):
                inbox = await dispatcher.register(prompt.request_id)
        except TimeoutError as exc:
            raise SidecarUnavailable(
                f"the Dapr sidecar at {self.address} did not confirm the subscription to "
                f"{self._pubsub}/{self._topic} within {self._connect_timeout:g} s"
            ) from exc
        try:
            await self._publish(
                transport,
                self._prompt_topic,
                prompt.body,
                event_id=prompt.request_id,
                kind="prompt",
                metadata=prompt.publish_metadata,
            )
        except BaseException:
            dispatcher.unregister(prompt.request_id)
            raise
        timeout = options.get("timeout")
        reply = AsyncReplyStream(
            request_id=prompt.request_id,
            inbox=inbox,
            release=lambda: dispatcher.unregister(prompt.request_id),
            timeout=self._timeout if timeout is None else timeout,
            abandon=lambda: self._cancel(
                transport,
                prompt.request_id,
                prompt.context_id or assign_context_id(prompt.request_id),
            ),
        )
        if stream:
            return reply
        async with reply:
            return await reply.collect()
