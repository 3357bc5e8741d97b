"""Each publish call over the API where it costs least: small over HTTP, large over gRPC.

Measured per call against a real daprd (`python -m bench.call_cost`, results in
`bench/results/call-cost/`): a publish costs the worker about a third of the CPU over
HTTP that it costs over grpc.aio, at every size. Up to a few events a call daprd's side
costs no more either. From about 20 events on, daprd's HTTP side spends more on each
event than its gRPC side (it parses and re-encodes every entry of an HTTP bulk publish),
and from about 50 on, more than the worker saves: at 100 events a call, about a quarter
more. Calls that large come
only when the bus is saturated, which is when daprd's CPU matters most.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.contract.envelopes import Publication
from worker.pipeline.ports import BulkEventSink

__all__ = ["LARGE_BULK_EVENTS", "RoutedPublisher"]

# From here on a bulk publish goes over gRPC (see the module docstring).
LARGE_BULK_EVENTS = 32


class RoutedPublisher:
    """A `BulkEventSink`: single events and small bulk publishes to `small`, bulk
    publishes of `large_from` events or more to `large`."""

    def __init__(
        self, small: BulkEventSink, large: BulkEventSink, *, large_from: int = LARGE_BULK_EVENTS
    ) -> None:
        self._small = small
        self._large = large
        self._large_from = large_from

    async def publish(self, publication: Publication, *, call_timeout: float | None = None) -> None:
        await self._small.publish(publication, call_timeout=call_timeout)

    async def publish_bulk(
        self, publications: Sequence[Publication], *, call_timeout: float | None = None
    ) -> dict[int, str]:
        sink = self._large if len(publications) >= self._large_from else self._small
        return await sink.publish_bulk(publications, call_timeout=call_timeout)
