"""Exactly one live attempt per request, one turn at a time per context, across replicas.

Two kinds of keys in the Dapr state store (so every replica sees them):

- `lease/<context_id>`: who is answering a turn of this conversation right now. Created
  only if absent, kept alive by a heartbeat, gone when released or when its TTL runs out
  because its holder died. Holding it is the right to stream a turn of that context.
- `turn/<request_id>`: the request's last attempt number and whether it is running,
  ending (its last events recorded, about to be published) or done.

A delivery first waits for the context's lease. A request found done is acknowledged
without an LLM call; a request found "running" whose lease has lapsed was cut short by a
crash, and is answered again as `attempt + 1`. Waiting (rather than answering at once)
matters with Redis: a reclaimed duplicate shares its message id with the copy the holder
is answering, so acknowledging the duplicate early would acknowledge the holder's copy,
and a crash of the holder would then lose the prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from worker.errors import EtagMismatch, WaitedTooLong, WorkerError
from worker.pipeline import keys
from worker.pipeline.ports import StateStore

__all__ = ["GuardSettings", "Ticket", "TurnGuard"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GuardSettings:
    lease_seconds: int = 15
    done_ttl_seconds: int = 24 * 3600
    max_wait_seconds: float = 600
    poll_seconds: float = 0.25


@dataclass
class Ticket:
    """The right to answer `request_id` as `attempt`, while `lost` is not set."""

    context_id: str
    request_id: str
    attempt: int
    restarted: bool
    lease_etag: str
    turn_etag: str
    token: str
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when the attempt had recorded its last events but died before they were out:
    # they are published again (same ids), and no new attempt is made.
    replay: tuple[bytes, ...] = ()
    terminal: str = ""


class TurnGuard:
    def __init__(self, store: StateStore, store_name: str, settings: GuardSettings) -> None:
        self._store = store
        self._name = store_name
        self._settings = settings
        self.owner = f"worker-{uuid.uuid4().hex[:12]}"

    @property
    def heartbeat_seconds(self) -> float:
        return self._settings.lease_seconds / 3

    async def admit(self, context_id: str, request_id: str) -> Ticket | None:
        """Wait for the context; None when the request turns out to be done already."""
        deadline = time.monotonic() + self._settings.max_wait_seconds
        waited = False
        while True:
            turn, turn_etag = await self._read(keys.turn(request_id))
            if turn is not None and turn.get("state") == "done":
                log.info("request %s is done already: acknowledged, no LLM call", request_id)
                return None
            ticket = await self._try_lease(context_id, request_id, turn, turn_etag)
            if ticket is not None:
                return ticket
            if time.monotonic() > deadline:
                raise WaitedTooLong(
                    f"context {context_id} stayed busy for {self._settings.max_wait_seconds:.0f}s"
                )
            if not waited:
                log.info("request %s waits for context %s", request_id, context_id)
                waited = True
            await asyncio.sleep(self._settings.poll_seconds)

    async def _try_lease(
        self,
        context_id: str,
        request_id: str,
        turn: dict[str, object] | None,
        turn_etag: str | None,
    ) -> Ticket | None:
        token = uuid.uuid4().hex
        lease_value = _dump({"owner": self.owner, "request_id": request_id, "token": token})
        try:
            await self._store.save_state(
                self._name,
                keys.lease(context_id),
                lease_value,
                create_only=True,
                ttl_seconds=self._settings.lease_seconds,
            )
        except EtagMismatch:
            return None  # a live holder: ours to wait for
        lease, lease_etag = await self._read(keys.lease(context_id))
        if lease is None or lease.get("token") != token or lease_etag is None:
            return None
        previous = int(str(turn.get("attempt", 0))) if turn is not None else 0
        if turn is not None and turn.get("state") == "ending" and turn_etag is not None:
            events = turn.get("events")
            if isinstance(events, list) and all(isinstance(e, str) for e in events):
                log.warning(
                    "request %s: attempt %d died while publishing its last events; "
                    "publishing them again",
                    request_id,
                    previous,
                )
                return Ticket(
                    context_id=context_id,
                    request_id=request_id,
                    attempt=previous,
                    restarted=False,
                    lease_etag=lease_etag,
                    turn_etag=turn_etag,
                    token=token,
                    replay=tuple(e.encode() for e in events),
                    terminal=str(turn.get("terminal", "")),
                )
        attempt = previous + 1
        try:
            await self._store.save_state(
                self._name,
                keys.turn(request_id),
                _dump({"state": "running", "attempt": attempt, "owner": self.owner}),
                etag=turn_etag,
                create_only=turn_etag is None,
                ttl_seconds=self._settings.done_ttl_seconds,
            )
        except EtagMismatch:
            # The request moved on meanwhile (finished, or taken): look again.
            await self._release(context_id, lease_etag)
            return None
        _, new_turn_etag = await self._read(keys.turn(request_id))
        if previous:
            log.warning(
                "request %s: attempt %d died without a terminal event; answering as attempt %d",
                request_id,
                previous,
                attempt,
            )
        return Ticket(
            context_id=context_id,
            request_id=request_id,
            attempt=attempt,
            restarted=previous > 0,
            lease_etag=lease_etag,
            turn_etag=new_turn_etag or "",
            token=token,
        )

    async def keep_alive(self, ticket: Ticket) -> None:
        """Renew the lease until cancelled; set `ticket.lost` (and return) if it slipped."""
        key = keys.lease(ticket.context_id)
        value = _dump({"owner": self.owner, "request_id": ticket.request_id, "token": ticket.token})
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await self._store.save_state(
                    self._name,
                    key,
                    value,
                    etag=ticket.lease_etag,
                    ttl_seconds=self._settings.lease_seconds,
                )
                _, etag = await self._read(key)
            except EtagMismatch:
                etag = None
            except WorkerError as exc:
                # The sidecar hiccuped: the lease lives on until its TTL; try again.
                log.warning("lease of context %s not renewed: %s", ticket.context_id, exc)
                continue
            if etag is None:
                log.error(
                    "request %s lost the lease of context %s: stopping attempt %d",
                    ticket.request_id,
                    ticket.context_id,
                    ticket.attempt,
                )
                ticket.lost.set()
                return
            ticket.lease_etag = etag

    async def ending(self, ticket: Ticket, events: Sequence[bytes], terminal: str) -> None:
        """Record the turn's last events (usage, terminal) before they are published."""
        record = {
            "state": "ending",
            "attempt": ticket.attempt,
            "terminal": terminal,
            "events": [e.decode() for e in events],
        }
        if not await self._save_turn(ticket, record, "was ending"):
            return
        _, etag = await self._read(keys.turn(ticket.request_id))
        ticket.turn_etag = etag or ""

    async def finish(self, ticket: Ticket, terminal: str) -> None:
        """The terminal event is out: mark the request done, free the context."""
        record = {"state": "done", "attempt": ticket.attempt, "terminal": terminal}
        await self._save_turn(ticket, record, "finished")
        await self._release(ticket.context_id, ticket.lease_etag)

    async def _save_turn(self, ticket: Ticket, record: dict[str, object], doing: str) -> bool:
        """Write over the record our attempt last wrote; False if another attempt took over."""
        try:
            await self._store.save_state(
                self._name,
                keys.turn(ticket.request_id),
                _dump(record),
                etag=ticket.turn_etag or None,
                ttl_seconds=self._settings.done_ttl_seconds,
            )
        except EtagMismatch:
            log.error(
                "request %s: another attempt took over while attempt %d %s",
                ticket.request_id,
                ticket.attempt,
                doing,
            )
            return False
        return True

    async def abandon(self, ticket: Ticket) -> None:
        """Free the context without marking the request done (it will be answered again)."""
        await self._release(ticket.context_id, ticket.lease_etag)

    async def _release(self, context_id: str, etag: str) -> None:
        # EtagMismatch: it already expired and was taken by someone else: not ours.
        with contextlib.suppress(EtagMismatch):
            await self._store.delete_state(self._name, keys.lease(context_id), etag=etag)

    async def _read(self, key: str) -> tuple[dict[str, object] | None, str | None]:
        raw, etag = await self._store.get_state(self._name, key)
        if raw is None:
            return None, etag
        try:
            value = json.loads(raw)
        except ValueError:
            return None, etag
        return (value if isinstance(value, dict) else None), etag


def _dump(value: dict[str, object]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
