"""Many turns' events in few sidecar calls.

Every turn publishes its events one at a time (`EventStream` waits for each
acknowledgement), so under load hundreds of single-event publishes from different turns
are outstanding at once. `BatchingPublisher` is a `Coalescer` of publishes: beyond
`max_in_flight` calls out, the events waiting for one pubsub and topic go out together
as one bulk publish (at most `max_batch` events, 1 MiB).

Order is unaffected. A bulk publish is unordered inside, but it never holds two events
of one turn: a turn publishes its next event only after this one was acknowledged.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

from worker.contract.envelopes import Publication
from worker.errors import SidecarError
from worker.observability.metrics import Metrics
from worker.pipeline.coalescing import Coalescer, Request
from worker.pipeline.ports import BulkEventSink

__all__ = ["BatchingPublisher"]

log = logging.getLogger(__name__)

# Well under the sidecar's default 4 MiB gRPC request limit.
_MAX_BATCH_BYTES = 1024 * 1024


class BatchingPublisher(Coalescer[Publication, None]):
    """An `EventSink` that merges concurrent publishes into bulk publishes under load."""

    what = "publish"
    _max_weight = _MAX_BATCH_BYTES

    def __init__(
        self,
        sink: BulkEventSink,
        *,
        max_in_flight: int,
        max_batch: int,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(max_in_flight=max_in_flight, max_batch=max_batch)
        self._sink = sink
        self._metrics = metrics

    async def publish(self, publication: Publication, *, call_timeout: float | None = None) -> None:
        # Cancelling this await cancels the future; a sender then skips the event.
        await self.submit(publication, call_timeout=call_timeout)

    def _share_key(self, item: Publication) -> Hashable:
        return (item.pubsub, item.topic)

    def _weight(self, item: Publication) -> int:
        return len(item.data)

    async def _call(
        self, batch: list[Request[Publication, None]], call_timeout: float | None
    ) -> None:
        if self._metrics is not None:
            self._metrics.publish_batch_size.observe(len(batch))
        if len(batch) == 1:
            await self._sink.publish(batch[0].item, call_timeout=call_timeout)
            batch[0].settle(None)
            return
        items = [r.item for r in batch]
        failed = await self._sink.publish_bulk(items, call_timeout=call_timeout)
        if failed:
            log.warning("bulk publish: %d of %d events failed", len(failed), len(batch))
        for n, request in enumerate(batch):
            error = failed.get(n)
            request.settle(None if error is None else SidecarError(f"publish failed: {error}"))
