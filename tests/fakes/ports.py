"""In-memory fakes of the pipeline's ports (what the sidecar offers), for unit tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from worker.contract.envelopes import Publication
from worker.errors import EtagMismatch, SidecarError
from worker.llm.base import LLMRequest, StreamItem
from worker.pipeline.ports import StateRead

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
    timeouts: list[float | None] = field(default_factory=list)
    # Called as each event is recorded (published): lets a test look at the world then.
    before_record: Callable[[Publication], None] | None = None

    async def publish(self, publication: Publication, *, call_timeout: float | None = None) -> None:
        self.traceparents.append(publication.traceparent)
        self.timeouts.append(call_timeout)
        async with self._call("publish"):
            self._record(publication)

    def submit(
        self, publication: Publication, *, call_timeout: float | None = None
    ) -> asyncio.Future[None]:
        """As `BatchingPublisher.submit`: the publish goes on without the caller, whose
        future is its outcome (cancelling it withdraws the publish)."""
        return asyncio.ensure_future(self.publish(publication, call_timeout=call_timeout))

    async def publish_bulk(
        self, publications: Sequence[Publication], *, call_timeout: float | None = None
    ) -> dict[int, str]:
        self.bulk_sizes.append(len(publications))
        self.timeouts.append(call_timeout)
        refused: dict[int, str] = {}
        async with self._call("bulk publish"):
            for n in random.sample(range(len(publications)), len(publications)):
                publication = publications[n]
                self.bulk_entries += 1
                if self.refuse_entry(self.bulk_entries):
                    refused[n] = "injected: entry refused"
                    continue
                self.traceparents.append(json.loads(publication.data).get("traceparent"))
                self._record(publication)
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

    def _record(self, publication: Publication) -> None:
        if self.before_record is not None:
            self.before_record(publication)
        published = Published(
            publication.pubsub,
            publication.topic,
            publication.content_type,
            dict(publication.metadata),
            json.loads(publication.data),
        )
        self.published.append(published)
        if published.type == "chunk":
            self.chunk_published.set()

    def types(self) -> list[str]:
        return [p.type for p in self.published]

    def text(self) -> str:
        return "".join(p.data["text"] for p in self.published if p.type == "chunk")


# Where an injected write fault strikes: before anything is written, or between the
# value and its TTL (Redis sets them in two steps).
WriteFault = Literal["before", "between"]


@dataclass
class FakeStateStore:
    """Dapr's Redis state store, in the ways the guard's safety depends on.

    - Each key has its own version (its ETag), starting at 1 when the key is created and
      again at 1 after it expired or was deleted: a stale ETag can match a new value.
      A write with an ETag to a missing key creates it. A key once written with an ETag
      or create-only refuses writes without one (an error, not a mismatch).
    - A write sets the value, then the TTL, in two steps; `write_fault` can fail it before
      the first or between the two (leaving the value without a TTL).
    - Any error of a write with an ETag (or create-only) comes back as `EtagMismatch`, as
      from Redis; other writes and reads fail with `SidecarError`.
    TTLs run on the event loop's clock. Every call's `timeout` is recorded.
    """

    items: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    ttls: dict[str, int | None] = field(default_factory=dict)
    expires: dict[str, float] = field(default_factory=dict)
    write_fault: Callable[[str], WriteFault | None] = lambda key: None
    read_fault: Callable[[str], bool] = lambda key: False
    timeouts: list[float | None] = field(default_factory=list)
    first_write: set[str] = field(default_factory=set)
    bulk_reads: list[list[str]] = field(default_factory=list)

    def _expire(self, key: str) -> None:
        deadline = self.expires.get(key)
        if deadline is not None and asyncio.get_running_loop().time() >= deadline:
            self._forget(key)

    def _forget(self, key: str) -> None:
        self.items.pop(key, None)
        self.expires.pop(key, None)
        self.first_write.discard(key)

    async def get_state(
        self, store: str, key: str, *, call_timeout: float | None = None
    ) -> tuple[bytes | None, str | None]:
        self.timeouts.append(call_timeout)
        if self.read_fault(key):
            raise SidecarError(f"injected: get state {key} failed")
        self._expire(key)
        value = self.items.get(key)
        return (None, None) if value is None else value

    async def get_bulk_state(
        self, store: str, keys: Sequence[str], *, call_timeout: float | None = None
    ) -> dict[str, StateRead | SidecarError]:
        """As daprd's bulk read: one call, each key read (or failed) on its own."""
        self.bulk_reads.append(list(keys))
        self.timeouts.append(call_timeout)
        read: dict[str, StateRead | SidecarError] = {}
        for key in keys:
            if self.read_fault(key):
                read[key] = SidecarError(f"injected: get state {key} failed")
                continue
            self._expire(key)
            value = self.items.get(key)
            read[key] = (None, None) if value is None else value
        return read

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
        self.timeouts.append(call_timeout)
        conditional = etag is not None or create_only
        fault = self.write_fault(key)
        error = (EtagMismatch if conditional else SidecarError)(f"injected: save {key} failed")
        if fault == "before":
            raise error
        self._expire(key)
        current = self.items.get(key)
        # As in Redis: an ETag is only compared with a key that exists (a missing key is
        # created), and a key's version starts at 1 whenever it is created.
        if etag is not None and current is not None and current[1] != etag:
            raise EtagMismatch(f"{key}: stale etag")
        if create_only and current is not None:
            raise EtagMismatch(f"{key}: exists already")
        if not conditional and key in self.first_write:
            raise SidecarError(f"{key}: failed to set key (written with first-write before)")
        if conditional:
            self.first_write.add(key)
        version = 1 if current is None else int(current[1]) + 1
        self.items[key] = (value, str(version))
        if fault == "between":
            raise error  # the value is in; its new TTL is not (a new key has none)
        self.ttls[key] = ttl_seconds
        self.expires.pop(key, None)
        if ttl_seconds is not None:
            self.expires[key] = asyncio.get_running_loop().time() + ttl_seconds

    async def delete_state(
        self, store: str, key: str, *, etag: str | None = None, call_timeout: float | None = None
    ) -> None:
        self.timeouts.append(call_timeout)
        if etag is not None and self.write_fault(key) is not None:
            raise EtagMismatch(f"injected: delete {key} failed")
        self._expire(key)
        current = self.items.get(key)
        if etag is not None and current is not None and current[1] != etag:
            raise EtagMismatch(f"{key}: stale etag")
        self._forget(key)


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
