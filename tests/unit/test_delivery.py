"""Duplicates, crash take-over, one turn per context, cancellation: with fakes of the ports."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.fakes.handler import fake_handler
from tests.fakes.messages import cancel as _cancel
from tests.fakes.messages import prompt as _prompt
from tests.fakes.messages import words as _words
from tests.fakes.ports import FakeSink, FakeStateStore, ScriptedBackend
from worker.contract.envelopes import InboundMessage, Publication
from worker.pipeline import keys
from worker.pipeline.handler import PromptHandler
from worker.pipeline.outcome import Outcome


def _handler(
    sink: FakeSink, backend: ScriptedBackend, store: FakeStateStore, lease_seconds: int = 3
) -> PromptHandler:
    return fake_handler(sink, backend, store=store, lease_seconds=lease_seconds)


async def test_a_duplicate_of_a_done_request_is_acknowledged_without_an_llm_call() -> None:
    sink, store = FakeSink(), FakeStateStore()
    backend = ScriptedBackend(_words(3))
    handler = _handler(sink, backend, store)
    assert await handler.handle(_prompt("r1")) is Outcome.SUCCESS
    published = len(sink.published)
    assert await handler.handle(_prompt("r1")) is Outcome.SUCCESS
    assert len(backend.requests) == 1
    assert len(sink.published) == published


async def test_concurrent_duplicates_generate_once_and_both_wait_for_the_terminal() -> None:
    sink, store = FakeSink(), FakeStateStore()
    backend = ScriptedBackend(_words(20), pause=0.005)
    # Two replicas (two handlers) sharing one state store, as through one Redis.
    first, second = _handler(sink, backend, store), _handler(sink, backend, store)
    outcomes = await asyncio.gather(first.handle(_prompt("r1")), second.handle(_prompt("r1")))
    assert list(outcomes) == [Outcome.SUCCESS, Outcome.SUCCESS]
    assert len(backend.requests) == 1
    assert [p.data["attempt"] for p in sink.published] == [1] * len(sink.published)
    assert sink.types().count("completed") == 1


async def test_a_request_whose_attempt_died_is_answered_again_as_attempt_two() -> None:
    sink, store = FakeSink(), FakeStateStore()
    backend = ScriptedBackend(_words(3))
    # What a killed worker leaves behind: the request "running", its lease expired.
    await store.save_state(
        "statestore", keys.turn("r1"), b'{"state":"running","attempt":1}', create_only=True
    )
    assert await _handler(sink, backend, store).handle(_prompt("r1")) is Outcome.SUCCESS
    started = sink.published[0]
    assert started.type == "started"
    assert started.data["attempt"] == 2
    assert started.data["restarted"] is True
    assert {p.event["id"].split(":")[1] for p in sink.published} == {"2"}


async def test_a_live_lease_elsewhere_is_waited_for_then_taken_over_when_it_lapses() -> None:
    sink, store = FakeSink(), FakeStateStore()
    backend = ScriptedBackend(_words(2))
    await store.save_state(
        "statestore", keys.turn("r1"), b'{"state":"running","attempt":1}', create_only=True
    )
    # Another replica holds the context's lease and then dies: it lapses after 1 s.
    await store.save_state(
        "statestore", keys.lease("ctx"), b'{"token":"other"}', create_only=True, ttl_seconds=1
    )
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await _handler(sink, backend, store).handle(_prompt("r1")) is Outcome.SUCCESS
    assert loop.time() - began >= 0.9
    assert sink.published[0].data["attempt"] == 2


async def test_turns_of_one_context_never_interleave() -> None:
    sink, store = FakeSink(), FakeStateStore()
    backend = ScriptedBackend(_words(10), pause=0.003)
    first, second = _handler(sink, backend, store), _handler(sink, backend, store)
    await asyncio.gather(
        first.handle(_prompt("a")),
        second.handle(_prompt("b")),
        first.handle(_prompt("c")),
    )
    order = [p.data["request_id"] for p in sink.published]
    # Each request's events form one contiguous block.
    blocks = [r for i, r in enumerate(order) if i == 0 or order[i - 1] != r]
    assert sorted(blocks) == ["a", "b", "c"]


async def test_different_contexts_run_concurrently() -> None:
    sink, store = FakeSink(), FakeStateStore()
    backend = ScriptedBackend(_words(10), pause=0.01)
    handler = _handler(sink, backend, store)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.gather(*(handler.handle(_prompt(f"r{i}", f"ctx{i}")) for i in range(5)))
    assert loop.time() - began < 0.11 * 3  # five 0.11 s streams, not one after another


async def test_cancel_mid_stream_ends_with_usage_then_cancelled() -> None:
    sink, store = FakeSink(), FakeStateStore()
    backend = ScriptedBackend(_words(500), pause=0.005)
    handler = _handler(sink, backend, store)
    turn = asyncio.create_task(handler.handle(_prompt("r1")))
    await sink.chunk_published.wait()
    assert await handler.handle(_cancel("ctx", "r1")) is Outcome.SUCCESS
    assert await turn is Outcome.SUCCESS
    assert sink.types()[-2:] == ["usage", "cancelled"]
    assert backend.closed
    assert len(sink.text().split()) < 500


async def test_cancel_without_request_id_stops_running_and_queued_turns() -> None:
    sink, store = FakeSink(), FakeStateStore()
    backend = ScriptedBackend(_words(500), pause=0.005)
    handler = _handler(sink, backend, store)
    running = asyncio.create_task(handler.handle(_prompt("r1")))
    queued = asyncio.create_task(handler.handle(_prompt("r2")))
    await sink.chunk_published.wait()
    await handler.handle(_cancel("ctx"))
    assert list(await asyncio.gather(running, queued)) == [Outcome.SUCCESS, Outcome.SUCCESS]
    terminals = {p.data["request_id"]: p.type for p in sink.published if p.type == "cancelled"}
    assert terminals == {"r1": "cancelled", "r2": "cancelled"}
    # The queued turn never reached the LLM.
    assert len(backend.requests) == 1


async def test_cancelling_what_is_finished_or_unknown_is_a_no_op() -> None:
    sink, store = FakeSink(), FakeStateStore()
    handler = _handler(sink, ScriptedBackend(_words(2)), store)
    await handler.handle(_prompt("r1"))
    published = len(sink.published)
    assert await handler.handle(_cancel("ctx", "r1")) is Outcome.SUCCESS
    assert await handler.handle(_cancel("nobody", "nothing")) is Outcome.SUCCESS
    assert len(sink.published) == published


async def test_a_cancel_received_by_another_replica_stops_the_stream_here() -> None:
    sink, store = FakeSink(), FakeStateStore()
    backend = ScriptedBackend(_words(1000), pause=0.005)
    here = _handler(sink, backend, store, lease_seconds=3)  # checks every second
    elsewhere = _handler(FakeSink(), backend, store)
    turn = asyncio.create_task(here.handle(_prompt("r1")))
    await sink.chunk_published.wait()
    await elsewhere.handle(_cancel("ctx", "r1"))
    assert await asyncio.wait_for(turn, 3) is Outcome.SUCCESS
    assert sink.types()[-1] == "cancelled"


async def test_an_invalid_cancel_request_is_dropped() -> None:
    handler = _handler(FakeSink(), ScriptedBackend(_words(1)), FakeStateStore())
    bad = InboundMessage(
        id="x",
        topic="cancellations",
        data=b'{"request_id": 5}',
        data_content_type="application/json",
    )
    assert await handler.handle(bad) is Outcome.DROP


async def test_an_attempt_that_died_while_ending_is_replayed_not_regenerated() -> None:
    sink, store = FakeSink(), FakeStateStore()
    backend = ScriptedBackend(_words(3))
    usage = {"id": "r1:1:5", "type": "llm.stream.usage.v1", "data": {"seq": 5}}
    completed = {"id": "r1:1:6", "type": "llm.stream.completed.v1", "data": {"seq": 6}}
    # What a worker killed between recording its last events and marking done leaves.
    await store.save_state(
        "statestore", keys.turn("r1"), b'{"state":"running","attempt":1}', create_only=True
    )
    record = {
        "request_id": "r1",
        "attempt": 1,
        "topic": "responses",
        "terminal": "completed",
        "events": [json.dumps(usage), json.dumps(completed)],
    }
    await store.save_state("statestore", keys.ending("ctx"), json.dumps(record).encode())
    handler = _handler(sink, backend, store)
    assert await handler.handle(_prompt("r1")) is Outcome.SUCCESS
    assert backend.requests == []  # no second generation
    assert [p.event for p in sink.published] == [usage, completed]  # the same ids again
    assert await handler.handle(_prompt("r1")) is Outcome.SUCCESS
    assert len(sink.published) == 2  # and now it is done


async def test_the_last_events_are_recorded_before_they_are_published() -> None:
    store = FakeStateStore()
    recorded: list[dict[str, Any]] = []

    def look(publication: Publication) -> None:
        ending = store.items.get(keys.ending("ctx"))
        recorded.append(json.loads(ending[0]) if ending else {})

    sink = FakeSink(before_record=look)
    await _handler(sink, ScriptedBackend(_words(2)), store).handle(_prompt("r1"))
    kinds = sink.types()
    assert kinds[-2:] == ["usage", "completed"]
    ending = recorded[-1]
    assert recorded[-2] == ending
    assert [json.loads(e)["id"] for e in ending["events"]] == [
        p.event["id"] for p in sink.published[-2:]
    ]
    assert recorded[: kinds.index("usage")] == [{}] * kinds.index("usage")
    raw, _ = await store.get_state("statestore", keys.turn("r1"))
    assert json.loads(raw or b"{}")["state"] == "done"
    assert keys.ending("ctx") not in store.items  # out, so no longer kept


async def test_a_cancel_never_reaches_a_turn_whose_ids_merely_share_a_prefix() -> None:
    # `cancel:{context}:{request}` once let context A / request B:C cancel context A:B / C.
    store = FakeStateStore()
    sink = FakeSink()
    handler = _handler(sink, ScriptedBackend(_words(3)), store)
    assert await handler.handle(_cancel("A", "B:C")) is Outcome.SUCCESS
    assert await handler.handle(_prompt("C", context_id="A:B")) is Outcome.SUCCESS
    assert sink.types()[-1] == "completed"
