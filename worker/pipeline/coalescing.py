"""Concurrent requests to the sidecar merged into few calls, under load only.

Many turns each wait for their own sidecar request: a publish, a state read. Each gRPC
call costs this process and the sidecar far more than the item it carries. A
`Coalescer` stands between the turns and the sidecar: while fewer than `max_in_flight`
calls are outstanding a request goes out at once, alone; beyond that, requests queue and
the next call to come free takes all of them that can share a call (up to `max_batch`)
as one bulk call. Light load keeps a single request's latency; heavy load gets fewer,
larger calls instead of a queue of small ones. `BatchingPublisher` (publishes) and
`BatchingStateReader` (state reads) say how a batch is sent and what may share a call.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, Self, TypeVar

from worker.errors import SidecarError

__all__ = ["Coalescer", "Request"]

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(slots=True)
class Request(Generic[Item, Result]):
    item: Item
    # Loop time by which the sidecar must have answered (None: no deadline). A request
    # still queued then is not sent: the lease of the turn that asked may not cover it.
    deadline: float | None
    done: asyncio.Future[Result] = field(repr=False)

    def settle(self, outcome: Result | BaseException) -> None:
        if self.done.done():  # whoever asked stopped waiting (cancelled)
            return
        if isinstance(outcome, BaseException):
            self.done.set_exception(outcome)
        else:
            self.done.set_result(outcome)


class Coalescer(Generic[Item, Result]):
    """Queues requests; `_call` sends one batch and settles each of its requests."""

    # What a request is, for errors ("publish", "state read").
    what = "request"

    def __init__(self, *, max_in_flight: int, max_batch: int) -> None:
        if max_in_flight < 1 or max_batch < 1:
            raise ValueError("max_in_flight and max_batch must be at least 1")
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._queue: deque[Request[Item, Result]] = deque()
        self._callers = 0
        self._group: asyncio.TaskGroup | None = None

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
            # Waits for the calls still out; nothing new is queued once the turns are done.
            await group.__aexit__(exc_type, exc, tb)

    def submit(self, item: Item, *, call_timeout: float | None = None) -> asyncio.Future[Result]:
        """Queue `item`; the future settles with its answer. Cancel it to withdraw an item
        not sent yet."""
        if self._group is None:
            raise SidecarError(f"the {self.what} queue is not running (use `async with`)")
        loop = asyncio.get_running_loop()
        deadline = None if call_timeout is None else loop.time() + call_timeout
        request: Request[Item, Result] = Request(item, deadline, loop.create_future())
        self._queue.append(request)
        if self._callers < self._max_in_flight:
            self._callers += 1
            self._group.create_task(self._call_queued())
        return request.done

    # What the kind of request says.

    def _share_key(self, item: Item) -> Hashable:
        """Requests of one call have the same key (the same pubsub and topic, store...)."""
        raise NotImplementedError

    def _weight(self, item: Item) -> int:
        """What an item adds to a call, against `_max_weight`."""
        return 0

    _max_weight = 0  # 0: no limit
    # Wait one loop pass before the first call: worth it where requests come in bursts
    # of one pass (periodic reads on a common tick), not where each waits on its own.
    _gather_first = False

    async def _call(self, batch: list[Request[Item, Result]], call_timeout: float | None) -> None:
        """Send `batch` in one call and settle each request with its own answer."""
        raise NotImplementedError

    # The queue.

    async def _call_queued(self) -> None:
        try:
            if self._gather_first:
                # One loop pass first: requests made in this pass (by tasks just created,
                # too) join this call instead of following it in another.
                await asyncio.sleep(0)
            while batch := self._take():
                await self._send(batch)
        finally:
            self._callers -= 1

    def _take(self) -> list[Request[Item, Result]]:
        """The oldest waiting request and those queued after it that may share its call."""
        batch: list[Request[Item, Result]] = []
        kept: deque[Request[Item, Result]] = deque()
        weight = 0
        key: Hashable = None
        now = asyncio.get_running_loop().time()
        while self._queue and len(batch) < self._max_batch:
            request = self._queue.popleft()
            if request.done.done():
                continue
            if request.deadline is not None and request.deadline <= now:
                request.settle(SidecarError(f"the {self.what} waited past its deadline: not sent"))
                continue
            item_weight = self._weight(request.item)
            if batch and (
                self._share_key(request.item) != key
                or (self._max_weight and weight + item_weight > self._max_weight)
            ):
                kept.append(request)
                continue
            if not batch:
                key = self._share_key(request.item)
            batch.append(request)
            weight += item_weight
        kept.extend(self._queue)
        self._queue = kept
        return batch

    async def _send(self, batch: list[Request[Item, Result]]) -> None:
        deadlines = [r.deadline for r in batch if r.deadline is not None]
        timeout = None
        if deadlines:
            timeout = max(min(deadlines) - asyncio.get_running_loop().time(), 0.001)
        try:
            await self._call(batch, timeout)
        except Exception as exc:
            # The call's failure is its requests' failure, never this task group's: an
            # error here would otherwise stop every turn of the replica.
            for request in batch:
                request.settle(exc)
        finally:
            # Cancelled mid-call: nobody waits forever.
            for request in batch:
                request.settle(SidecarError(f"the {self.what} was interrupted"))
