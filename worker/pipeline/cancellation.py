"""Cancellation of in-flight and queued turns, on this replica and on the others.

A cancel request reaches one replica (pub/sub delivers each message to one consumer of
the group). That replica stops its own matching turns at once and leaves a marker in
the state store; the other replicas find it within one heartbeat while they stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from worker.pipeline import keys
from worker.pipeline.ports import StateStore

__all__ = ["CancelWatch", "Cancellations"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class CancelWatch:
    context_id: str
    request_id: str
    arrived_at: float = field(default_factory=time.time)
    event: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""

    def cancel(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()


class Cancellations:
    def __init__(self, store: StateStore, store_name: str, *, ttl_seconds: int = 3600) -> None:
        self._store = store
        self._name = store_name
        self._ttl = ttl_seconds
        self._watches: set[CancelWatch] = set()

    @contextmanager
    def watch(self, context_id: str, request_id: str) -> Iterator[CancelWatch]:
        """Register a turn (queued or running) as cancellable while the block runs."""
        watch = CancelWatch(context_id, request_id)
        self._watches.add(watch)
        try:
            yield watch
        finally:
            self._watches.discard(watch)

    async def cancel(self, context_id: str, request_id: str | None) -> int:
        """Cancel matching turns here, leave a marker for the others; how many were here."""
        reason = "cancelled by request"
        local = [
            w
            for w in self._watches
            if w.context_id == context_id and request_id in (None, w.request_id)
        ]
        for watch in local:
            watch.cancel(reason)
        key = _marker(context_id, request_id)
        marker = json.dumps({"at": time.time(), "reason": reason}).encode()
        await self._store.save_state(self._name, key, marker, ttl_seconds=self._ttl)
        log.info(
            "cancel %s/%s: %d turns here, marker left for other replicas",
            context_id,
            request_id or "*",
            len(local),
        )
        return len(local)

    async def check(self, watch: CancelWatch) -> bool:
        """Whether another replica cancelled this turn (or its whole context)."""
        for key, applies in (
            (_marker(watch.context_id, watch.request_id), lambda at: True),
            # A context-wide cancel stops what had arrived by then, not later prompts.
            (_marker(watch.context_id, None), lambda at: at >= watch.arrived_at),
        ):
            raw, _ = await self._store.get_state(self._name, key)
            if raw is None:
                continue
            try:
                marker = json.loads(raw)
                at = float(marker["at"])
            except (ValueError, KeyError, TypeError):
                continue
            if applies(at):
                watch.cancel(str(marker.get("reason", "cancelled by request")))
                return True
        return False

    async def poll(self, watch: CancelWatch, interval: float) -> None:
        """Check for remote cancellation every `interval` until cancelled or found."""
        while not watch.event.is_set():
            await asyncio.sleep(interval)
            try:
                if await self.check(watch):
                    return
            except Exception as exc:  # a missed check is retried at the next interval
                log.warning("cancel check for %s failed: %s", watch.request_id, exc)


def _marker(context_id: str, request_id: str | None) -> str:
    if request_id is None:
        return keys.cancel_context(context_id)
    return keys.cancel_turn(context_id, request_id)
