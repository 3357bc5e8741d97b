"""Cancellation of in-flight and queued turns, on this replica and on the others.

A cancel request reaches one replica (pub/sub delivers each message to one consumer of
the group). That replica stops its own matching turns at once and leaves a marker in
the state store; the other replicas find it within one heartbeat while they stream.

A context-wide cancel stops the turns published before it, not later ones. "Before" is
decided by the CloudEvent `time` both messages carry, stamped when they were published:
it is the same on every redelivery and on every replica, so neither a redelivered prompt
nor a replica whose clock is off escapes (or wrongly suffers) the cancel. daprd stamps
whole seconds: messages of the same second, or without a stamp, fall back to local
arrival times.
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
from worker.pipeline.state_reads import next_tick

__all__ = ["CancelWatch", "Cancellations"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class CancelWatch:
    context_id: str
    request_id: str
    published_at: float | None = None  # the prompt's CloudEvent time
    arrived_at: float = field(default_factory=time.time)
    event: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""

    def cancel(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    def covered_by(self, marker: dict[str, object]) -> bool:
        """Whether a context-wide cancel marker applies: the prompt came before it."""
        published = marker.get("published")
        if (
            self.published_at is not None
            and isinstance(published, int | float)
            and self.published_at != published
        ):
            return self.published_at < published
        # No stamps, or the same one (daprd stamps whole seconds): arrival order decides.
        at = marker.get("at")
        return isinstance(at, int | float) and at >= self.arrived_at


class Cancellations:
    def __init__(
        self,
        store: StateStore,
        store_name: str,
        *,
        ttl_seconds: int = 3600,
        timeout: float | None = None,
    ) -> None:
        self._store = store
        self._name = store_name
        self._ttl = ttl_seconds
        self._timeout = timeout
        self._watches: set[CancelWatch] = set()

    @contextmanager
    def watch(
        self, context_id: str, request_id: str, *, published_at: float | None = None
    ) -> Iterator[CancelWatch]:
        """Register a turn (queued or running) as cancellable while the block runs."""
        watch = CancelWatch(context_id, request_id, published_at)
        self._watches.add(watch)
        try:
            yield watch
        finally:
            self._watches.discard(watch)

    async def cancel(
        self, context_id: str, request_id: str | None, *, published_at: float | None = None
    ) -> int:
        """Cancel matching turns here, leave a marker for the others; how many were here."""
        reason = "cancelled by request"
        marker: dict[str, object] = {"at": time.time(), "reason": reason}
        if published_at is not None:
            marker["published"] = published_at
        local = [
            w
            for w in self._watches
            if w.context_id == context_id
            and (request_id == w.request_id or (request_id is None and w.covered_by(marker)))
        ]
        for watch in local:
            watch.cancel(reason)
        await self._store.save_state(
            self._name,
            _marker(context_id, request_id),
            json.dumps(marker).encode(),
            ttl_seconds=self._ttl,
            call_timeout=self._timeout,
        )
        log.info(
            "cancel %s/%s: %d turns here, marker left for other replicas",
            context_id,
            request_id or "*",
            len(local),
        )
        return len(local)

    async def check(self, watch: CancelWatch) -> bool:
        """Whether another replica cancelled this turn (or its whole context)."""
        markers = (
            (_marker(watch.context_id, watch.request_id), False),
            (_marker(watch.context_id, None), True),
        )
        # Together: a batching store answers both (and other turns' reads) in one call.
        reads = await asyncio.gather(
            *(
                self._store.get_state(self._name, key, call_timeout=self._timeout)
                for key, _ in markers
            )
        )
        for (raw, _), (_, context_wide) in zip(reads, markers, strict=True):
            if raw is None:
                continue
            try:
                marker = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(marker, dict):
                continue
            if not context_wide or watch.covered_by(marker):
                watch.cancel(str(marker.get("reason", "cancelled by request")))
                return True
        return False

    async def poll(self, watch: CancelWatch, interval: float) -> None:
        """Check for remote cancellation every `interval` until cancelled or found."""
        while not watch.event.is_set():
            # On the replica's common tick: every turn's check goes out in one bulk read.
            await asyncio.sleep(next_tick(interval))
            try:
                if await self.check(watch):
                    return
            except Exception as exc:  # a missed check is retried at the next interval
                log.warning("cancel check for %s failed: %s", watch.request_id, exc)


def _marker(context_id: str, request_id: str | None) -> str:
    if request_id is None:
        return keys.cancel_context(context_id)
    return keys.cancel_turn(context_id, request_id)
