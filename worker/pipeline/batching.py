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
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from worker.contract.envelopes import Publication
from worker.errors import SidecarError
from worker.observability.metrics import Metrics
from worker.pipeline.ports import BulkEventSink

__all__ = ["BatchingPublisher"]

log = logging.getLogger(__name__)

# Well under the sidecar's default 4 MiB gRPC request limit.
_MAX_BATCH_BYTES = 1024 * 1024


@dataclass(slots=True)
class _Queued:
    publication: Publication
    # Loop time by which the sidecar must have acknowledged it (None: no deadline). An
    # event still queued then is not sent: its turn's lease may no longer cover it.
    deadline: float | None
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

    async def publish(self, publication: Publication, *, call_timeout: float | None = None) -> None:
        # Cancelling this await cancels the future; a sender then skips the event.
        await self.submit(publication, call_timeout=call_timeout)

    def submit(
        self, publication: Publication, *, call_timeout: float | None = None
    ) -> asyncio.Future[None]:
        """Queue `publication`; the future settles when the sidecar acknowledged it.

        Without waiting: a turn's chunk writer is called back instead of woken (see
        `ChunkWriter`). Cancel the future to withdraw an event not yet sent.
        """
        if self._group is None:
            raise SidecarError("the publisher is not running (use `async with`)")
        loop = asyncio.get_running_loop()
        deadline = None if call_timeout is None else loop.time() + call_timeout
        queued = _Queued(publication, deadline, loop.create_future())
        self._queue.append(queued)
        if self._senders < self._max_in_flight:
            self._senders += 1
            self._group.create_task(self._send_queued())
        return queued.done

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
        now = asyncio.get_running_loop().time()
        while self._queue and len(batch) < self._max_batch:
            queued = self._queue.popleft()
            if queued.done.done():
                continue
            if queued.deadline is not None and queued.deadline <= now:
                queued.settle(SidecarError("the publish waited past its deadline: not sent"))
                continue
            first = batch[0].publication if batch else None
            publication = queued.publication
            if first is not None and (
                (publication.pubsub, publication.topic) != (first.pubsub, first.topic)
                or size + len(publication.data) > _MAX_BATCH_BYTES
            ):
                kept.append(queued)
                continue
            batch.append(queued)
            size += len(publication.data)
        kept.extend(self._queue)
        self._queue = kept
        return batch

    async def _send(self, batch: list[_Queued]) -> None:
        if self._metrics is not None:
            self._metrics.publish_batch_size.observe(len(batch))
        deadlines = [q.deadline for q in batch if q.deadline is not None]
        timeout = None
        if deadlines:
            timeout = max(min(deadlines) - asyncio.get_running_loop().time(), 0.001)
        try:
            if len(batch) == 1:
                await self._sink.publish(batch[0].publication, call_timeout=timeout)
                batch[0].settle()
            else:
                await self._send_bulk(batch, timeout)
        except Exception as exc:
            # The call's failure is its events' failure, never this task group's: an
            # error here would otherwise stop every turn of the replica.
            for queued in batch:
                queued.settle(exc)
        finally:
            # Cancelled mid-call: no turn waits forever.
            for queued in batch:
                queued.settle(SidecarError("the publish was interrupted"))

    async def _send_bulk(self, batch: list[_Queued], call_timeout: float | None) -> None:
        publications = [q.publication for q in batch]
        failed = await self._sink.publish_bulk(publications, call_timeout=call_timeout)
        if failed:
            log.warning("bulk publish: %d of %d events failed", len(failed), len(batch))
        for n, queued in enumerate(batch):
            error = failed.get(n)
            queued.settle(None if error is None else SidecarError(f"publish failed: {error}"))
