"""The Redis state store's ways, as the lease guard relies on them, checked on the real
daprd and Redis and on the unit tests' fake alike: if one differs, the fake lies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from testbed.components import redis_state
from tests.conftest import StartSidecar
from tests.fakes.ports import FakeStateStore
from worker.errors import EtagMismatch, SidecarError
from worker.pipeline.ports import BulkStateStore, StateStore
from worker.transport.sidecar import SidecarClient

pytestmark = pytest.mark.dapr

STORE = "statestore"


@pytest.fixture(params=["real", "fake"])
async def store(
    request: pytest.FixtureRequest, start_sidecar: StartSidecar
) -> AsyncIterator[BulkStateStore]:
    if request.param == "fake":
        yield FakeStateStore()
        return
    sidecar = await asyncio.to_thread(
        start_sidecar, app_id="state-probe", components=[redis_state()]
    )
    async with SidecarClient(sidecar.grpc_address) as client:
        yield client


async def test_a_keys_etag_starts_again_after_it_was_deleted(store: StateStore) -> None:
    # Why a stale holder's ETag can match its successor's lease: tokens decide instead.
    await store.save_state(STORE, "k-restart", b"first", create_only=True, ttl_seconds=30)
    _, first = await store.get_state(STORE, "k-restart")
    await store.delete_state(STORE, "k-restart", etag=first)
    await store.save_state(STORE, "k-restart", b"second", create_only=True, ttl_seconds=30)
    raw, second = await store.get_state(STORE, "k-restart")
    assert (raw, second) == (b"second", first)


async def test_a_stale_etag_and_a_second_create_are_both_mismatches(store: StateStore) -> None:
    await store.save_state(STORE, "k-stale", b"v1", create_only=True)
    _, etag = await store.get_state(STORE, "k-stale")
    await store.save_state(STORE, "k-stale", b"v2", etag=etag)
    with pytest.raises(EtagMismatch):
        await store.save_state(STORE, "k-stale", b"v3", etag=etag)
    with pytest.raises(EtagMismatch):
        await store.save_state(STORE, "k-stale", b"v4", create_only=True)
    raw, _ = await store.get_state(STORE, "k-stale")
    assert raw == b"v2"


async def test_a_write_with_an_etag_to_a_missing_key_creates_it(store: StateStore) -> None:
    # Why the guard writes with an ETag only while its lease cannot have expired.
    await store.save_state(STORE, "k-missing", b"made", etag="1")
    raw, _ = await store.get_state(STORE, "k-missing")
    assert raw == b"made"


async def test_a_key_created_only_if_absent_refuses_a_later_write_without_etag(
    store: StateStore,
) -> None:
    # Dapr's Redis store marks a key written with first-write concurrency: a later write
    # without an ETag fails (as an error, not a mismatch). So every write of such a key
    # is read-compare-write.
    await store.save_state(STORE, "k-first", b"v1", create_only=True)
    with pytest.raises(SidecarError):
        await store.save_state(STORE, "k-first", b"v2")
    _, etag = await store.get_state(STORE, "k-first")
    await store.save_state(STORE, "k-first", b"v3", etag=etag)
    raw, _ = await store.get_state(STORE, "k-first")
    assert raw == b"v3"


async def test_a_bulk_read_answers_each_key_as_a_single_read_does(store: BulkStateStore) -> None:
    # Why the turns' reads may be merged into bulk reads: same values, same ETags, and
    # an ETag from a bulk read is good for the read-compare-write that follows it.
    await store.save_state(STORE, "k-bulk-1", b"one", create_only=True, ttl_seconds=30)
    await store.save_state(STORE, "k-bulk-2", b"two")
    read = await store.get_bulk_state(STORE, ["k-bulk-1", "k-bulk-2", "k-bulk-absent"])
    assert read == {
        "k-bulk-1": await store.get_state(STORE, "k-bulk-1"),
        "k-bulk-2": await store.get_state(STORE, "k-bulk-2"),
        "k-bulk-absent": (None, None),
    }
    first = read["k-bulk-1"]
    assert not isinstance(first, SidecarError)
    await store.save_state(STORE, "k-bulk-1", b"one again", etag=first[1])
    with pytest.raises(EtagMismatch):
        await store.save_state(STORE, "k-bulk-1", b"stale", etag=first[1])
