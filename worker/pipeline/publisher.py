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

from worker.contract.events import EventEncoder, ResponseEvent, event_id
from worker.errors import SidecarError
from worker.observability.metrics import Metrics
from worker.observability.tracing import traced_sink  # [otel]
from worker.pipeline.ports import EventSink, Publication

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

    async def emit_chunk(self, index: int, text: str) -> None:
        """`emit(Chunk, ...)` without building the model: the per-token path."""
        self.seq += 1
        body = self._encoder.encode_chunk(self.seq, index, text)
        await self.send(self.publication("chunk", body, self._event_id()))

    async def send(self, publication: Publication) -> None:
        """Publish one built event (again, when replayed: the same id, de-duplicated)."""
        delay = self._backoff
        kind = publication.kind
        for attempt in range(1, self._attempts + 1):
            # Checked before every try: a retry must not go out after the lease slipped.
            timeout = self._fence() if self._fence is not None else self._timeout
            began = time.perf_counter()
            try:
                await self._sink.publish(publication, call_timeout=timeout)
                if self.metrics is not None:
                    self.metrics.observe_publish(kind, time.perf_counter() - began)
                return
            except SidecarError as exc:
                if attempt == self._attempts:
                    raise
                if self.metrics is not None:
                    self.metrics.publish_retries.inc()
                # Same id on every try, so a publish that did land is de-duplicated downstream.
                log.warning(
                    "publish of a %s event of %s failed (try %d of %d), retrying in %.2fs: %s",
                    kind,
                    self.address.request_id,
                    attempt,
                    self._attempts,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)


class ChunkWriter:
    """Turns written text into chunk events, merging whatever arrives during a publish."""

    def __init__(self, stream: EventStream) -> None:
        self._stream = stream
        self._pending: list[str] = []
        self._wakeup = asyncio.Event()
        self._closed = False
        self.chunks = 0
        self.text_length = 0
        self.published_text: list[str] = []

    def write(self, text: str) -> None:
        if text:
            self._pending.append(text)
            self._wakeup.set()

    def close(self) -> None:
        """No more text: `run` publishes what is pending, then returns."""
        self._closed = True
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            if not self._pending:
                if self._closed:
                    return
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            text = "".join(self._pending)
            if self._stream.metrics is not None:
                self._stream.metrics.deltas_per_chunk.observe(len(self._pending))
            self._pending.clear()
            await self._stream.emit_chunk(self.chunks, text)
            self.chunks += 1
            self.text_length += len(text)
            self.published_text.append(text)
