"""`auto` publishing: small calls over HTTP, large bulk publishes over gRPC, nothing lost
or reordered on the way, refusals reported by the sink that refused."""

from __future__ import annotations

import json

from tests.fakes.ports import FakeSink
from worker.contract.envelopes import Publication
from worker.transport.routed import LARGE_BULK_EVENTS, RoutedPublisher


def _events(count: int) -> list[Publication]:
    return [
        Publication(
            pubsub="pubsub",
            topic="responses",
            data=json.dumps({"type": "chunk", "data": {"seq": n}}).encode(),
            event_id=f"e{n}",
            kind="chunk",
        )
        for n in range(count)
    ]


async def test_single_events_and_small_bulk_publishes_take_the_small_route() -> None:
    small, large = FakeSink(), FakeSink()
    routed = RoutedPublisher(small, large)
    await routed.publish(_events(1)[0], call_timeout=2)
    assert await routed.publish_bulk(_events(LARGE_BULK_EVENTS - 1), call_timeout=3) == {}
    assert small.bulk_sizes == [LARGE_BULK_EVENTS - 1]
    assert len(small.published) == LARGE_BULK_EVENTS
    assert small.timeouts == [2, 3]
    assert large.calls == 0


async def test_large_bulk_publishes_take_the_large_route_and_keep_its_refusals() -> None:
    small, large = FakeSink(), FakeSink(refuse_entry=lambda n: n == 3)
    routed = RoutedPublisher(small, large)
    failed = await routed.publish_bulk(_events(LARGE_BULK_EVENTS), call_timeout=4)
    assert large.bulk_sizes == [LARGE_BULK_EVENTS]
    assert large.timeouts == [4]
    assert len(failed) == 1
    assert len(large.published) == LARGE_BULK_EVENTS - 1
    assert small.calls == 0
