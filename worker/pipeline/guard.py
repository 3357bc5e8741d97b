"""Exactly one live attempt per request, one turn at a time per context, across replicas.

Two kinds of keys in the Dapr state store (so every replica sees them):

- `lease/<context_id>`: who is answering a turn of this conversation right now. Created
  only if absent, renewed by a heartbeat, gone when released or when its TTL runs out
  because its holder died. Holding it is the right to stream a turn of that context.
- `turn/<request_id>`: the request's last attempt number and whether it is running or
  done.
- `ending/<context_id>`: the last events (usage, terminal) the context's current turn
  recorded before publishing them, until they are out.

A delivery first waits for the context's lease. A request found done is acknowledged
without an LLM call; a request found "running" whose lease has lapsed was cut short by a
crash, and is answered again as `attempt + 1`. An ending left recorded but not seen out
(its holder died publishing it) is published again by the context's next holder, before
anything else: by its own redelivery, or first thing by the next turn of the context, so
no other turn's events ever come between a turn's chunks and its ending.

Waiting (rather than answering at once) matters with Redis: a reclaimed duplicate shares
its message id with the copy the holder is answering, so acknowledging the duplicate
early would acknowledge the holder's copy, and a crash of the holder would then lose the
prompt.

Fencing. Redis' ETags are per-key counters that start again after a key expires, and any
error of an ETag write comes back as a mismatch, so neither an ETag match nor a mismatch
proves who holds a lease. A lease therefore names its holder (a token unique to the
attempt, and the attempt as its epoch), and every renewal or release reads the lease,
compares the token, and writes with the ETag it just read. A holder trusts its lease
only up to `margin` seconds before it could expire, counted from the start of its last
confirmed renewal (`Fence`); every state call has a deadline shorter than that margin,
so nothing a holder sends after its last check can land after a successor took over.
A lease whose TTL was never set (Redis sets value and TTL in two steps) carries the time
its holder meant it to expire, so waiters recognise it as dead and remove it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from worker.errors import EtagMismatch, LeaseLost, SidecarError, WaitedTooLong
from worker.pipeline import keys
from worker.pipeline.ports import StateStore
from worker.pipeline.state_reads import next_tick

__all__ = [
    "Ending",
    "Fence",
    "GuardSettings",
    "Ticket",
    "TurnGuard",
]

log = logging.getLogger(__name__)

# Tries of one ETag write per occasion: a mismatch may be a Redis error, not a rival.
_WRITE_TRIES = 3


class _Seen(Enum):
    LANDED = "our write is there"
    OURS = "what we wrote before is still there"
    THEIRS = "someone else wrote"


@dataclass(frozen=True, slots=True)
class GuardSettings:
    lease_seconds: int = 15
    done_ttl_seconds: int = 24 * 3600
    max_wait_seconds: float = 600
    poll_seconds: float = 0.25
    # A lease whose holder meant it to expire this long ago has lost its TTL. Generous,
    # so that a holder whose clock runs behind is never mistaken for a dead one.
    stale_grace_seconds: float = 30

    @property
    def margin(self) -> float:
        """How long before its possible expiry a holder stops trusting its lease."""
        return self.lease_seconds / 3

    @property
    def heartbeat_seconds(self) -> float:
        # Two renewals fit in the trusted part of the lease, so one failure is survived.
        return self.lease_seconds / 6

    @property
    def call_timeout(self) -> float:
        """The deadline of every sidecar call made under a lease: shorter than `margin`."""
        return self.margin / 2


class Fence:
    """How long the holder may still act: confirmed until `margin` before possible expiry."""

    def __init__(self, settings: GuardSettings, confirmed_at: float) -> None:
        self._settings = settings
        self._trusted_until = 0.0
        self.lost = asyncio.Event()
        self.confirm(confirmed_at)

    def confirm(self, at: float) -> None:
        """A renewal that began at `at` (loop time) succeeded: its TTL runs from after it."""
        self._trusted_until = max(
            self._trusted_until, at + self._settings.lease_seconds - self._settings.margin
        )

    def lose(self) -> None:
        self.lost.set()

    @property
    def valid(self) -> bool:
        return not self.lost.is_set() and _now() < self._trusted_until

    def check(self) -> float:
        """The deadline for the next sidecar call; raises `LeaseLost` if none may be made."""
        if not self.valid:
            self.lost.set()
            raise LeaseLost("the lease could not be confirmed in time: this attempt stops")
        return self._settings.call_timeout


@dataclass(frozen=True, slots=True)
class Ending:
    """The last events of one attempt, recorded before they are published."""

    request_id: str
    attempt: int
    topic: str
    terminal: str
    events: tuple[bytes, ...]

    def dump(self) -> bytes:
        return _dump(
            {
                "request_id": self.request_id,
                "attempt": self.attempt,
                "topic": self.topic,
                "terminal": self.terminal,
                "events": [e.decode() for e in self.events],
            }
        )

    @classmethod
    def load(cls, raw: bytes | None) -> Ending | None:
        value = _parse(raw)
        if value is None:
            return None
        events = value.get("events")
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            return None
        return cls(
            request_id=str(value.get("request_id", "")),
            attempt=_int(value.get("attempt")),
            topic=str(value.get("topic", "")),
            terminal=str(value.get("terminal", "")),
            events=tuple(e.encode() for e in events),
        )


@dataclass
class Ticket:
    """The right to answer `request_id` as `attempt`, while `fence` holds."""

    context_id: str
    request_id: str
    attempt: int
    restarted: bool
    token: str
    fence: Fence
    turn_etag: str | None = None
    # An ending recorded by an attempt that died before it was out: published again (same
    # ids) before anything else. This request's own (then no new attempt is made), or
    # another request's of the context (then this turn follows it).
    leftover: Ending | None = None
    written: bytes = field(default=b"", repr=False)  # the turn record as we last wrote it


class TurnGuard:
    def __init__(self, store: StateStore, store_name: str, settings: GuardSettings) -> None:
        self._store = store
        self._name = store_name
        self.settings = settings
        self.owner = f"worker-{uuid.uuid4().hex[:12]}"

    @property
    def heartbeat_seconds(self) -> float:
        return self.settings.heartbeat_seconds

    async def admit(self, context_id: str, request_id: str) -> Ticket | None:
        """Wait for the context; None when the request turns out to be done already."""
        deadline = time.monotonic() + self.settings.max_wait_seconds
        waited = False
        while True:
            raw, turn_etag = await self._store.get_state(
                self._name, keys.turn(request_id), call_timeout=self.settings.call_timeout
            )
            turn = _parse(raw)
            if turn is not None and turn.get("state") == "done":
                log.info("request %s is done already: acknowledged, no LLM call", request_id)
                return None
            ticket = await self._try_lease(context_id, request_id, raw, turn, turn_etag)
            if ticket is not None:
                return ticket
            if time.monotonic() > deadline:
                raise WaitedTooLong(
                    f"context {context_id} stayed busy for {self.settings.max_wait_seconds:.0f}s"
                )
            if not waited:
                log.info("request %s waits for context %s", request_id, context_id)
                waited = True
            await asyncio.sleep(self.settings.poll_seconds)

    async def _try_lease(
        self,
        context_id: str,
        request_id: str,
        raw_turn: bytes | None,
        turn: Mapping[str, object] | None,
        turn_etag: str | None,
    ) -> Ticket | None:
        previous = _int(turn.get("attempt")) if turn is not None else 0
        token = uuid.uuid4().hex
        began = _now()
        key = keys.lease(context_id)
        try:
            await self._store.save_state(
                self._name,
                key,
                self._lease_value(request_id, previous + 1, token),
                create_only=True,
                ttl_seconds=self.settings.lease_seconds,
                call_timeout=self.settings.call_timeout,
            )
        except EtagMismatch:
            # A live holder, a dead one whose TTL was never set, or our own write that
            # landed before an error: only the lease itself can tell.
            lease, etag = await self._read(key)
            if lease is None or lease.get("token") != token:
                if lease is not None and etag is not None:
                    await self._remove_if_dead(context_id, lease, etag)
                return None
        ticket = Ticket(
            context_id=context_id,
            request_id=request_id,
            attempt=previous + 1,
            restarted=previous > 0,
            token=token,
            fence=Fence(self.settings, began),
            turn_etag=turn_etag,
            written=raw_turn or b"",
        )
        leftover = await self._leftover(context_id)
        if leftover is not None and leftover.request_id == request_id:
            ticket.attempt, ticket.restarted, ticket.leftover = leftover.attempt, False, leftover
            return ticket
        ticket.leftover = leftover
        record = {
            "state": "running",
            "attempt": ticket.attempt,
            "owner": self.owner,
            "token": token,
        }
        if not await self._save_turn(ticket, record, create=turn_etag is None):
            # The request moved on meanwhile (finished, or taken): look again.
            await self._release(ticket)
            return None
        if previous:
            log.warning(
                "request %s: attempt %d died without a terminal event; answering as attempt %d",
                request_id,
                previous,
                ticket.attempt,
            )
        return ticket

    async def _leftover(self, context_id: str) -> Ending | None:
        """The context's recorded ending that is not out yet, if its holder died."""
        raw, _ = await self._store.get_state(
            self._name, keys.ending(context_id), call_timeout=self.settings.call_timeout
        )
        ending = Ending.load(raw)
        if ending is None:
            return None
        turn, _ = await self._read(keys.turn(ending.request_id))
        if turn is not None and turn.get("state") == "done":
            return None  # out and done; only its record was left behind
        return ending

    async def keep_alive(self, ticket: Ticket) -> None:
        """Renew the lease until cancelled; lose the fence (and return) once it slipped."""
        while True:
            # On the replica's common tick (so at most a heartbeat after the last renewal):
            # every turn's lease read goes out in one bulk read.
            await asyncio.sleep(next_tick(self.heartbeat_seconds))
            if not await self._renew(ticket):
                log.error(
                    "request %s lost the lease of context %s: stopping attempt %d",
                    ticket.request_id,
                    ticket.context_id,
                    ticket.attempt,
                )
                ticket.fence.lose()
                return

    async def _renew(self, ticket: Ticket) -> bool:
        """Read, compare the token, write with the ETag just read; False once surely lost."""
        key = keys.lease(ticket.context_id)
        for _ in range(_WRITE_TRIES):
            # Past the trusted time our lease may have expired and a successor's have
            # the very ETag we would write with: never write then.
            if not ticket.fence.valid:
                return False
            began = _now()
            try:
                lease, etag = await self._read(key)
                if lease is None or lease.get("token") != ticket.token or etag is None:
                    return False
                await self._store.save_state(
                    self._name,
                    key,
                    self._lease_value(ticket.request_id, ticket.attempt, ticket.token),
                    etag=etag,
                    ttl_seconds=self.settings.lease_seconds,
                    call_timeout=self.settings.call_timeout,
                )
            except EtagMismatch:
                continue  # maybe a Redis error: read again and compare
            except SidecarError as exc:
                # The lease lives on until its TTL; the fence says how long we trust it.
                log.warning("lease of context %s not renewed: %s", ticket.context_id, exc)
                return True
            ticket.fence.confirm(began)
            return True
        return True

    async def ending(
        self, ticket: Ticket, topic: str, events: Sequence[bytes], terminal: str
    ) -> None:
        """Record the turn's last events (usage, terminal) before they are published."""
        ending = Ending(ticket.request_id, ticket.attempt, topic, terminal, tuple(events))
        ticket.fence.check()
        await self._store.save_state(
            self._name,
            keys.ending(ticket.context_id),
            ending.dump(),
            ttl_seconds=self.settings.done_ttl_seconds,
            call_timeout=self.settings.call_timeout,
        )

    async def settle(self, ticket: Ticket, ending: Ending) -> None:
        """A dead attempt's recorded ending is out: its request is done."""
        ticket.fence.check()
        key = keys.turn(ending.request_id)
        turn, etag = await self._read(key)
        if turn is None or turn.get("state") != "done":
            # With the ETag just read: Dapr's Redis refuses a write without one to a key
            # created only-if-absent.
            record = {"state": "done", "attempt": ending.attempt, "terminal": ending.terminal}
            await self._store.save_state(
                self._name,
                key,
                _dump(record),
                etag=etag,
                create_only=etag is None,
                ttl_seconds=self.settings.done_ttl_seconds,
                call_timeout=self.settings.call_timeout,
            )
            if ending.request_id == ticket.request_id:
                ticket.turn_etag = None  # looked up again by `finish`'s write
                ticket.written = _dump(record)
        if ending.request_id == ticket.request_id:
            return  # `finish` ends the rest
        await self._store.delete_state(
            self._name, keys.ending(ticket.context_id), call_timeout=self.settings.call_timeout
        )

    async def finish(self, ticket: Ticket, terminal: str) -> None:
        """The terminal event is out: mark the request done, free the context."""
        record = {"state": "done", "attempt": ticket.attempt, "terminal": terminal}
        if not await self._save_turn(ticket, record, read_back=False):
            log.error(
                "request %s: another attempt took over after attempt %d finished",
                ticket.request_id,
                ticket.attempt,
            )
        if not ticket.fence.valid:
            return  # past our trust a successor's records may be there: leave them alone
        # Done is recorded: a record or lease left behind is cleared later (see _leftover).
        with contextlib.suppress(SidecarError):
            await self._store.delete_state(
                self._name, keys.ending(ticket.context_id), call_timeout=self.settings.call_timeout
            )
            await self._release(ticket)

    async def abandon(self, ticket: Ticket) -> None:
        """Free the context without marking the request done (it will be answered again)."""
        with contextlib.suppress(SidecarError):
            await self._release(ticket)

    async def _save_turn(
        self,
        ticket: Ticket,
        record: dict[str, object],
        *,
        create: bool = False,
        read_back: bool = True,
    ) -> bool:
        """Write over the record our attempt last wrote; False if another attempt took over.

        A mismatch is checked by reading the record again: still ours unchanged (the write
        did not land, or our ETag went stale after a failed read) is tried again, ours as
        just written is success, anything else is a successor's.
        """
        key = keys.turn(ticket.request_id)
        value = _dump(record)
        for _ in range(_WRITE_TRIES):
            if ticket.turn_etag is None and ticket.written:
                seen = await self._look(ticket, key, value)
                if seen is not _Seen.OURS:
                    return seen is _Seen.LANDED
            try:
                await self._store.save_state(
                    self._name,
                    key,
                    value,
                    etag=ticket.turn_etag,
                    create_only=create and not ticket.written,
                    ttl_seconds=self.settings.done_ttl_seconds,
                    call_timeout=self.settings.call_timeout,
                )
            except EtagMismatch:
                seen = await self._look(ticket, key, value)
                if seen is _Seen.OURS:
                    continue
                return seen is _Seen.LANDED
            ticket.written = value
            ticket.turn_etag = None  # looked up before our next write, if there is one
            if not read_back:
                return True
            # A failed read-back leaves the ETag unknown: looked up before our next write.
            with contextlib.suppress(SidecarError):
                _, ticket.turn_etag = await self._store.get_state(
                    self._name, key, call_timeout=self.settings.call_timeout
                )
            return True
        raise SidecarError(f"state {key}: {_WRITE_TRIES} writes refused")

    async def _look(self, ticket: Ticket, key: str, value: bytes) -> _Seen:
        """What the turn record holds now, compared with what we wrote or meant to."""
        raw, ticket.turn_etag = await self._store.get_state(
            self._name, key, call_timeout=self.settings.call_timeout
        )
        if raw == value:
            ticket.written = value
            return _Seen.LANDED
        return _Seen.OURS if raw == (ticket.written or None) else _Seen.THEIRS

    async def _release(self, ticket: Ticket) -> None:
        # Only while trusted: later, a successor's lease may have the ETag we would use.
        # Left alone, our lease frees itself when its TTL (or its stamped expiry) passes.
        if not ticket.fence.valid:
            return
        key = keys.lease(ticket.context_id)
        lease, etag = await self._read(key)
        if lease is None or lease.get("token") != ticket.token:
            return
        with contextlib.suppress(EtagMismatch):
            await self._store.delete_state(
                self._name, key, etag=etag, call_timeout=self.settings.call_timeout
            )
        ticket.fence.lose()  # released: nothing more goes out under it

    async def _remove_if_dead(
        self, context_id: str, lease: Mapping[str, object], etag: str
    ) -> None:
        """Delete a lease whose stamped expiry passed long ago: its TTL was never set."""
        expires = lease.get("expires")
        if not isinstance(expires, int | float):
            return
        if time.time() < expires + self.settings.stale_grace_seconds:
            return
        log.warning(
            "lease of context %s (request %s) outlived its expiry by %.0fs: its TTL was "
            "never set; removing it",
            context_id,
            lease.get("request_id"),
            time.time() - expires,
        )
        with contextlib.suppress(EtagMismatch):
            await self._store.delete_state(
                self._name,
                keys.lease(context_id),
                etag=etag,
                call_timeout=self.settings.call_timeout,
            )

    def _lease_value(self, request_id: str, attempt: int, token: str) -> bytes:
        # The attempt is the lease's epoch; the token tells its holder apart.
        return _dump(
            {
                "owner": self.owner,
                "request_id": request_id,
                "epoch": attempt,
                "token": token,
                # Wall clock, for other replicas: when this lease should be gone by.
                "expires": round(time.time() + self.settings.lease_seconds, 3),
            }
        )

    async def _read(self, key: str) -> tuple[dict[str, object] | None, str | None]:
        raw, etag = await self._store.get_state(
            self._name, key, call_timeout=self.settings.call_timeout
        )
        return _parse(raw), etag


def _parse(raw: bytes | None) -> dict[str, object] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _now() -> float:
    return asyncio.get_running_loop().time()


def _dump(value: dict[str, object]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
