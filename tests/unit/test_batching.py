"""Many turns' publishes merged into bulk publishes: when, how, and what a failure does."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from tests.fakes.ports import FakeSink, ScriptedBackend
from tests.fakes.turn import run_turn
from worker.contract.envelopes import Publication
from worker.errors import SidecarError
from worker.llm.base import Finish, TextDelta
from worker.pipeline.batching import BatchingPublisher


async def _publish(
    publisher: BatchingPublisher, n: int, topic: str = "responses", timeout: float | None = None
) -> None:
    await publisher.publish(
        Publication(
            pubsub="pubsub",
            topic=topic,
            data=json.dumps({"type": "llm.stream.chunk.v1", "n": n}).encode(),
            event_id=f"e{n}",
            kind="chunk",
            metadata={"partitionKey": f"ctx-{n}"},
        ),
        call_timeout=timeout,
    )


async def _in_flight(publisher: BatchingPublisher, n: int) -> asyncio.Task[None]:
    """Publishes `n` and returns once its call is out (a sender took it)."""
    task = asyncio.create_task(_publish(publisher, n))
    await asyncio.sleep(0.001)
    return task


def _numbers(sink: FakeSink) -> list[int]:
    return sorted(p.event["n"] for p in sink.published)


async def test_a_lone_event_goes_out_at_once_as_a_single_publish() -> None:
    sink = FakeSink()
    async with BatchingPublisher(sink, max_in_flight=4, max_batch=100) as publisher:
        await _publish(publisher, 1)
    assert sink.calls == 1
    assert sink.bulk_sizes == []
    assert sink.published[0].metadata == {"partitionKey": "ctx-1"}


async def test_events_beyond_the_calls_in_flight_wait_and_go_out_in_one_bulk_publish() -> None:
    sink = FakeSink(delay=0.02)
    async with BatchingPublisher(sink, max_in_flight=2, max_batch=100) as publisher:
        first = await _in_flight(publisher, 0)
        second = await _in_flight(publisher, 1)
        await asyncio.gather(*(_publish(publisher, n) for n in range(2, 12)))
        await asyncio.gather(first, second)
    # Two went out alone; the ten that came while both were out left together.
    assert sink.calls == 3
    assert sink.bulk_sizes == [10]
    assert sink.max_in_flight == 2
    assert _numbers(sink) == list(range(12))


async def test_events_published_in_the_same_moment_share_one_call() -> None:
    sink = FakeSink()
    async with BatchingPublisher(sink, max_in_flight=4, max_batch=100) as publisher:
        await asyncio.gather(*(_publish(publisher, n) for n in range(5)))
    assert sink.calls == 1
    assert sink.bulk_sizes == [5]


async def test_a_batch_holds_at_most_max_batch_events() -> None:
    sink = FakeSink(delay=0.01)
    async with BatchingPublisher(sink, max_in_flight=1, max_batch=4) as publisher:
        await asyncio.gather(*(_publish(publisher, n) for n in range(10)))
    assert sink.bulk_sizes == [4, 4, 2]
    assert _numbers(sink) == list(range(10))


async def test_events_of_different_topics_never_share_a_call() -> None:
    sink = FakeSink(delay=0.01)
    async with BatchingPublisher(sink, max_in_flight=1, max_batch=100) as publisher:
        await asyncio.gather(
            *(_publish(publisher, n, topic="a" if n % 2 else "b") for n in range(9))
        )
    by_topic: dict[str, list[int]] = {}
    for published in sink.published:
        by_topic.setdefault(published.topic, []).append(published.event["n"])
    assert sorted(by_topic["a"]) == [1, 3, 5, 7]
    assert sorted(by_topic["b"]) == [0, 2, 4, 6, 8]
    assert sink.bulk_sizes == [5, 4]  # the oldest event's topic first


async def test_a_refused_entry_fails_only_its_own_publish() -> None:
    sink = FakeSink(delay=0.01, refuse_entry=lambda n: n == 3)
    async with BatchingPublisher(sink, max_in_flight=1, max_batch=100) as publisher:
        results = await asyncio.gather(
            *(_publish(publisher, n) for n in range(6)), return_exceptions=True
        )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1
    assert isinstance(failed[0], SidecarError)
    assert "injected: entry refused" in str(failed[0])
    assert len(sink.published) == 5


async def test_a_failed_bulk_call_fails_every_event_in_it() -> None:
    sink = FakeSink(failures=1)
    async with BatchingPublisher(sink, max_in_flight=1, max_batch=100) as publisher:
        results = await asyncio.gather(
            *(_publish(publisher, n) for n in range(4)), return_exceptions=True
        )
    assert all(isinstance(r, SidecarError) for r in results)
    assert sink.bulk_sizes == [4]
    assert sink.published == []


async def test_an_event_whose_turn_stopped_waiting_is_not_sent() -> None:
    sink = FakeSink(delay=0.02)
    async with BatchingPublisher(sink, max_in_flight=1, max_batch=100) as publisher:
        first = await _in_flight(publisher, 0)
        queued = asyncio.create_task(_publish(publisher, 1))
        kept = asyncio.create_task(_publish(publisher, 2))
        await asyncio.sleep(0.001)
        queued.cancel()
        await asyncio.gather(first, kept)
    assert queued.cancelled()
    assert _numbers(sink) == [0, 2]


async def test_an_event_queued_past_its_deadline_is_not_sent() -> None:
    # Its deadline is its turn's lease: sent later, it could land after a take-over.
    sink = FakeSink(delay=0.05)
    async with BatchingPublisher(sink, max_in_flight=1, max_batch=100) as publisher:
        first = await _in_flight(publisher, 0)
        late = asyncio.create_task(_publish(publisher, 1, timeout=0.01))
        await first
        with pytest.raises(SidecarError, match="deadline"):
            await late
    assert _numbers(sink) == [0]


async def test_the_sidecar_call_gets_the_time_left_of_its_events_deadline() -> None:
    sink = FakeSink()
    async with BatchingPublisher(sink, max_in_flight=1, max_batch=100) as publisher:
        await _publish(publisher, 0, timeout=2.0)
        await _publish(publisher, 1)
    first, second = sink.timeouts
    assert first is not None
    assert 0 < first <= 2.0
    assert second is None


async def test_publishing_outside_its_context_is_a_clear_error() -> None:
    publisher = BatchingPublisher(FakeSink(), max_in_flight=1, max_batch=1)
    with pytest.raises(SidecarError, match="not running"):
        await _publish(publisher, 0)


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BatchingPublisher(FakeSink(), max_in_flight=0, max_batch=10)


async def test_concurrent_turns_through_bulk_publishes_each_keep_their_order() -> None:
    # The fake sidecar publishes each bulk call's entries in a shuffled order, as daprd
    # does (in parallel); each turn's events must still arrive in seq order.
    sink = FakeSink(delay=0.003)
    turns = 30
    async with BatchingPublisher(sink, max_in_flight=2, max_batch=100) as publisher:

        async def turn(n: int) -> None:
            backend = ScriptedBackend(
                [*(TextDelta(f"w{i} ") for i in range(20)), Finish("stop")], pause=0.001
            )
            await run_turn(publisher, backend, context_id=f"ctx-{n}", request_id=f"r{n}")

        async with asyncio.TaskGroup() as group:
            for n in range(turns):
                group.create_task(turn(n))

    assert max(sink.bulk_sizes) > 1
    for n in range(turns):
        events = [p for p in sink.published if p.data["request_id"] == f"r{n}"]
        assert [p.data["seq"] for p in events] == list(range(1, len(events) + 1))
        kinds = [p.type for p in events]
        assert kinds[0] == "started"
        assert kinds[-2:] == ["usage", "completed"]
        text = "".join(p.data["text"] for p in events if p.type == "chunk")
        assert text == "".join(f"w{i} " for i in range(20))


@dataclasses.dataclass
class _ForeignErrorSink(FakeSink):
    """A sidecar client whose call dies of something that is not a `SidecarError`."""

    async def publish(self, publication: Publication, *, call_timeout: float | None = None) -> None:
        raise ValueError("Illegal header value")


async def test_a_foreign_error_fails_its_publish_and_never_the_publisher() -> None:
    # It used to escape the publisher's task group and end the worker process.
    async with BatchingPublisher(_ForeignErrorSink(), max_in_flight=1, max_batch=10) as publisher:
        with pytest.raises(ValueError, match="Illegal header value"):
            await _publish(publisher, 1)
        with pytest.raises(ValueError, match="Illegal header value"):
            await _publish(publisher, 2)  # the publisher still takes work


@dataclasses.dataclass
class _FailingChunks(FakeSink):
    """Refuses the chunk publishes whose number (from 1) `refuse` names, once each."""

    refuse: frozenset[int] = frozenset()
    chunk_tries: int = 0

    async def publish(self, publication: Publication, *, call_timeout: float | None = None) -> None:
        if publication.kind == "chunk":
            self.chunk_tries += 1
            if self.chunk_tries in self.refuse:
                raise SidecarError("injected: chunk refused")
        await super().publish(publication, call_timeout=call_timeout)


def _words(n: int, pause: float = 0.001) -> ScriptedBackend:
    return ScriptedBackend([*(TextDelta(f"w{i} ") for i in range(n)), Finish("stop")], pause=pause)


async def test_a_turn_has_one_chunk_out_at_a_time_and_merges_what_arrives_meanwhile() -> None:
    sink = FakeSink(delay=0.01)  # a publish takes ten tokens' time
    async with BatchingPublisher(sink, max_in_flight=4, max_batch=100) as publisher:
        result = await run_turn(publisher, _words(100))
    assert result.status == "completed"
    assert sink.max_in_flight == 1  # never two of the turn's events out at once
    chunks = [p for p in sink.published if p.type == "chunk"]
    assert 1 < len(chunks) < 100  # merged, not one per token
    assert chunks[0].data["text"] == "w0 "  # the first token did not wait for others
    assert [p.data["index"] for p in chunks] == list(range(len(chunks)))
    assert sink.text() == "".join(f"w{i} " for i in range(100))
    assert [p.data["seq"] for p in sink.published] == list(range(1, len(sink.published) + 1))


async def test_a_chunk_refused_once_goes_out_again_in_its_place() -> None:
    sink = _FailingChunks(refuse=frozenset({2, 5}))
    async with BatchingPublisher(sink, max_in_flight=4, max_batch=100) as publisher:
        result = await run_turn(publisher, _words(30, pause=0.002))
    assert result.status == "completed"
    assert sink.text() == "".join(f"w{i} " for i in range(30))
    seqs = [p.data["seq"] for p in sink.published]
    assert seqs == list(range(1, len(seqs) + 1))  # no gap, no repeat: the same event again
    assert sink.types()[-2:] == ["usage", "completed"]


async def test_a_chunk_refused_on_its_last_try_ends_the_turn_for_a_retry() -> None:
    sink = _FailingChunks(refuse=frozenset({2}))
    async with BatchingPublisher(sink, max_in_flight=4, max_batch=100) as publisher:
        with pytest.raises(SidecarError, match="chunk refused"):
            await run_turn(publisher, _words(30, pause=0.002), attempts=1)
    assert "usage" not in sink.types()  # no ending for a reply with a hole in it


@dataclasses.dataclass
class _WaitingSink:
    """A sink that can only publish and wait (as a traced one): chunks go the slow way."""

    sink: FakeSink

    async def publish(self, publication: Publication, *, call_timeout: float | None = None) -> None:
        await self.sink.publish(publication, call_timeout=call_timeout)


async def test_a_sink_that_cannot_submit_gets_the_same_chunks_one_at_a_time() -> None:
    sink = FakeSink(delay=0.01)
    result = await run_turn(_WaitingSink(sink), _words(60))
    assert result.status == "completed"
    assert sink.max_in_flight == 1
    assert 1 < len([p for p in sink.published if p.type == "chunk"]) < 60
    assert sink.text() == "".join(f"w{i} " for i in range(60))
