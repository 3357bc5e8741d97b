"""Many turns' state reads in few sidecar calls.

Every running turn reads the state store on its own: its lease before each renewal,
its cancel markers at each heartbeat, its records at the start and the end. At a hundred
streams that is more gRPC calls than the publishes of their tokens, and a gRPC call
costs this process far more than the read itself. `BatchingStateReader` stands between
the turns and the sidecar as `BatchingPublisher` does for publishes: a read goes out at
once while fewer than `max_in_flight` calls are outstanding; beyond that, reads queue
and the next call to come free takes them all as one bulk read. The periodic reads of
all turns wake on the same tick (`next_tick`), so they meet in one call.

A bulk read answers each key as a single read would: its value and ETag, or an error of
its own. Writes and deletes go straight through: each has its own ETag and outcome.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from worker.errors import SidecarError
from worker.pipeline.ports import BulkStateStore, StateRead

__all__ = ["BatchingStateReader", "next_tick"]


def next_tick(period: float) -> float:
    """Seconds until the next multiple of `period` on the loop's clock.

    Periodic work of many turns sleeping this long wakes together, in one loop pass.
    """
    return period - asyncio.get_running_loop().time() % period


@dataclass(slots=True)
class _Read:
    store: str
    key: str
    deadline: float | None  # loop time
    done: asyncio.Future[StateRead] = field(repr=False)

    def settle(self, result: StateRead | BaseException) -> None:
        if self.done.done():  # its reader stopped waiting (cancelled)
            return
        if isinstance(result, BaseException):
            self.done.set_exception(result)
        else:
            self.done.set_result(result)


class BatchingStateReader:
    """A `StateStore` whose reads are merged into bulk reads under load."""

    def __init__(self, store: BulkStateStore, *, max_in_flight: int, max_keys: int) -> None:
        if max_in_flight < 1 or max_keys < 1:
            raise ValueError("max_in_flight and max_keys must be at least 1")
        self._store = store
        self._max_in_flight = max_in_flight
        self._max_keys = max_keys
        self._queue: deque[_Read] = deque()
        self._readers = 0
        self._group: asyncio.TaskGroup | None = None
        self.calls = 0  # sidecar read calls made, single or bulk

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
            await group.__aexit__(exc_type, exc, tb)

    async def get_state(
        self, store: str, key: str, *, call_timeout: float | None = None
    ) -> StateRead:
        if self._group is None:
            raise SidecarError("the state reader is not running (use `async with`)")
        loop = asyncio.get_running_loop()
        deadline = None if call_timeout is None else loop.time() + call_timeout
        read = _Read(store, key, deadline, loop.create_future())
        self._queue.append(read)
        if self._readers < self._max_in_flight:
            self._readers += 1
            self._group.create_task(self._read_queued())
        # Cancelling this await cancels `done`; the reader then skips the key.
        return await read.done

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

    async def _read_queued(self) -> None:
        try:
            # One loop pass first: reads started in this pass (by tasks just created, too)
            # join this call instead of following it in another.
            await asyncio.sleep(0)
            while batch := self._take():
                await self._read(batch)
        finally:
            self._readers -= 1

    def _take(self) -> list[_Read]:
        """The oldest waiting read and those queued after it from the same store."""
        batch: list[_Read] = []
        kept: deque[_Read] = deque()
        now = asyncio.get_running_loop().time()
        while self._queue and len(batch) < self._max_keys:
            read = self._queue.popleft()
            if read.done.done():
                continue
            if read.deadline is not None and read.deadline <= now:
                read.settle(SidecarError(f"get state {read.key}: waited past its deadline"))
                continue
            if batch and read.store != batch[0].store:
                kept.append(read)
                continue
            batch.append(read)
        kept.extend(self._queue)
        self._queue = kept
        return batch

    async def _read(self, batch: list[_Read]) -> None:
        deadlines = [r.deadline for r in batch if r.deadline is not None]
        timeout = None
        if deadlines:
            timeout = max(min(deadlines) - asyncio.get_running_loop().time(), 0.001)
        self.calls += 1
        try:
            if len(batch) == 1:
                read = batch[0]
                read.settle(await self._store.get_state(read.store, read.key, call_timeout=timeout))
            else:
                await self._read_bulk(batch, timeout)
        except Exception as exc:
            # The call's failure is its reads' failure, never this task group's.
            for read in batch:
                read.settle(exc)
        finally:
            for read in batch:  # cancelled mid-call: nobody waits forever
                read.settle(SidecarError(f"get state {read.key}: the read was interrupted"))

    async def _read_bulk(self, batch: Sequence[_Read], call_timeout: float | None) -> None:
        keys = list(dict.fromkeys(read.key for read in batch))  # one read a key
        found = await self._store.get_bulk_state(batch[0].store, keys, call_timeout=call_timeout)
        for read in batch:
            result = found.get(read.key)
            if result is None:
                result = SidecarError(f"get state {read.key}: missing from the bulk answer")
            read.settle(result)
