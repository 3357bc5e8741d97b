"""Many turns' events in few sidecar calls.

Every turn publishes its events one at a time (`EventStream` waits for each
acknowledgement), so under load hundreds of single-event publishes from different turns
are outstanding at once, and each gRPC call costs the worker and its sidecar more than
the event itself. `BatchingPublisher` stands between the turns and the sidecar: while
fewer than `max_in_flight` calls are outstanding an event goes out at once, alone; beyond
that, events queue and the next call to come free takes all of them (up to `max_batch`)
as one bulk publish. Light load keeps single-event latency; heavy load gets fewer,
larger calls instead of a queue of small ones.

Order is unaffected. A bulk publish is unordered inside, but it never holds two events
of one turn: a turn publishes its next event only after this one was acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from worker.errors import SidecarError
from worker.observability.metrics import Metrics
from worker.pipeline.ports import BulkEntry, BulkEventSink

__all__ = ["BatchingPublisher"]

log = logging.getLogger(__name__)

# Well under the sidecar's default 4 MiB gRPC request limit.
_MAX_BATCH_BYTES = 1024 * 1024


@dataclass(slots=True)
class _Queued:
    pubsub: str
    topic: str
    data: bytes
    content_type: str
    metadata: Mapping[str, str]
    traceparent: str | None
    done: asyncio.Future[None] = field(repr=False)

    def settle(self, error: BaseException | None = None) -> None:
        if self.done.done():  # its turn stopped waiting (cancelled)
            return
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)


class BatchingPublisher:
    """An `EventSink` that merges concurrent publishes into bulk publishes under load."""

    def __init__(
        self,
        sink: BulkEventSink,
        *,
        max_in_flight: int,
        max_batch: int,
        metrics: Metrics | None = None,
    ) -> None:
        if max_in_flight < 1 or max_batch < 1:
            raise ValueError("max_in_flight and max_batch must be at least 1")
        self._sink = sink
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._metrics = metrics
        self._queue: deque[_Queued] = deque()
        self._senders = 0
        self._group: asyncio.TaskGroup | None = None

    async def __aenter__(self) -> Self:
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        if group is not None:
            # Waits for the calls still out; nothing new is queued once the turns are done.
            await group.__aexit__(exc_type, exc, tb)

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
        if self._group is None:
            raise SidecarError("the publisher is not running (use `async with`)")
        queued = _Queued(
            pubsub,
            topic,
            data,
            content_type,
            metadata,
            traceparent,
            asyncio.get_running_loop().create_future(),
        )
        self._queue.append(queued)
        if self._senders < self._max_in_flight:
            self._senders += 1
            self._group.create_task(self._send_queued())
        # Cancelling this await cancels `done`; a sender then skips the event.
        await queued.done

    async def _send_queued(self) -> None:
        try:
            while batch := self._take():
                await self._send(batch)
        finally:
            self._senders -= 1

    def _take(self) -> list[_Queued]:
        """The oldest waiting event and those queued after it for the same topic."""
        batch: list[_Queued] = []
        kept: deque[_Queued] = deque()
        size = 0
        while self._queue and len(batch) < self._max_batch:
            queued = self._queue.popleft()
            if queued.done.done():
                continue
            if batch and (
                (queued.pubsub, queued.topic) != (batch[0].pubsub, batch[0].topic)
                or size + len(queued.data) > _MAX_BATCH_BYTES
            ):
                kept.append(queued)
                continue
            batch.append(queued)
            size += len(queued.data)
        kept.extend(self._queue)
        self._queue = kept
        return batch

    async def _send(self, batch: list[_Queued]) -> None:
        if self._metrics is not None:
            self._metrics.publish_batch_size.observe(len(batch))
        try:
            if len(batch) == 1:
                await self._send_one(batch[0])
            else:
                await self._send_bulk(batch)
        except Exception as exc:
            # The call's failure is its events' failure, never this task group's: an
            # error here would otherwise stop every turn of the replica.
            for queued in batch:
                queued.settle(exc)
        finally:
            # Cancelled mid-call: no turn waits forever.
            for queued in batch:
                queued.settle(SidecarError("the publish was interrupted"))

    async def _send_one(self, queued: _Queued) -> None:
        await self._sink.publish(
            pubsub=queued.pubsub,
            topic=queued.topic,
            data=queued.data,
            content_type=queued.content_type,
            metadata=queued.metadata,
            traceparent=queued.traceparent,
        )
        queued.settle()

    async def _send_bulk(self, batch: list[_Queued]) -> None:
        first = batch[0]
        failed = await self._sink.publish_bulk(
            pubsub=first.pubsub,
            topic=first.topic,
            entries=[
                BulkEntry(str(n), queued.data, queued.content_type, queued.metadata)
                for n, queued in enumerate(batch)
            ],
        )
        if failed:
            log.warning("bulk publish: %d of %d events failed", len(failed), len(batch))
        for n, queued in enumerate(batch):
            error = failed.get(str(n))
            queued.settle(None if error is None else SidecarError(f"publish failed: {error}"))
