"""What keeps replies replayable: response events in the Dapr state store, one key each.

Key per event, `stream|<request_id>|<attempt>|<seq>`, rather than one growing list per
request: every replica reads every reply and stores it, so the same event is written
N times; a key per event makes those writes idempotent (same key, same value) where a
shared list would need an ETag round trip per event and lose most of them to conflicts.
`|` is outside the contract's id alphabet, so no two ids map to one key.

Bounded: every key expires after `replay_ttl_seconds`; at most `replay_max_events`
events of one attempt are stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llm_stream_gateway.sidecar import Sidecar
from worker.client.consumer import Event

__all__ = ["EventLog", "StreamInfo", "event_key", "info_key"]

# How many keys one store read asks for.
_BATCH = 64
# Attempts probed at once when looking for the latest one.
_PROBE = 8


def info_key(request_id: str) -> str:
    return f"stream|{request_id}"


def event_key(request_id: str, attempt: int, seq: int) -> str:
    return f"stream|{request_id}|{attempt}|{seq}"


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """Written when the gateway publishes the prompt: a stream id is known from then on."""

    request_id: str
    context_id: str
    model: str
    created: int
    include_usage: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "context_id": self.context_id,
            "model": self.model,
            "created": self.created,
            "include_usage": self.include_usage,
        }

    @classmethod
    def of(cls, request_id: str, stored: Mapping[str, Any]) -> StreamInfo:
        return cls(
            request_id,
            str(stored["context_id"]),
            str(stored["model"]),
            int(stored["created"]),
            bool(stored.get("include_usage", False)),
        )


class EventLog:
    def __init__(self, sidecar: Sidecar, *, ttl_seconds: int, max_events: int) -> None:
        self._sidecar = sidecar
        self._ttl = ttl_seconds
        self._max_events = max_events

    async def open_stream(self, info: StreamInfo) -> None:
        await self._sidecar.save(
            [(info_key(info.request_id), info.as_json())], ttl_seconds=self._ttl
        )

    async def info(self, request_id: str) -> StreamInfo | None:
        stored = await self._sidecar.get(info_key(request_id))
        return StreamInfo.of(request_id, stored) if isinstance(stored, Mapping) else None

    async def append(self, events: Sequence[Event]) -> None:
        """Store events (of any requests) in one call to the sidecar."""
        items = []
        for event in events:
            data = event.data
            if data["seq"] > self._max_events:
                continue
            key = event_key(data["request_id"], data["attempt"], data["seq"])
            items.append((key, {"type": event.type, "id": event.id, "data": dict(data)}))
        if items:
            await self._sidecar.save(items, ttl_seconds=self._ttl)

    async def latest_attempt(self, request_id: str) -> int:
        """The highest attempt with a stored `started`; 1 when none is stored yet."""
        latest, first = 1, 1
        while True:
            keys = [event_key(request_id, a, 1) for a in range(first, first + _PROBE)]
            found = await self._sidecar.get_many(keys)
            attempts = [
                a for a in range(first, first + _PROBE) if event_key(request_id, a, 1) in found
            ]
            if not attempts:
                return latest
            latest = max(attempts)
            if latest < first + _PROBE - 1:
                return latest
            first += _PROBE

    async def read(self, request_id: str, attempt: int, from_seq: int) -> tuple[list[Event], bool]:
        """Stored events of `attempt` from `from_seq` on (one batch), and the next
        attempt's first; True when the batch was full and more may follow at once."""
        keys = [event_key(request_id, attempt, s) for s in range(from_seq, from_seq + _BATCH)]
        keys.append(event_key(request_id, attempt + 1, 1))
        found = await self._sidecar.get_many(keys)
        events = [
            Event(type=str(v["type"]), data=v["data"], id=str(v.get("id", "")))
            for k in keys
            if isinstance(v := found.get(k), Mapping)
        ]
        full = all(key in found for key in keys[:_BATCH])
        return events, full
