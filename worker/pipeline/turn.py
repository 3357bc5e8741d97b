"""One turn: from the lease to the recorded ending, the LLM's reply as ordered events.

A `Turn` is built once per attempt from the validated prompt and the lease ticket, and
owns what the attempt is: its ids and attempt number, reply topic and trace context,
its lease (renewed while it runs, its fence checked before every publication), its
cancel watch, its event stream and its recorded ending.

The backend is read in one task and chunks are published from another, so reading never
waits on a publish (text arriving meanwhile is coalesced). Whatever happens to the LLM,
the turn ends with `usage` then exactly one terminal event; only a sidecar that keeps
refusing our publishes ends it without one (`SidecarError`, so the prompt is retried),
and a lease that slipped stops it without one (a successor answers, or it is retried).

The end, in order: the reply goes into the history, the last events are recorded in the
turn record, they are published, the request is marked done, the lease is released. So
a successor never starts without the history, and a crash after the recording replays
the recorded events instead of generating again (their history is written already).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from worker.contract.events import Cancelled, Completed, Failed, Started, UsageReport
from worker.contract.trace import TraceContext
from worker.errors import LeaseLost, SidecarError, WorkerError
from worker.llm.base import ChatMessage, Finish, LLMBackend, LLMRequest, TextDelta, Usage
from worker.observability.metrics import Metrics
from worker.observability.tracing import (  # [otel]
    outbound_trace,
    trace_ending,
    traced_stream,
)
from worker.pipeline.cancellation import Cancellations, CancelWatch
from worker.pipeline.guard import Ending, Ticket, TurnGuard
from worker.pipeline.history import ConversationHistory, with_history
from worker.pipeline.intake import Accepted
from worker.pipeline.ports import EventSink
from worker.pipeline.publisher import ChunkWriter, EventStream, PublishPolicy, TurnAddress
from worker.pipeline.scrub import PiiScrubber
from worker.pipeline.usage import estimate_usage

__all__ = ["TextFilter", "Turn", "TurnResult", "TurnServices"]

log = logging.getLogger(__name__)


class TextFilter(Protocol):
    """Rewrites streamed text (PII scrubbing), possibly holding back a tail until `flush`."""

    def feed(self, text: str) -> str: ...

    def flush(self) -> str: ...


@dataclass(frozen=True, slots=True)
class TurnResult:
    status: Literal["completed", "failed", "cancelled"]
    reply: str
    usage: Usage


class _Reader:
    def __init__(
        self,
        backend: LLMBackend,
        request: LLMRequest,
        writer: ChunkWriter,
        text_filter: TextFilter | None,
    ) -> None:
        self._backend = backend
        self._request = request
        self._writer = writer
        self._filter = text_filter
        self.usage: Usage | None = None
        self.finish_reason = "stop"
        self.failure: WorkerError | None = None
        # perf_counter() readings: the LLM request, its first chunk received, its end.
        self.began: float | None = None
        self.first_chunk_at: float | None = None
        self.ended: float | None = None

    async def run(self) -> None:
        self.began = time.perf_counter()
        try:
            # aclosing: an early exit (failure, cancel) closes the LLM call at once.
            # [otel] traced_stream: backend.stream(request) in a span of its own
            async with contextlib.aclosing(traced_stream(self._backend, self._request)) as items:
                async for item in items:
                    if isinstance(item, TextDelta):
                        if self.first_chunk_at is None:
                            self.first_chunk_at = time.perf_counter()
                        self._write(item.text)
                    elif isinstance(item, Usage):
                        self.usage = item
                    elif isinstance(item, Finish):
                        self.finish_reason = item.reason
        except SidecarError:
            raise
        except WorkerError as exc:
            self.failure = exc
        except Exception as exc:
            log.exception("LLM backend %s failed unexpectedly", self._backend.name)
            self.failure = WorkerError(f"internal error in backend {self._backend.name!r}: {exc}")
        finally:
            self.ended = time.perf_counter()
            if self._filter is not None:
                # Release the held-back tail (scrubbed) so the chunks hold the whole reply.
                self._writer.write(self._filter.flush())
            self._writer.close()

    def _write(self, text: str) -> None:
        self._writer.write(self._filter.feed(text) if self._filter is not None else text)


@dataclass(frozen=True, slots=True)
class TurnServices:
    """What every turn uses, built once by the handler."""

    sink: EventSink
    guard: TurnGuard
    history: ConversationHistory
    cancellations: Cancellations
    policy: PublishPolicy
    scrubber: PiiScrubber
    metrics: Metrics | None = None

    def stream(
        self,
        context_id: str,
        request_id: str,
        topic: str,
        attempt: int,
        trace: TraceContext,
        ticket: Ticket | None = None,
    ) -> EventStream:
        """A turn's event stream; fenced by `ticket`'s lease when there is one."""
        address = TurnAddress(
            context_id=context_id,
            request_id=request_id,
            attempt=attempt,
            pubsub=self.policy.pubsub,
            topic=topic,
            source=self.policy.source,
            traceparent=trace.traceparent,
            tracestate=trace.tracestate,
        )
        return EventStream(
            self.sink,
            address,
            attempts=self.policy.attempts,
            backoff=self.policy.backoff,
            fence=ticket.fence.check if ticket is not None else None,
            timeout=self.guard.settings.call_timeout,
            metrics=self.metrics,
        )


class Turn:
    """One attempt at answering one prompt, while its lease holds."""

    def __init__(
        self,
        services: TurnServices,
        intake: Accepted,
        ticket: Ticket,
        watch: CancelWatch,
        *,
        backend: LLMBackend,
        sent: Sequence[ChatMessage],
        text_filter: TextFilter | None,
        extensions: Mapping[str, object],
    ) -> None:
        self._services = services
        self.intake = intake
        self.ticket = ticket
        self.watch = watch
        self._backend = backend
        self._sent = sent  # what the LLM is sent and the history keeps (scrubbed if asked)
        self._filter = text_filter
        self._extensions = extensions  # the prompt's CloudEvent attributes, for its trace
        self.stream: EventStream  # made when the turn runs, inside its span
        self.ending = ""  # the terminal event's type, once recorded
        self.result: TurnResult | None = None

    async def run(self) -> bool:
        """Answer (or replay the recorded ending); False if the lease slipped away first."""
        guard = self._services.guard
        self.stream = self._services.stream(
            self.intake.context_id,
            self.intake.request_id,
            self.intake.reply_topic,
            self.ticket.attempt,
            outbound_trace(self._extensions),  # [otel] the turn span's, else the prompt's
            self.ticket,
        )
        try:
            async with asyncio.TaskGroup() as group:
                keep_alive = group.create_task(guard.keep_alive(self.ticket))
                remote_cancel = group.create_task(
                    self._services.cancellations.poll(self.watch, guard.heartbeat_seconds)
                )
                work = group.create_task(self._work())
                lost = group.create_task(self.ticket.fence.lost.wait())
                await asyncio.wait({work, lost}, return_when=asyncio.FIRST_COMPLETED)
                for task in (keep_alive, remote_cancel, lost):
                    task.cancel()
                if not work.done():
                    work.cancel()
        except BaseException as error:
            # Sidecar trouble or shutdown: free the context at once for the redelivery
            # (the request stays "running", so it is answered again as attempt + 1).
            await guard.abandon(self.ticket)
            leaf = _first(error)
            if isinstance(leaf, LeaseLost):
                log.warning("request %s: %s", self.intake.request_id, leaf.message)
                return False
            raise leaf from None
        if work.cancelled():
            return False  # the lease slipped: whoever took over answers
        await guard.finish(self.ticket, self.ending)
        return True

    async def _work(self) -> None:
        leftover = self.ticket.leftover
        if leftover is not None:
            # Before anything else: the ending a dead attempt recorded but did not see out.
            await self._publish_leftover(leftover)
            if leftover.request_id == self.intake.request_id:
                self.ending = leftover.terminal
                return  # it was this request's: answered now, no new attempt
        await self._answer()

    async def _publish_leftover(self, ending: Ending) -> None:
        stream = self._services.stream(
            self.intake.context_id,
            ending.request_id,
            ending.topic or self.intake.reply_topic,
            ending.attempt,
            TraceContext(),
            self.ticket,
        )
        log.warning(
            "context %s: attempt %d of request %s died while publishing its last events; "
            "publishing them again",
            self.intake.context_id,
            ending.attempt,
            ending.request_id,
        )
        for body in ending.events:
            event = json.loads(body)
            kind = str(event.get("type", "")).removeprefix("llm.stream.").removesuffix(".v1")
            await stream.send(stream.publication(kind, body, str(event["id"])))
        await self._services.guard.settle(self.ticket, ending)

    async def _answer(self) -> None:
        services, intake, prompt = self._services, self.intake, self.intake.prompt
        if not self.watch.event.is_set():
            await services.cancellations.check(self.watch)  # cancelled while queued elsewhere?
        sent = self._sent
        if prompt.history:
            # Loaded only now, holding the context: the previous turn is complete. Without
            # this request's own entry, written by an attempt that died after writing it.
            history = await services.history.load(intake.context_id, excluding=intake.request_id)
            if prompt.scrub_pii:
                # Stored unscrubbed by a turn that did not ask: scrubbed for one that does.
                scrub = services.scrubber.scrub
                history = [replace(m, content=scrub(m.content)) for m in history]
            sent = with_history(sent, history)
        request = LLMRequest(
            messages=sent,
            temperature=prompt.temperature,
            max_tokens=prompt.max_tokens,
            scrub_pii=prompt.scrub_pii,
            traceparent=self.stream.address.traceparent,
        )
        result = await self._stream(request)
        log.info(
            "request %s (context %s, attempt %d) %s: %d chars, %d tokens",
            intake.request_id,
            intake.context_id,
            self.ticket.attempt,
            result.status,
            len(result.reply),
            result.usage.total_tokens,
        )

    async def _stream(self, request: LLMRequest) -> TurnResult:
        stream, backend = self.stream, self._backend
        await stream.emit(
            Started,
            llm_component=backend.name,
            model=backend.model,
            metadata=dict(self.intake.prompt.metadata),
            restarted=self.ticket.restarted,
        )
        writer = ChunkWriter(stream)
        reader = _Reader(backend, request, writer, self._filter)
        cancel = self.watch.event
        if cancel.is_set():
            cancelled = True  # cancelled while queued: the LLM is never called
        else:
            cancelled = await _stream_reply(reader, writer, cancel)

        reply = "".join(writer.published_text)
        provider_usage = reader.usage
        usage = provider_usage or estimate_usage(request.messages, reply)
        _, usage_event = stream.build(
            UsageReport,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            source="provider" if provider_usage is not None else "estimated",
        )
        if cancelled:
            _, terminal = stream.build(
                Cancelled, reason=self.watch.reason or "cancelled by request"
            )
            result = TurnResult("cancelled", reply, usage)
        elif reader.failure is not None:
            failure = reader.failure
            _, terminal = stream.build(
                Failed, code=failure.code, message=failure.message, retryable=failure.retryable
            )
            result = TurnResult("failed", reply, usage)
        else:
            _, terminal = stream.build(
                Completed,
                finish_reason=reader.finish_reason,
                chunks=writer.chunks,
                text_length=writer.text_length,
            )
            result = TurnResult("completed", reply, usage)
        trace_ending(  # [otel]
            status=result.status,
            usage=usage,
            finish_reason=reader.finish_reason,
            error=reader.failure,
        )
        if result.status == "completed":
            self.ticket.fence.check()
            await self._services.history.append(
                self.intake.context_id, self.intake.request_id, self._sent, reply
            )
        # Recorded before they go out: a crash from here on replays them, never regenerates.
        await self._services.guard.ending(
            self.ticket, self.intake.reply_topic, [usage_event.data, terminal.data], result.status
        )
        self.ending = result.status
        await stream.send(usage_event)
        await stream.send(terminal)
        if stream.metrics is not None and reader.began is not None:  # the LLM was called
            stream.metrics.observe_operation(
                backend,
                duration=(reader.ended or time.perf_counter()) - reader.began,
                time_to_first_chunk=(
                    None if reader.first_chunk_at is None else reader.first_chunk_at - reader.began
                ),
                usage=usage,
                error_type=(
                    "cancelled" if cancelled else reader.failure.code if reader.failure else None
                ),
            )
        self.result = result
        return result


def _first(error: BaseException) -> BaseException:
    """The first leaf error of a task group's failure, for the one-outcome decision."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _stream_reply(reader: _Reader, writer: ChunkWriter, cancel: asyncio.Event | None) -> bool:
    """Read the LLM into chunk events until it ends; True if `cancel` cut it short."""
    cancelled = False
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(writer.run())
            read = group.create_task(reader.run())
            if cancel is not None:
                watch = group.create_task(cancel.wait())
                read.add_done_callback(lambda _: watch.cancel())
                await asyncio.wait({read, watch}, return_when=asyncio.FIRST_COMPLETED)
                if cancel.is_set() and not read.done():
                    cancelled = True
                    read.cancel()
    except* (SidecarError, LeaseLost) as group_error:
        raise group_error.exceptions[0] from None
    return cancelled
