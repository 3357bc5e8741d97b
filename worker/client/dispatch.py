"""One subscription on the response topic, shared by every request of a client.

A subscription per request would be wrong, not only wasteful: on a broker with
consumer groups (Redis streams, Kafka) the subscriptions of one app compete, each
seeing part of the events; and daprd 1.17 mishandles several streaming subscriptions
to one topic (closing one stops another on in-memory pub/sub; on Redis a closed one
still takes the next event). So a single reader task, alive as long as the client,
routes each event to the inbox of the request it belongs to and ignores the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass

from worker.client.consumer import Event
from worker.client.errors import ClientError, SidecarUnavailable
from worker.client.ports import Subscriber, sidecar_failures
from worker.contract.envelopes import InboundMessage

__all__ = ["Broken", "Dispatcher", "Inbox"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Broken:
    """Put in every inbox when the subscription ends: no more events will come."""

    error: ClientError


# What an inbox receives: the request's events, then possibly `Broken`.
Inbox = asyncio.Queue[Event | Broken]


class Dispatcher:
    """Routes the events of `pubsub/topic` to registered requests by their request id."""

    def __init__(self, subscriber: Subscriber, *, pubsub: str, topic: str) -> None:
        self._subscriber = subscriber
        self._pubsub = pubsub
        self._topic = topic
        self._inboxes: dict[str, Inbox] = {}
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._activity = asyncio.Event()

    @property
    def requests(self) -> int:
        """How many requests are registered (in flight)."""
        return len(self._inboxes)

    async def register(self, request_id: str) -> Inbox:
        """An inbox for the request; returns once the subscription is live.

        Call before publishing the prompt: an event published before the sidecar
        confirmed the subscription may never reach it (in-memory pub/sub broadcasts
        only to those subscribed at the time).
        """
        if self._closed:
            raise ClientError("the client is closed")
        if request_id in self._inboxes:
            raise ClientError(f"request {request_id!r} is already in flight")
        inbox: Inbox = asyncio.Queue()
        self._inboxes[request_id] = inbox
        try:
            await self._ensure_reading()
        except BaseException:
            del self._inboxes[request_id]
            raise
        return inbox

    def unregister(self, request_id: str) -> None:
        self._inboxes.pop(request_id, None)

    async def aclose(self) -> None:
        self._closed = True
        if self._reader is not None:
            await self._until_quiet()
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        self._fail_all(ClientError("the client was closed"))

    async def _until_quiet(self, quiet: float = 0.3, limit: float = 3.0) -> None:
        """Keep reading (and acknowledging) while the sidecar still sends: daprd retries an
        event left unacknowledged at close without end, and wedges the subscription."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                while True:
                    self._activity.clear()
                    try:
                        await asyncio.wait_for(self._activity.wait(), quiet)
                    except TimeoutError:
                        return

    async def _ensure_reading(self) -> None:
        async with self._lock:
            if self._reader is not None and not self._reader.done():
                return
            confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._reader = asyncio.create_task(
                self._read(confirmed), name=f"llm-stream-client:{self._topic}"
            )
            try:
                await confirmed
            except BaseException:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, ClientError):
                    await self._reader
                self._reader = None
                raise

    async def _read(self, confirmed: asyncio.Future[None]) -> None:
        """Own the subscription from start to end; tell the inboxes if it breaks."""
        try:
            with sidecar_failures():
                subscription = self._subscriber.subscribe(self._pubsub, self._topic)
                async with subscription as messages:
                    confirmed.set_result(None)
                    async for message in messages:
                        self._activity.set()
                        self._route(message)
            error = SidecarUnavailable(f"the sidecar ended the subscription to {self._topic}")
        except SidecarUnavailable as exc:
            error = exc
        except Exception as exc:
            # A bug in the transport, but it must still reach the requests that wait,
            # not kill the reader mutely.
            error = SidecarUnavailable(repr(exc))
            error.__cause__ = exc
        except asyncio.CancelledError:
            if not confirmed.done():
                confirmed.cancel()
            raise
        if not confirmed.done():
            confirmed.set_exception(error)
            return
        log.warning("%s", error)
        # The next request subscribes afresh; those in flight lost their events.
        self._fail_all(error)

    def _route(self, message: InboundMessage) -> None:
        try:
            data = json.loads(message.data)
        except ValueError:
            return  # not one of the worker's events
        if not isinstance(data, dict):
            return
        inbox = self._inboxes.get(str(data.get("request_id")))
        if inbox is not None:
            inbox.put_nowait(Event(type=message.type, data=data, id=message.id))

    def _fail_all(self, error: ClientError) -> None:
        for inbox in self._inboxes.values():
            inbox.put_nowait(Broken(error))
