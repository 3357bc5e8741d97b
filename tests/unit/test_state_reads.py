"""Many turns' state reads merged into bulk reads: what each reader gets back, and when."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from tests.fakes.ports import FakeStateStore
from worker.errors import SidecarError
from worker.pipeline import keys
from worker.pipeline.cancellation import Cancellations
from worker.pipeline.guard import GuardSettings, TurnGuard
from worker.pipeline.ports import StateRead
from worker.pipeline.state_reads import BatchingStateReader, next_tick


@dataclass
class SlowStore(FakeStateStore):
    """Holds every read until `gate` is open; a bulk read fails whole while `down`.

    A gate, not a delay: what a test holds back stays held however slow the machine is.
    """

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    down: bool = False
    calls: int = 0  # read calls, single or bulk
    called: asyncio.Event = field(default_factory=asyncio.Event)  # a call is out

    def __post_init__(self) -> None:
        self.gate.set()

    async def get_state(
        self, store: str, key: str, *, call_timeout: float | None = None
    ) -> StateRead:
        self.calls += 1
        self.called.set()
        await self.gate.wait()
        return await super().get_state(store, key, call_timeout=call_timeout)

    async def get_bulk_state(
        self, store: str, keys: Sequence[str], *, call_timeout: float | None = None
    ) -> dict[str, StateRead | SidecarError]:
        self.calls += 1
        self.called.set()
        await self.gate.wait()
        if self.down:
            raise SidecarError("injected: the sidecar is down")
        return await super().get_bulk_state(store, keys, call_timeout=call_timeout)


async def _fill(store: FakeStateStore, *names: str) -> None:
    for name in names:
        await store.save_state("statestore", name, name.encode())


async def test_a_lone_read_goes_out_at_once_as_a_single_read() -> None:
    store = SlowStore()
    await _fill(store, "a")
    async with BatchingStateReader(store, max_in_flight=4, max_keys=100) as reader:
        assert await reader.get_state("statestore", "a") == (b"a", "1")
    assert store.bulk_reads == []


async def test_concurrent_reads_go_out_as_one_bulk_read_and_each_gets_its_own_answer() -> None:
    store = SlowStore()
    await _fill(store, *(f"k{n}" for n in range(20)))
    async with BatchingStateReader(store, max_in_flight=4, max_keys=100) as reader:
        reads = await asyncio.gather(
            *(reader.get_state("statestore", f"k{n}") for n in range(20)),
            reader.get_state("statestore", "absent"),
            reader.get_state("statestore", "k3"),  # the same key twice: read once
        )
        assert store.calls == 1
    assert reads[:20] == [(f"k{n}".encode(), "1") for n in range(20)]
    assert reads[20] == (None, None)
    assert reads[21] == (b"k3", "1")
    assert len(store.bulk_reads) == 1
    assert sorted(store.bulk_reads[0]) == sorted([*(f"k{n}" for n in range(20)), "absent"])


async def test_reads_beyond_the_calls_in_flight_wait_for_the_next_call() -> None:
    store = SlowStore()
    await _fill(store, *(f"k{n}" for n in range(10)))
    store.gate.clear()
    async with BatchingStateReader(store, max_in_flight=1, max_keys=4) as reader:
        first = asyncio.create_task(reader.get_state("statestore", "k0"))
        await store.called.wait()  # its call is out
        reads = [asyncio.create_task(reader.get_state("statestore", f"k{n}")) for n in range(1, 10)]
        await asyncio.sleep(0)
        store.gate.set()
        rest = await asyncio.gather(*reads)
        assert await first == (b"k0", "1")
    assert rest == [(f"k{n}".encode(), "1") for n in range(1, 10)]
    # One single read, then the nine queued meanwhile in bulk reads of at most four keys.
    assert [len(keys) for keys in store.bulk_reads] == [4, 4]
    assert store.calls == 4


async def test_a_key_that_fails_fails_only_its_own_read() -> None:
    store = SlowStore(read_fault=lambda key: key == "bad")
    await _fill(store, "good", "bad")
    async with BatchingStateReader(store, max_in_flight=4, max_keys=100) as reader:
        good, bad = await asyncio.gather(
            reader.get_state("statestore", "good"),
            reader.get_state("statestore", "bad"),
            return_exceptions=True,
        )
    assert good == (b"good", "1")
    assert isinstance(bad, SidecarError)


async def test_a_failed_bulk_call_fails_its_reads_and_the_reader_goes_on() -> None:
    store = SlowStore(down=True)
    await _fill(store, "a", "b")
    async with BatchingStateReader(store, max_in_flight=4, max_keys=100) as reader:
        failed = await asyncio.gather(
            reader.get_state("statestore", "a"),
            reader.get_state("statestore", "b"),
            return_exceptions=True,
        )
        assert all(isinstance(error, SidecarError) for error in failed)
        store.down = False
        again = await asyncio.gather(
            reader.get_state("statestore", "a"), reader.get_state("statestore", "b")
        )
        assert list(again) == [(b"a", "1"), (b"b", "1")]


async def test_a_read_that_waited_past_its_deadline_is_not_sent() -> None:
    store = SlowStore()
    await _fill(store, "a", "late")
    store.gate.clear()
    async with BatchingStateReader(store, max_in_flight=1, max_keys=100) as reader:
        first = asyncio.create_task(reader.get_state("statestore", "a"))
        await store.called.wait()
        late = asyncio.create_task(reader.get_state("statestore", "late", call_timeout=0.01))
        await asyncio.sleep(0.05)  # past its deadline, still queued behind "a"
        store.gate.set()
        with pytest.raises(SidecarError, match="deadline"):
            await late
        assert await first == (b"a", "1")
    assert store.bulk_reads == []  # "late" never went out


async def test_a_read_whose_caller_gave_up_is_skipped_and_the_others_are_answered() -> None:
    store = SlowStore()
    await _fill(store, "a", "b", "c")
    store.gate.clear()
    async with BatchingStateReader(store, max_in_flight=1, max_keys=100) as reader:
        first = asyncio.create_task(reader.get_state("statestore", "a"))
        await store.called.wait()
        abandoned = asyncio.create_task(reader.get_state("statestore", "b"))
        kept = asyncio.create_task(reader.get_state("statestore", "c"))
        await asyncio.sleep(0)
        abandoned.cancel()
        store.gate.set()
        assert await kept == (b"c", "1")
        assert await first == (b"a", "1")
    assert store.bulk_reads == []  # "c" went alone: "b" was dropped from its call


async def test_reads_of_two_stores_never_share_a_call() -> None:
    store = SlowStore()
    await store.save_state("one", "k", b"1")
    await store.save_state("two", "k", b"2")
    async with BatchingStateReader(store, max_in_flight=4, max_keys=100) as reader:
        await asyncio.gather(reader.get_state("one", "k"), reader.get_state("two", "k"))
    assert store.calls == 2
    assert store.bulk_reads == []  # each its own single read


async def test_a_reader_not_started_refuses_reads() -> None:
    reader = BatchingStateReader(FakeStateStore(), max_in_flight=1, max_keys=1)
    with pytest.raises(SidecarError, match="not running"):
        await reader.get_state("statestore", "a")


async def test_every_turns_lease_and_cancel_reads_of_a_heartbeat_share_one_call() -> None:
    """Twenty turns renewing and checking for cancels: one bulk read a heartbeat."""
    store = FakeStateStore()
    settings = GuardSettings(lease_seconds=3, poll_seconds=0.01)
    async with BatchingStateReader(store, max_in_flight=4, max_keys=100) as reader:
        guard = TurnGuard(reader, "statestore", settings)
        cancellations = Cancellations(reader, "statestore")
        tickets = [await guard.admit(f"ctx-{n}", f"req-{n}") for n in range(20)]
        assert all(ticket is not None for ticket in tickets)
        # Start just after a tick, so the window below holds exactly one tick
        # wherever the loop's clock happens to stand.
        await asyncio.sleep(next_tick(guard.heartbeat_seconds) + 0.01)
        store.bulk_reads.clear()
        async with asyncio.TaskGroup() as group:
            tasks = []
            for ticket in tickets:
                assert ticket is not None
                tasks.append(group.create_task(guard.keep_alive(ticket)))
                watch = cancellations.watch(ticket.context_id, ticket.request_id).__enter__()
                tasks.append(group.create_task(cancellations.poll(watch, guard.heartbeat_seconds)))
            # Past the next tick by half a heartbeat, half a heartbeat short of the second.
            await asyncio.sleep(guard.heartbeat_seconds * 1.5)
            for task in tasks:
                task.cancel()
    assert all(ticket is not None and ticket.fence.valid for ticket in tickets)
    lease_keys = {keys.lease(f"ctx-{n}") for n in range(20)}
    per_call = [set(read) for read in store.bulk_reads]
    # Every lease and both markers of every turn were read, in one bulk call.
    assert len(per_call) == 1
    assert lease_keys <= per_call[0]
    assert len(per_call[0]) == 20 * 3
