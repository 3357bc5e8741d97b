"""Many turns' state reads in few sidecar calls.

Every running turn reads the state store on its own: its lease before each renewal,
its cancel markers at each heartbeat, its records at the start and the end. At a hundred
streams that is more gRPC calls than the publishes of their tokens, and a gRPC call
costs this process far more than the read itself. `BatchingStateReader` is a
`Coalescer` of reads, as `BatchingPublisher` is of publishes: beyond `max_in_flight`
calls out, the reads waiting for one store go out as one bulk read. The periodic reads
of all turns wake on the same tick (`next_tick`), so they meet in one call.

A bulk read answers each key as a single read would: its value and ETag, or an error of
its own. Writes and deletes go straight through: each has its own ETag and outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from worker.errors import SidecarError
from worker.pipeline.coalescing import Coalescer, Request
from worker.pipeline.ports import BulkStateStore, StateRead

__all__ = ["BatchingStateReader", "next_tick"]


def next_tick(period: float) -> float:
    """Seconds until the next multiple of `period` on the loop's clock.

    Periodic work of many turns sleeping this long wakes together, in one loop pass.
    """
    return period - asyncio.get_running_loop().time() % period


# A state read: the store and the key.
_Read = tuple[str, str]


class BatchingStateReader(Coalescer[_Read, StateRead]):
    """A `StateStore` whose reads are merged into bulk reads under load."""

    what = "state read"
    _gather_first = True  # the turns' periodic reads share a tick: one call for them all

    def __init__(self, store: BulkStateStore, *, max_in_flight: int, max_keys: int) -> None:
        super().__init__(max_in_flight=max_in_flight, max_batch=max_keys)
        self._store = store

    async def get_state(
        self, store: str, key: str, *, call_timeout: float | None = None
    ) -> StateRead:
        # Cancelling this await cancels the future; the reader then skips the key.
        return await self.submit((store, key), call_timeout=call_timeout)

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
        # Writes go straight through: each has its own ETag and outcome.
        await self._store.save_state(
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
        await self._store.delete_state(store, key, etag=etag, call_timeout=call_timeout)

    def _share_key(self, item: _Read) -> Hashable:
        return item[0]  # the store

    async def _call(
        self, batch: list[Request[_Read, StateRead]], call_timeout: float | None
    ) -> None:
        store = batch[0].item[0]
        if len(batch) == 1:
            key = batch[0].item[1]
            batch[0].settle(await self._store.get_state(store, key, call_timeout=call_timeout))
            return
        keys = list(dict.fromkeys(r.item[1] for r in batch))  # one read a key
        found = await self._store.get_bulk_state(store, keys, call_timeout=call_timeout)
        for request in batch:
            key = request.item[1]
            result = found.get(key)
            if result is None:
                result = SidecarError(f"get state {key}: not in the bulk answer")
            request.settle(result)
