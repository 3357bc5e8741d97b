"""In-memory fakes of the pipeline's ports (what the sidecar offers), for unit tests."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.errors import EtagMismatch, SidecarError
from worker.llm.base import LLMRequest, StreamItem
from worker.pipeline.ports import BulkEntry

__all__ = ["FakeSink", "FakeStateStore", "Published", "ScriptedBackend"]


@dataclass(frozen=True)
class Published:
    pubsub: str
    topic: str
    content_type: str
    metadata: Mapping[str, str]
    event: dict[str, Any]

    @property
    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = self.event["data"]
        return data

    @property
    def type(self) -> str:
        return str(self.event["type"]).removeprefix("llm.stream.").removesuffix(".v1")


@dataclass
class FakeSink:
    """Records publishes; can be slowed down or made to fail the first `failures` calls.

    Bulk publishes record their entries in a shuffled order, as the sidecar publishes
    them in parallel; `refuse_entry(n)` refuses the n-th bulk entry (from 1) overall.
    """

    delay: float = 0.0
    failures: int = 0
    refuse_entry: Callable[[int], bool] = lambda n: False
    bulk_sizes: list[int] = field(default_factory=list)
    bulk_entries: int = 0
    published: list[Published] = field(default_factory=list)
    traceparents: list[str | None] = field(default_factory=list)
    calls: int = 0
    chunk_published: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    max_in_flight: int = 0

    async def publish(
        self,
        *,
        pubsub: str,
        topic: str,
        data: bytes,
        content_type: str,
        metadata: Mapping[str, str],
        traceparent: str | None = None,
    ) -> None:
        self.traceparents.append(traceparent)
        async with self._call("publish"):
            self._record(Published(pubsub, topic, content_type, dict(metadata), json.loads(data)))

    async def publish_bulk(
        self, *, pubsub: str, topic: str, entries: Sequence[BulkEntry]
    ) -> dict[str, str]:
        self.bulk_sizes.append(len(entries))
        refused: dict[str, str] = {}
        async with self._call("bulk publish"):
            for entry in random.sample(list(entries), len(entries)):
                self.bulk_entries += 1
                if self.refuse_entry(self.bulk_entries):
                    refused[entry.entry_id] = "injected: entry refused"
                    continue
                event = json.loads(entry.data)
                self.traceparents.append(event.get("traceparent"))
                self._record(
                    Published(pubsub, topic, entry.content_type, dict(entry.metadata), event)
                )
        return refused

    @contextlib.asynccontextmanager
    async def _call(self, what: str) -> AsyncIterator[None]:
        """One call to the fake sidecar: counted, slowed by `delay`, maybe failed."""
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.failures > 0:
                self.failures -= 1
                raise SidecarError(f"injected {what} failure")
            yield
        finally:
            self.in_flight -= 1

    def _record(self, published: Published) -> None:
        self.published.append(published)
        if published.type == "chunk":
            self.chunk_published.set()

    def types(self) -> list[str]:
        return [p.type for p in self.published]

    def text(self) -> str:
        return "".join(p.data["text"] for p in self.published if p.type == "chunk")


@dataclass
class FakeStateStore:
    """Keys with ETags, first-write semantics and TTLs (on the event loop's clock)."""

    items: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    ttls: dict[str, int | None] = field(default_factory=dict)
    expires: dict[str, float] = field(default_factory=dict)
    _versions: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _expire(self, key: str) -> None:
        deadline = self.expires.get(key)
        if deadline is not None and asyncio.get_running_loop().time() >= deadline:
            self.items.pop(key, None)
            self.expires.pop(key, None)

    async def get_state(self, store: str, key: str) -> tuple[bytes | None, str | None]:
        self._expire(key)
        value = self.items.get(key)
        return (None, None) if value is None else value

    async def save_state(
        self,
        store: str,
        key: str,
        value: bytes,
        *,
        etag: str | None = None,
        create_only: bool = False,
        ttl_seconds: int | None = None,
    ) -> None:
        self._expire(key)
        current = self.items.get(key)
        if etag is not None and (current is None or current[1] != etag):
            raise EtagMismatch(f"{key}: stale etag")
        if create_only and current is not None:
            raise EtagMismatch(f"{key}: exists already")
        self.items[key] = (value, str(next(self._versions)))
        self.ttls[key] = ttl_seconds
        self.expires.pop(key, None)
        if ttl_seconds is not None:
            self.expires[key] = asyncio.get_running_loop().time() + ttl_seconds

    async def delete_state(self, store: str, key: str, *, etag: str | None = None) -> None:
        self._expire(key)
        current = self.items.get(key)
        if etag is not None and current is not None and current[1] != etag:
            raise EtagMismatch(f"{key}: stale etag")
        self.items.pop(key, None)
        self.expires.pop(key, None)


@dataclass
class ScriptedBackend:
    """An LLM that yields a fixed script, with a pause between items; records requests."""

    script: Sequence[StreamItem | Exception]
    name: str = "scripted"
    model: str | None = "scripted-model"
    provider: str = "scripted"
    scrubs_pii: bool = False
    honours_max_tokens: bool = True
    pause: float = 0.0
    requests: list[LLMRequest] = field(default_factory=list)
    closed: bool = False

    async def stream(self, request: LLMRequest) -> AsyncGenerator[StreamItem, None]:
        self.requests.append(request)
        try:
            for item in self.script:
                if self.pause:
                    await asyncio.sleep(self.pause)
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.closed = True
