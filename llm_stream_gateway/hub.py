"""Live fan-out inside one replica: response events to the connections following them."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from worker.client.consumer import Event

__all__ = ["Hub"]


class Hub:
    def __init__(self) -> None:
        self._listeners: defaultdict[str, set[asyncio.Queue[Event]]] = defaultdict(set)

    @property
    def listeners(self) -> int:
        return sum(len(queues) for queues in self._listeners.values())

    def deliver(self, event: Event) -> None:
        request_id = event.data.get("request_id")
        for queue in self._listeners.get(str(request_id), ()):
            queue.put_nowait(event)

    @contextmanager
    def listen(self, request_id: str) -> Iterator[asyncio.Queue[Event]]:
        # Unbounded: a reply has a bounded number of events, and a slow reader must not
        # block delivery to the others.
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._listeners[request_id].add(queue)
        try:
            yield queue
        finally:
            queues = self._listeners[request_id]
            queues.discard(queue)
            if not queues:
                del self._listeners[request_id]
