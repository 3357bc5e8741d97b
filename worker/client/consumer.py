"""Reassemble response streams from events in any order: a building block for consumers.

Feed a `Reassembler` every response event the broker delivers, for any number of
requests, in whatever order and however often they arrive. It hands back, per
request and in `seq` order, what a consumer acts on: `Started`, each `Text`, the
`UsageReported`, and a `Finished` with the whole text and usage. It also says when
an attempt was `Superseded` by a restart (contract section 3.5: drop its partial
text) and when a `Gap` was given up on.

Pure Python: no I/O, no clock, no threads. One instance per consuming loop.

    assembler = Reassembler()
    for output in assembler.feed(Event(type=..., data=..., id=...)):
        match output:
            case Text(text=text): ...
            case Superseded(): ...   # forget the text shown so far
            case Finished(text=text, usage=usage): ...
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent, from_dict, from_http

from worker.client.errors import MalformedEvent
from worker.client.types import CompletionUsage
from worker.contract.events import EVENT_MODELS, EventType, ResponseEvent

__all__ = [
    "Counters",
    "Event",
    "Failure",
    "Finished",
    "Gap",
    "Other",
    "Output",
    "Reassembler",
    "Started",
    "Superseded",
    "Text",
    "UsageReported",
]


@dataclass(frozen=True, slots=True)
class Event:
    """One response event as delivered: its CloudEvent `type`, its `data`, its `id`."""

    type: str
    data: Mapping[str, Any]
    id: str = ""

    @classmethod
    def from_http(cls, headers: Mapping[str, str], body: bytes) -> Event:
        """From an HTTP delivery, in either CloudEvents mode: structured (the envelope as
        JSON, as Dapr delivers to an app's route) or binary (`ce-*` headers, the data as
        the body). Read by the CloudEvents SDK; `MalformedEvent` when it is neither."""
        return cls._read(lambda: from_http(dict(headers), body))

    @classmethod
    def from_cloudevent(cls, envelope: Mapping[str, Any]) -> Event:
        """From a structured-mode CloudEvent already parsed (`{"specversion", "id",
        "source", "type", "data", ...}`), as the entries of a bulk delivery carry it."""
        return cls._read(lambda: from_dict(dict(envelope)))

    @classmethod
    def _read(cls, parse: Callable[[], CloudEvent]) -> Event:
        try:
            cloud_event = parse()
        except GenericException as exc:
            raise MalformedEvent(f"not a CloudEvent: {exc}") from exc
        data = cloud_event.get_data()
        if not isinstance(data, Mapping):
            raise MalformedEvent(f"event {cloud_event['id']!r} has no JSON object as data")
        return cls(type=cloud_event["type"], data=data, id=cloud_event["id"])


@dataclass(frozen=True, slots=True)
class Started:
    event: Event
    request_id: str
    context_id: str
    attempt: int
    # True for a new attempt after a restart: text of earlier attempts is void.
    restarted: bool
    llm_component: str | None
    model: str | None
    metadata: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Text:
    event: Event
    request_id: str
    context_id: str
    attempt: int
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class UsageReported:
    event: Event
    request_id: str
    context_id: str
    usage: CompletionUsage


@dataclass(frozen=True, slots=True)
class Superseded:
    """A later attempt of the request appeared: everything of `attempt` is void."""

    request_id: str
    context_id: str
    attempt: int
    by_attempt: int
    discarded_text: str


@dataclass(frozen=True, slots=True)
class Gap:
    """Events `missing` (seq numbers) were given up on; the text has a hole there,
    unless only seq 1 (the attempt's `started`) is missing."""

    request_id: str
    context_id: str
    attempt: int
    missing: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Other:
    """An event of a type this version does not know, in its place in the order."""

    event: Event
    request_id: str


@dataclass(frozen=True, slots=True)
class Failure:
    code: str
    message: str
    retryable: bool


@dataclass(frozen=True, slots=True)
class Finished:
    """The terminal event of the request, with everything of its final attempt."""

    event: Event
    request_id: str
    context_id: str
    attempt: int
    status: Literal["completed", "failed", "cancelled"]
    text: str
    usage: CompletionUsage | None
    llm_component: str | None = None
    model: str | None = None
    finish_reason: str | None = None
    failure: Failure | None = None
    cancel_reason: str | None = None
    # Seq numbers skipped as gaps; empty when the text is whole.
    gaps: tuple[int, ...] = ()


Output = Started | Text | UsageReported | Superseded | Gap | Other | Finished


@dataclass(frozen=True, slots=True)
class _Head:
    """The fields every event's data carries (contract section 2)."""

    request_id: str
    context_id: str
    attempt: int
    seq: int


@dataclass(slots=True)
class _Attempt:
    number: int
    context_id: str
    next_seq: int = 1
    held: dict[int, tuple[Event, _Head]] = field(default_factory=dict)
    parts: list[str] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)
    usage: CompletionUsage | None = None
    llm_component: str | None = None
    model: str | None = None


@dataclass(slots=True)
class Counters:
    """What was dropped, for logs and metrics."""

    duplicates: int = 0
    # Events of a superseded attempt or of a request already finished.
    stale: int = 0


class Reassembler:
    """Orders, de-duplicates and reassembles the response streams of many requests.

    `max_held`: how many events may wait behind a missing one before the missing
    ones are reported as a `Gap` and skipped. `None` (the default) waits for ever:
    at-least-once delivery brings a missing event back, and the text stays whole.
    `0` reports every hole at once and never reorders. `remember` bounds how many
    finished request ids are kept to drop their late redeliveries.

    Duplicates are recognised by their place (request, attempt, seq), which is what
    the contract's event id `<request_id>:<attempt>:<seq>` encodes, so a redelivery
    is dropped even where a broker rewrote the id.
    """

    def __init__(self, *, max_held: int | None = None, remember: int = 10_000) -> None:
        if max_held is not None and max_held < 0:
            raise ValueError("max_held must be >= 0 or None")
        self._max_held = max_held
        self._remember = remember
        self._active: dict[str, _Attempt] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self.counters = Counters()

    @property
    def in_progress(self) -> list[str]:
        """Request ids seen but not finished yet."""
        return list(self._active)

    def held(self, request_id: str) -> int:
        """How many events of the request wait for a missing one."""
        current = self._active.get(request_id)
        return len(current.held) if current else 0

    def missing(self, request_id: str) -> tuple[int, ...]:
        """The seq numbers that held events wait for; empty when none wait."""
        current = self._active.get(request_id)
        if current is None or not current.held:
            return ()
        return tuple(range(current.next_seq, min(current.held)))

    def feed(self, event: Event) -> list[Output]:
        """Take one delivered event; return what it made ready, in order."""
        head = _head(event)
        if head.request_id in self._finished:
            self.counters.stale += 1
            return []
        out: list[Output] = []
        current = self._active.get(head.request_id)
        if current is None:
            current = self._active[head.request_id] = _Attempt(head.attempt, head.context_id)
        elif head.attempt < current.number:
            self.counters.stale += 1
            return []
        elif head.attempt > current.number:
            out.append(
                Superseded(
                    head.request_id,
                    current.context_id,
                    current.number,
                    head.attempt,
                    "".join(current.parts),
                )
            )
            self.counters.stale += len(current.held)
            current = self._active[head.request_id] = _Attempt(head.attempt, head.context_id)
        if head.seq < current.next_seq or head.seq in current.held:
            self.counters.duplicates += 1
            return out
        current.held[head.seq] = (event, head)
        out.extend(self._release(current))
        if self._max_held is not None:
            while head.request_id in self._active and len(current.held) > self._max_held:
                out.extend(self._skip(current, head.request_id))
        return out

    def skip_gaps(self, request_id: str) -> list[Output]:
        """Give up on what is missing before the held events (say, after a timeout)."""
        current = self._active.get(request_id)
        if current is None or not current.held:
            return []
        return self._skip(current, request_id)

    def forget(self, request_id: str) -> None:
        """Drop an unfinished request (its worker is gone for good, say)."""
        self._active.pop(request_id, None)

    def _skip(self, current: _Attempt, request_id: str) -> list[Output]:
        resume = min(current.held)
        missing = tuple(range(current.next_seq, resume))
        current.gaps.extend(missing)
        current.next_seq = resume
        gap = Gap(request_id, current.context_id, current.number, missing)
        return [gap, *self._release(current)]

    def _release(self, current: _Attempt) -> list[Output]:
        out: list[Output] = []
        while current.next_seq in current.held:
            event, head = current.held.pop(current.next_seq)
            current.next_seq += 1
            output = self._apply(current, event, head)
            out.append(output)
            if isinstance(output, Finished):
                self._finish(head.request_id)
                break
        return out

    def _apply(self, current: _Attempt, event: Event, head: _Head) -> Output:
        data = event.data
        match event.type:
            case EventType.STARTED:
                current.llm_component = _optional_str(data, "llm_component")
                current.model = _optional_str(data, "model")
                metadata = data.get("metadata")
                return Started(
                    event,
                    head.request_id,
                    head.context_id,
                    head.attempt,
                    restarted=bool(data.get("restarted")) or head.attempt > 1,
                    llm_component=current.llm_component,
                    model=current.model,
                    metadata=dict(metadata) if isinstance(metadata, Mapping) else {},
                )
            case EventType.CHUNK:
                text = str(data["text"])
                current.parts.append(text)
                return Text(
                    event,
                    head.request_id,
                    head.context_id,
                    head.attempt,
                    int(data.get("index", len(current.parts) - 1)),
                    text,
                )
            case EventType.USAGE:
                current.usage = CompletionUsage(
                    prompt_tokens=int(data["prompt_tokens"]),
                    completion_tokens=int(data["completion_tokens"]),
                    total_tokens=int(data["total_tokens"]),
                    source=str(data.get("source", "provider")),
                )
                return UsageReported(event, head.request_id, head.context_id, current.usage)
            case EventType.COMPLETED | EventType.FAILED | EventType.CANCELLED:
                return self._finished_output(current, event, head)
        return Other(event, head.request_id)

    def _finished_output(self, current: _Attempt, event: Event, head: _Head) -> Finished:
        data = event.data
        failure = None
        if event.type == EventType.FAILED:
            failure = Failure(
                code=str(data.get("code", "internal")),
                message=str(data.get("message", "")),
                retryable=bool(data.get("retryable", False)),
            )
        status: Literal["completed", "failed", "cancelled"]
        match event.type:
            case EventType.COMPLETED:
                status = "completed"
            case EventType.FAILED:
                status = "failed"
            case _:
                status = "cancelled"
        return Finished(
            event,
            head.request_id,
            head.context_id,
            head.attempt,
            status,
            "".join(current.parts),
            current.usage,
            llm_component=current.llm_component,
            model=current.model,
            finish_reason=_optional_str(data, "finish_reason"),
            failure=failure,
            cancel_reason=_optional_str(data, "reason"),
            gaps=tuple(current.gaps),
        )

    def _finish(self, request_id: str) -> None:
        del self._active[request_id]
        self._finished[request_id] = None
        if len(self._finished) > self._remember:
            self._finished.popitem(last=False)


def _head(event: Event) -> _Head:
    """Read and check the common fields, and the own fields this type needs."""
    data = event.data
    try:
        request_id, context_id = data["request_id"], data["context_id"]
        attempt, seq = data["attempt"], data["seq"]
    except (KeyError, TypeError) as exc:
        raise MalformedEvent(f"event {event.id!r} ({event.type}) lacks {exc}") from exc
    if not (isinstance(request_id, str) and request_id and isinstance(context_id, str)):
        raise MalformedEvent(f"event {event.id!r}: request_id and context_id must be strings")
    if not (_positive(attempt) and _positive(seq)):
        raise MalformedEvent(f"event {event.id!r}: attempt and seq must be integers >= 1")
    needed = _NEEDS.get(event.type, ())
    missing = [name for name in needed if name not in data]
    if missing:
        raise MalformedEvent(f"event {event.id!r} ({event.type}) lacks {', '.join(missing)}")
    return _Head(request_id, context_id, attempt, seq)


def _own_required(model: type[ResponseEvent]) -> tuple[str, ...]:
    """The fields the contract requires of this type beyond the common ones."""
    common = ResponseEvent.model_fields
    return tuple(
        name
        for name, field in model.model_fields.items()
        if field.is_required() and name not in common
    )


# Per event type, what its data must carry besides the common fields: the models say.
_NEEDS: dict[str, tuple[str, ...]] = {model.type: _own_required(model) for model in EVENT_MODELS}


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None
