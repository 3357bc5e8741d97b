"""The events of one request, reassembled, as the client hands them out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from types import TracebackType
from typing import Self

from worker.client.consumer import (
    Event,
    Finished,
    Gap,
    Other,
    Output,
    Reassembler,
    Started,
    Superseded,
    Text,
    UsageReported,
)
from worker.client.dispatch import Broken, Inbox
from worker.client.errors import (
    ClientError,
    GenerationCancelled,
    GenerationFailed,
    GenerationTimeout,
    MalformedEvent,
)
from worker.client.types import (
    ChatCompletion,
    ChatCompletionMessage,
    Choice,
    CompletionUsage,
    ContextIdEvent,
    StreamEvent,
)

__all__ = ["AsyncReplyStream"]

log = logging.getLogger(__name__)

# How long later events wait for a missing `started` before the reply goes on without
# it: it carries no text (its context id is in every event), and Dapr 1.17 on Redis
# hands the first event after a streaming subscription closed on the same sidecar to
# the closed one, so it comes back only on redelivery, a minute later (dapr/dapr#10228).
STARTED_GRACE = 1.0


class AsyncReplyStream:
    """`async for event in stream`: the contract's dicts, in order (section 5).

    - `{"type": "context_id", "data": id}` when the reply starts;
    - `{"type": "content", "data": text}` per chunk;
    - `{"type": "final_usage", "data": {...}}` before the end;
    - a `failed` turn raises `GenerationFailed`, a cancelled one `GenerationCancelled`.

    If the worker restarts the reply (a new attempt, contract section 3.5), text
    already handed out cannot be taken back: another `context_id` event comes, with
    `"restarted": True`, and the content after it is the new attempt's from the
    start. Discard what you kept before it. `text` always holds the current attempt.

    Events are handed out in `seq` order: one that arrives early waits for the ones
    before it (which at-least-once delivery brings), up to `timeout`. Only a missing
    `started` is waited for just `STARTED_GRACE` seconds, as it carries no text.

    Iterate to the end, or close it (`async with` / `aclose()`), so that the client
    stops routing events to it.
    """

    def __init__(
        self,
        *,
        request_id: str,
        inbox: Inbox,
        release: Callable[[], None],
        timeout: float | None,
        abandon: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.request_id = request_id
        self.context_id: str | None = None
        self.attempt = 0
        self.usage: CompletionUsage | None = None
        self.finished: Finished | None = None
        self._inbox = inbox
        self._release = release
        self._abandon = abandon
        self._timeout = timeout
        self._assembler = Reassembler()
        self._parts: list[str] = []
        self._source: AsyncGenerator[Output, None] = self._outputs()
        self._dicts: AsyncGenerator[StreamEvent, None] | None = None

    @property
    def text(self) -> str:
        """The reply so far (of the current attempt)."""
        return "".join(self._parts)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._dicts is None:
            self._dicts = self._stream_events()
        return await anext(self._dicts)

    async def events(self) -> AsyncGenerator[Event, None]:
        """The request's own response events instead: ordered, de-duplicated, with the
        terminal one last. A `failed` event is yielded, not raised."""
        async for output in self._source:
            if isinstance(output, Started | Text | UsageReported | Other | Finished):
                yield output.event

    async def collect(self) -> ChatCompletion:
        """Wait for the whole reply."""
        async for output in self._source:
            if isinstance(output, Finished):
                return _completion(_raise_unless_completed(output))
        raise ClientError(f"request {self.request_id}: the stream ended without a terminal event")

    async def aclose(self) -> None:
        if self._dicts is not None:
            await self._dicts.aclose()
        await self._source.aclose()
        self._release()
        if self.finished is None and self._abandon is not None:
            # Closed before its end (Ctrl-C, a broken pipe): the worker need not go on.
            abandon, self._abandon = self._abandon, None
            await abandon()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _stream_events(self) -> AsyncGenerator[StreamEvent, None]:
        async for output in self._source:
            match output:
                case Started(context_id=context_id, restarted=restarted):
                    yield _context_id_event(context_id, restarted=restarted)
                case Gap(missing=missing, context_id=context_id, attempt=attempt) if 1 in missing:
                    # Going on without the `started`: its dict still comes first.
                    yield _context_id_event(context_id, restarted=attempt > 1)
                case Text(text=text):
                    yield {"type": "content", "data": text}
                case UsageReported(usage=usage):
                    yield {"type": "final_usage", "data": usage.as_dict()}
                case Finished():
                    _raise_unless_completed(output)

    async def _outputs(self) -> AsyncGenerator[Output, None]:
        """What the reassembler releases for this request, up to and with `Finished`."""
        try:
            while self.finished is None:
                event = await self._next_event()
                if event is None:
                    log.warning("request %s: going on without its `started`", self.request_id)
                    outputs = self._assembler.skip_gaps(self.request_id)
                else:
                    try:
                        outputs = self._assembler.feed(event)
                    except MalformedEvent as exc:
                        log.warning("ignoring an event of request %s: %s", self.request_id, exc)
                        continue
                for output in outputs:
                    self._track(output)
                    yield output
        finally:
            self._release()

    async def _next_event(self) -> Event | None:
        """The next delivery; None once the `started` alone is missing for too long."""
        only_started = self._assembler.missing(self.request_id) == (1,)
        wait = self._timeout
        if only_started:
            wait = STARTED_GRACE if wait is None else min(wait, STARTED_GRACE)
        try:
            async with asyncio.timeout(wait):
                item = await self._inbox.get()
        except TimeoutError as exc:
            if only_started:
                return None
            raise self._timed_out() from exc
        if isinstance(item, Broken):
            # A fresh exception per request: one instance raised in many tasks would
            # collect all their tracebacks.
            raise type(item.error)(item.error.message) from item.error
        return item

    def _timed_out(self) -> GenerationTimeout:
        missing = self._assembler.missing(self.request_id)
        started = self.context_id is not None
        if missing:
            held = self._assembler.held(self.request_id)
            detail = (
                f"events {', '.join(map(str, missing))} of request {self.request_id} did not "
                f"arrive within {self._timeout:g} s, {held} later ones did (lost in delivery?)"
            )
        else:
            hint = "" if started else " (no `started` either: is the worker running?)"
            detail = f"no event of request {self.request_id} within {self._timeout:g} s{hint}"
        return GenerationTimeout(detail, request_id=self.request_id, started=started)

    def _track(self, output: Output) -> None:
        match output:
            case Started(context_id=context_id, attempt=attempt):
                self.context_id, self.attempt = context_id, attempt
            case Gap(missing=missing, context_id=context_id, attempt=attempt) if 1 in missing:
                self.context_id, self.attempt = context_id, attempt
            case Superseded():
                self._parts.clear()
                self.usage = None
            case Text(text=text):
                self._parts.append(text)
            case UsageReported(usage=usage):
                self.usage = usage
            case Finished(context_id=context_id, attempt=attempt):
                self.finished = output
                self.context_id, self.attempt = context_id, attempt
                # Now, not when the generator is closed: a caller that stops at an
                # exception may never close it.
                self._release()


def _context_id_event(context_id: str, *, restarted: bool) -> ContextIdEvent:
    event: ContextIdEvent = {"type": "context_id", "data": context_id}
    if restarted:
        event["restarted"] = True
    return event


def _raise_unless_completed(finished: Finished) -> Finished:
    if finished.failure is not None:
        raise GenerationFailed(
            finished.failure.message,
            code=finished.failure.code,
            retryable=finished.failure.retryable,
            request_id=finished.request_id,
            context_id=finished.context_id,
        )
    if finished.status == "cancelled":
        raise GenerationCancelled(
            finished.cancel_reason or "cancelled",
            request_id=finished.request_id,
            context_id=finished.context_id,
        )
    return finished


def _completion(finished: Finished) -> ChatCompletion:
    return ChatCompletion(
        id=finished.request_id,
        context_id=finished.context_id,
        choices=[
            Choice(
                message=ChatCompletionMessage(content=finished.text),
                finish_reason=finished.finish_reason or "stop",
            )
        ],
        usage=finished.usage,
        model=finished.model,
        llm_component=finished.llm_component,
        attempt=finished.attempt,
    )
