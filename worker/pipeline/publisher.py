"""Ordered publishing of one turn's events, and chunk coalescing.

`EventStream` numbers a turn's events, makes each a `Publication` and publishes it only
after the sidecar acknowledged the previous one (the contract's order guarantee). It is
the one place a publication leaves its turn, so the turn's fence is checked here: once
the lease cannot be confirmed, nothing more goes out (`LeaseLost`). `ChunkWriter` keeps at
most one chunk publish in flight: tokens that arrive meanwhile are merged into the next
chunk, so a slow publish adds at most one publish's delay and never queues up events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker.contract.envelopes import Publication
from worker.contract.events import EventEncoder, ResponseEvent, event_id
from worker.errors import SidecarError
from worker.observability.metrics import Metrics
from worker.observability.tracing import traced_sink  # [otel]
from worker.pipeline.ports import EventSink, SubmittingSink

__all__ = ["ChunkWriter", "EventStream", "Fencing", "PublishPolicy", "TurnAddress"]

log = logging.getLogger(__name__)

# Before each publish: the deadline of the sidecar call, or `LeaseLost` if none may go out.
Fencing = Callable[[], float]


@dataclass(frozen=True, slots=True)
class PublishPolicy:
    pubsub: str
    source: str
    attempts: int
    backoff: float


@dataclass(frozen=True, slots=True)
class TurnAddress:
    """Where and as what one turn's events go."""

    context_id: str
    request_id: str
    attempt: int
    pubsub: str
    topic: str
    source: str
    traceparent: str | None = None
    tracestate: str | None = None  # [otel]


class EventStream:
    """Publishes one turn's events in `seq` order, each acknowledged before the next."""

    def __init__(
        self,
        sink: EventSink,
        address: TurnAddress,
        *,
        attempts: int = 5,
        backoff: float = 0.05,
        fence: Fencing | None = None,
        timeout: float | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._sink = traced_sink(sink)  # [otel] a span per publish within a turn
        # Chunks are submitted without waiting where the sink allows it (the batching
        # publisher, untraced): see `ChunkWriter`.
        self._submit = self._sink.submit if isinstance(self._sink, SubmittingSink) else None
        self._fence = fence
        self._timeout = timeout
        self.metrics = metrics
        self.address = address
        self._attempts = attempts
        self._backoff = backoff
        self._metadata = {"partitionKey": address.context_id}
        self._encoder = EventEncoder(
            context_id=address.context_id,
            request_id=address.request_id,
            attempt=address.attempt,
            source=address.source,
            traceparent=address.traceparent,
            tracestate=address.tracestate,  # [otel]
        )
        self.seq = 0

    async def emit(self, event_type: type[ResponseEvent], **fields: Any) -> ResponseEvent:
        event, publication = self.build(event_type, **fields)
        await self.send(publication)
        return event

    def build(
        self, event_type: type[ResponseEvent], **fields: Any
    ) -> tuple[ResponseEvent, Publication]:
        """The next event and its publication, numbered but not yet published."""
        self.seq += 1
        event = event_type(
            context_id=self.address.context_id,
            request_id=self.address.request_id,
            attempt=self.address.attempt,
            seq=self.seq,
            **fields,
        )
        return event, self.publication(
            event.type.name.lower(), self._encoder.encode(event), self._event_id()
        )

    def _event_id(self) -> str:
        return event_id(self.address.request_id, self.address.attempt, self.seq)

    def publication(self, kind: str, body: bytes, event_id: str) -> Publication:
        """`body` (a CloudEvent of this turn, built now or recorded before) as a publication."""
        return Publication(
            pubsub=self.address.pubsub,
            topic=self.address.topic,
            data=body,
            event_id=event_id,
            kind=kind,
            metadata=self._metadata,
            traceparent=self.address.traceparent,
        )

    def chunk(self, index: int, text: str) -> Publication:
        """The next event, a chunk, built without its model: the per-token path."""
        self.seq += 1
        body = self._encoder.encode_chunk(self.seq, index, text)
        return self.publication("chunk", body, self._event_id())

    @property
    def can_submit(self) -> bool:
        return self._submit is not None

    def submit(self, publication: Publication) -> asyncio.Future[None]:
        """One try of `send` without waiting for it: the future settles with its outcome.

        The fence is checked now (`LeaseLost`), as `send` checks it before every try.
        """
        if self._submit is None:
            raise TypeError("this stream's sink cannot submit without waiting")
        return self._submit(publication, call_timeout=self._call_timeout())

    def _call_timeout(self) -> float | None:
        """The next try's deadline; `LeaseLost` once no try may go out (the fence)."""
        return self._fence() if self._fence is not None else self._timeout

    async def retry(self, publication: Publication, error: BaseException) -> None:
        """`send`'s other tries, after the first (by `submit`) failed with `error`."""
        if not isinstance(error, SidecarError) or self._attempts == 1:
            raise error
        self._failed_try(publication, 1, error, self._backoff)
        await asyncio.sleep(self._backoff)
        await self.send(publication, tried=1)

    async def send(self, publication: Publication, *, tried: int = 0) -> None:
        """Publish one built event (again, when replayed: the same id, de-duplicated).

        `tried`: tries made already, counted against the attempts.
        """
        delay = self._backoff * 2**tried
        kind = publication.kind
        for attempt in range(tried + 1, self._attempts + 1):
            # Checked before every try: a retry must not go out after the lease slipped.
            timeout = self._call_timeout()
            began = time.perf_counter()
            try:
                await self._sink.publish(publication, call_timeout=timeout)
                if self.metrics is not None:
                    self.metrics.observe_publish(kind, time.perf_counter() - began)
                return
            except SidecarError as exc:
                if attempt == self._attempts:
                    raise
                self._failed_try(publication, attempt, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _failed_try(
        self, publication: Publication, attempt: int, error: BaseException, delay: float
    ) -> None:
        if self.metrics is not None:
            self.metrics.publish_retries.inc()
        # Same id on every try, so a publish that did land is de-duplicated downstream.
        log.warning(
            "publish of a %s event of %s failed (try %d of %d), retrying in %.2fs: %s",
            publication.kind,
            self.address.request_id,
            attempt,
            self._attempts,
            delay,
            error,
        )


class ChunkWriter:
    """Turns written text into chunk events, merging whatever arrives during a publish.

    At most one chunk of the turn is out at a time; text written meanwhile goes out as
    the next chunk once the sidecar acknowledged this one. Where the stream can submit
    without waiting (the batching publisher), no task wakes per token: `write` submits a
    chunk on the loop's next pass when none is out, and the acknowledgement's callback
    submits what came meanwhile. `run` owns what is left: it returns once all written
    text is out, sends a chunk whose quick try failed again with `EventStream.send`'s
    retries, and raises what the turn must hear (`LeaseLost`, a `SidecarError` after the
    last try).
    """

    def __init__(self, stream: EventStream) -> None:
        self._stream = stream
        self._quick = stream.can_submit
        self._pending: list[str] = []
        self._wakeup = asyncio.Event()
        self._closed = False
        self._stopped = False  # `run` ended: nothing more goes out
        self._soon = False  # a submit is scheduled for the loop's next pass
        self._out: tuple[Publication, str, float, asyncio.Future[None]] | None = None
        self._retry: tuple[Publication, str, BaseException] | None = None
        self._error: BaseException | None = None
        self.chunks = 0
        self.text_length = 0
        self.published_text: list[str] = []

    def write(self, text: str) -> None:
        if not text:
            return
        self._pending.append(text)
        if not self._quick:
            self._wakeup.set()
        elif self._idle and not self._stopped:
            self._submit_soon()

    def _submit_soon(self) -> None:
        """Submit on the loop's next pass, not now: what else is ready to run first (other
        tokens, under load many) joins this chunk, as it did when a task woke to send it."""
        if not self._soon:
            self._soon = True
            asyncio.get_running_loop().call_soon(self._submit_now)

    def _submit_now(self) -> None:
        self._soon = False
        if self._pending and self._idle and not self._stopped:
            self._submit_pending()

    @property
    def _idle(self) -> bool:
        """Nothing out, nothing to try again, nothing gone wrong: a chunk may go."""
        return self._out is None and self._retry is None and self._error is None

    def close(self) -> None:
        """No more text: `run` publishes what is pending, then returns."""
        self._closed = True
        self._wakeup.set()

    async def run(self) -> None:
        try:
            while True:
                if self._error is not None:
                    raise self._error
                if self._retry is not None:
                    publication, text, error = self._retry
                    await self._stream.retry(publication, error)
                    self._retry = None
                    self._published(text)
                    continue
                if self._out is None and self._pending:
                    if self._quick:
                        self._submit_pending()
                    else:
                        publication, text = self._next_chunk()
                        await self._stream.send(publication)
                        self._published(text)
                    continue
                if self._out is None and self._closed:
                    return
                await self._wakeup.wait()
                self._wakeup.clear()
        finally:
            self._stopped = True
            if self._out is not None:
                self._out[3].cancel()  # withdrawn if not sent yet

    def _next_chunk(self) -> tuple[Publication, str]:
        text = "".join(self._pending)
        if self._stream.metrics is not None:
            self._stream.metrics.deltas_per_chunk.observe(len(self._pending))
        self._pending.clear()
        return self._stream.chunk(self.chunks, text), text

    def _submit_pending(self) -> None:
        publication, text = self._next_chunk()
        try:
            done = self._stream.submit(publication)
        except Exception as exc:  # the fence (LeaseLost), or a publisher not running
            self._error = exc
            self._wakeup.set()
            return
        self._out = (publication, text, time.perf_counter(), done)
        done.add_done_callback(self._acknowledged)

    def _acknowledged(self, done: asyncio.Future[None]) -> None:
        if self._out is None or self._out[3] is not done:
            return
        publication, text, began, _ = self._out
        self._out = None
        if self._stopped:
            return
        error = SidecarError("the publish was withdrawn") if done.cancelled() else done.exception()
        if error is not None:
            self._retry = (publication, text, error)  # `run` tries again, with backoff
            self._wakeup.set()
            return
        if self._stream.metrics is not None:
            self._stream.metrics.observe_publish("chunk", time.perf_counter() - began)
        self._published(text)
        if self._pending:
            self._submit_soon()
        elif self._closed:
            self._wakeup.set()

    def _published(self, text: str) -> None:
        self.chunks += 1
        self.text_length += len(text)
        self.published_text.append(text)
