"""Leases under the faults Redis and real deployments bring: each test names the failure
of issue 13 it would have caught before fencing."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from tests.fakes.handler import fake_handler
from tests.fakes.messages import cancel, prompt, words
from tests.fakes.ports import FakeSink, FakeStateStore, ScriptedBackend, WriteFault
from worker.contract.envelopes import Publication
from worker.errors import SidecarError
from worker.pipeline import keys
from worker.pipeline.guard import GuardSettings, TurnGuard
from worker.pipeline.outcome import Outcome
from worker.service import Worker

LEASE = keys.lease("ctx")


@dataclass
class CutOff:
    """One replica's view of the shared store, with its state calls failing while `cut`:
    its sidecar cannot reach Redis (publishes still go out)."""

    store: FakeStateStore
    cut: bool = False

    async def get_state(
        self, store: str, key: str, *, call_timeout: float | None = None
    ) -> tuple[bytes | None, str | None]:
        self._check(key)
        return await self.store.get_state(store, key, call_timeout=call_timeout)

    async def save_state(
        self,
        store: str,
        key: str,
        value: bytes,
        *,
        etag: str | None = None,
        create_only: bool = False,
        ttl_seconds: int | None = None,
        call_timeout: float | None = None,
    ) -> None:
        self._check(key)
        await self.store.save_state(
            store,
            key,
            value,
            etag=etag,
            create_only=create_only,
            ttl_seconds=ttl_seconds,
            call_timeout=call_timeout,
        )

    async def delete_state(
        self, store: str, key: str, *, etag: str | None = None, call_timeout: float | None = None
    ) -> None:
        self._check(key)
        await self.store.delete_state(store, key, etag=etag, call_timeout=call_timeout)

    def _check(self, key: str) -> None:
        if self.cut:
            raise SidecarError(f"injected: state store unreachable ({key})")


@dataclass
class Faults:
    """Write faults for chosen calls: the n-th write of a key (from 1) -> the fault."""

    plan: dict[tuple[str, int], WriteFault]
    writes: dict[str, int] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def __call__(self, key: str) -> WriteFault | None:
        self.writes[key] = self.writes.get(key, 0) + 1
        self.log.append(key)
        return self.plan.get((key, self.writes[key]))


def _attempts(sink: FakeSink, request_id: str = "r1") -> list[tuple[int, str]]:
    return [
        (p.data["attempt"], p.type) for p in sink.published if p.data["request_id"] == request_id
    ]


async def test_a_holder_cut_off_from_the_store_stops_before_a_successor_takes_over() -> None:
    # Was: renewals that failed only `continue`d, so the cut-off holder streamed on, and
    # published its usage and terminal events, while a second replica answered again.
    store, sink = FakeStateStore(), FakeSink()
    backend = ScriptedBackend(words(600), pause=0.01)
    view = CutOff(store)
    here = fake_handler(sink, backend, store=view)
    there = fake_handler(sink, backend, store=store)
    first = asyncio.create_task(here.handle(prompt("r1")))
    await sink.chunk_published.wait()
    view.cut = True
    # The duplicate (Redis reclaimed the message) waits for the lease, then takes over.
    assert await there.handle(prompt("r1")) is Outcome.SUCCESS
    # Cut off, it could not even look again: Dapr redelivers, and it finds the reply done.
    assert await first is Outcome.RETRY
    view.cut = False
    assert await here.handle(prompt("r1")) is Outcome.SUCCESS
    assert len(backend.requests) == 2
    seen = _attempts(sink)
    first_attempt = [kind for attempt, kind in seen if attempt == 1]
    assert "usage" not in first_attempt
    assert not {"completed", "failed", "cancelled"} & set(first_attempt)
    # Attempt 1's events all came before attempt 2's: never interleaved.
    assert [a for a, _ in seen] == sorted(a for a, _ in seen)
    assert [kind for _, kind in seen].count("completed") == 1
    history = json.loads(store.items[keys.history("ctx")][0])
    assert [turn["request_id"] for turn in history] == ["r1"]


async def test_a_stale_holder_never_deletes_its_successors_lease_of_the_same_etag() -> None:
    # Was: Redis restarts a key's ETag after expiry, so the stale holder's release with
    # ETag "1" deleted the successor's lease (also "1"), letting a third turn in.
    store = FakeStateStore()
    settings = GuardSettings(lease_seconds=30, poll_seconds=0.01)
    stale = TurnGuard(store, "statestore", settings)
    successor = TurnGuard(store, "statestore", settings)
    old = await stale.admit("ctx", "r1")
    assert old is not None
    assert store.items[LEASE][1] == "1"
    store.expires[LEASE] = 0  # its holder stalled: the lease lapsed
    new = await successor.admit("ctx", "r2")
    assert new is not None
    assert store.items[LEASE][1] == "1"  # the same ETag again
    await stale.abandon(old)
    await stale.finish(old, "completed")
    raw, _ = await store.get_state("statestore", LEASE)
    assert raw is not None
    assert json.loads(raw)["token"] == new.token
    # A renewal by the stale holder finds someone else's token and gives up.
    assert await stale._renew(old) is False
    assert json.loads(store.items[LEASE][0])["token"] == new.token


async def test_a_redis_error_on_a_renewal_does_not_kill_a_healthy_stream() -> None:
    # Was: any Redis error on an ETag write is reported as a mismatch, which the guard
    # took as a lost lease: the stream stopped and was answered again as attempt 2.
    store, sink = FakeStateStore(), FakeSink()
    store.write_fault = Faults({(LEASE, 2): "before", (LEASE, 3): "between"})
    backend = ScriptedBackend(words(250), pause=0.01)
    handler = fake_handler(sink, backend, store=store)
    assert await handler.handle(prompt("r1")) is Outcome.SUCCESS
    assert {attempt for attempt, _ in _attempts(sink)} == {1}
    assert sink.types()[-1] == "completed"
    assert len(backend.requests) == 1


async def test_a_failed_read_after_a_renewal_does_not_kill_the_holders_stream() -> None:
    # Was: the ETag was read back after each renewal; when that read failed the old one
    # was kept, the next renewal mismatched and the holder stopped its own stream.
    store, sink = FakeStateStore(), FakeSink()
    reads = {"n": 0}

    def every_other_lease_read(key: str) -> bool:
        if key != LEASE:
            return False
        reads["n"] += 1
        return reads["n"] % 2 == 0

    store.read_fault = every_other_lease_read
    backend = ScriptedBackend(words(300), pause=0.01)
    handler = fake_handler(sink, backend, store=store)
    assert await handler.handle(prompt("r1")) is Outcome.SUCCESS
    assert {attempt for attempt, _ in _attempts(sink)} == {1}
    assert len(backend.requests) == 1


async def test_a_lease_written_without_its_ttl_does_not_block_its_own_holder() -> None:
    # Was: the value landed, the TTL step failed, the create came back as a mismatch and
    # the worker waited for its own lease, which never expired.
    store, sink = FakeStateStore(), FakeSink()
    store.write_fault = Faults({(LEASE, 1): "between"})
    handler = fake_handler(sink, ScriptedBackend(words(3)), store=store, max_wait_seconds=5)
    assert await handler.handle(prompt("r1")) is Outcome.SUCCESS
    assert sink.types()[-1] == "completed"
    assert LEASE not in store.items  # released


async def test_a_dead_holders_lease_without_ttl_is_recovered() -> None:
    # Was: a lease without TTL (daprd killed between value and TTL) was a live holder
    # for ever: every prompt of the conversation waited and was retried, indefinitely.
    store, sink = FakeStateStore(), FakeSink()
    dead = {"token": "dead", "request_id": "r0", "expires": time.time() - 3600}
    await store.save_state("statestore", LEASE, json.dumps(dead).encode(), create_only=True)
    handler = fake_handler(sink, ScriptedBackend(words(3)), store=store, max_wait_seconds=5)
    assert await handler.handle(prompt("r1")) is Outcome.SUCCESS
    assert sink.types()[-1] == "completed"


async def test_history_is_written_before_the_lease_is_released() -> None:
    # Was: `finish` freed the context, then the history was written: the next turn,
    # perhaps on another replica, could run without the previous one.
    store, sink = FakeStateStore(), FakeSink()
    faults = Faults({})
    store.write_fault = faults
    await fake_handler(sink, ScriptedBackend(words(3)), store=store).handle(prompt("r1"))
    turn, history, ending = keys.turn("r1"), keys.history("ctx"), keys.ending("ctx")
    # Lease taken, request running, history, ending recorded, done, ending cleared,
    # lease released.
    assert faults.log == [LEASE, turn, history, ending, turn, LEASE]


async def test_a_replayed_ending_leaves_the_turn_in_the_history_once() -> None:
    # Was: the replay path never wrote the history, so a worker that died after
    # recording its last events left the conversation without that turn.
    store = FakeStateStore()
    dying = FakeSink()
    backend = ScriptedBackend(words(3))
    # The sidecar refuses the last events: the attempt dies after recording them.
    dying.before_record = lambda publication: _refuse_after_chunks(dying, publication)
    handler = fake_handler(dying, backend, store=store)
    assert await handler.handle(prompt("r1")) is Outcome.RETRY
    assert json.loads(store.items[keys.ending("ctx")][0])["request_id"] == "r1"
    sink = FakeSink()
    assert await fake_handler(sink, backend, store=store).handle(prompt("r1")) is Outcome.SUCCESS
    assert sink.types() == ["usage", "completed"]
    assert len(backend.requests) == 1
    history = json.loads(store.items[keys.history("ctx")][0])
    assert [turn["request_id"] for turn in history] == ["r1"]


async def test_the_next_turn_of_a_conversation_first_publishes_a_dead_turns_ending() -> None:
    # Found by the chaos run (daprd SIGKILLed): a turn that died publishing its recorded
    # ending freed the conversation, the next prompt's turn ran, and the ending, replayed
    # when the first prompt came back, landed after it: two turns interleaved.
    store = FakeStateStore()
    dying = FakeSink()
    backend = ScriptedBackend(words(3))
    dying.before_record = lambda publication: _refuse_after_chunks(dying, publication)
    assert await fake_handler(dying, backend, store=store).handle(prompt("r1")) is Outcome.RETRY
    sink = FakeSink()
    handler = fake_handler(sink, backend, store=store)
    assert await handler.handle(prompt("r2")) is Outcome.SUCCESS
    order = [(p.data["request_id"], p.type) for p in sink.published]
    assert order[:2] == [("r1", "usage"), ("r1", "completed")]
    assert [kind for r, kind in order if r == "r2"][-1] == "completed"
    # The first prompt, delivered again, is done: no second generation.
    assert await handler.handle(prompt("r1")) is Outcome.SUCCESS
    assert len(backend.requests) == 2
    assert sink.types().count("completed") == 2


def _refuse_after_chunks(sink: FakeSink, publication: Publication) -> None:
    if publication.kind in ("usage", "completed"):
        sink.failures = 100  # this and every later publish fails
        raise SidecarError("injected: sidecar gone")


async def test_one_busy_conversation_does_not_hold_every_slot() -> None:
    # Was: a delivery took a concurrency slot before the conversation's lock, so prompts
    # queued behind one busy conversation held every slot and other conversations waited.
    store, sink = FakeStateStore(), FakeSink()
    busy_backend = ScriptedBackend(words(100), pause=0.005)
    quick_backend = ScriptedBackend(words(3), name="quick")
    handler = fake_handler(sink, busy_backend, quick_backend, store=store)
    worker = Worker(handler, max_concurrent=2, grace=1)
    shutdown = asyncio.Event()

    class Server:
        async def start(self) -> None: ...

        async def stop(self, grace: float | None) -> None: ...

    run = asyncio.create_task(worker.run(Server(), shutdown))
    await asyncio.sleep(0)
    busy = [asyncio.create_task(worker.deliver(prompt(f"a{n}", "busy"))) for n in range(4)]
    await sink.chunk_published.wait()
    other = await worker.deliver(prompt("b1", "other", llm_component="quick"))
    assert other is Outcome.SUCCESS
    # The other conversation finished while the busy one was still on its first turn.
    completed = [p.data["request_id"] for p in sink.published if p.type == "completed"]
    assert completed == ["b1"]
    assert list(await asyncio.gather(*busy)) == [Outcome.SUCCESS] * 4
    shutdown.set()
    await run


async def test_a_context_cancel_still_covers_a_prompt_redelivered_after_it() -> None:
    # Was: a context-wide cancel was compared with the local arrival time, so a prompt
    # published before the cancel but (re)delivered after it was answered anyway.
    store, sink = FakeStateStore(), FakeSink()
    backend = ScriptedBackend(words(3))
    published = time.time() - 60
    elsewhere = fake_handler(FakeSink(), backend, store=store)
    assert await elsewhere.handle(cancel("ctx", published_at=published + 1)) is Outcome.SUCCESS
    handler = fake_handler(sink, backend, store=store)
    assert await handler.handle(prompt("r1", published_at=published)) is Outcome.SUCCESS
    assert sink.types()[-1] == "cancelled"
    assert backend.requests == []
    # One published after the cancel is answered, whatever the local clock says.
    assert await handler.handle(prompt("r2", published_at=published + 2)) is Outcome.SUCCESS
    assert sink.types()[-1] == "completed"


async def test_every_state_and_publish_call_under_a_lease_has_a_deadline_within_the_margin() -> (
    None
):
    # Was: no sidecar call had a deadline, so one hung call could outlive the lease.
    store, sink = FakeStateStore(), FakeSink()
    await fake_handler(sink, ScriptedBackend(words(5)), store=store, lease_seconds=6).handle(
        prompt("r1")
    )
    margin = GuardSettings(lease_seconds=6).margin
    assert store.timeouts
    assert sink.timeouts
    assert all(t is not None and 0 < t < margin for t in [*store.timeouts, *sink.timeouts])
