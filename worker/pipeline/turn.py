"""One turn: stream the LLM's reply into ordered events, from `started` to the terminal one.

The backend is read in one task and chunks are published from another, so reading never
waits on a publish (text arriving meanwhile is coalesced). Whatever happens to the LLM,
the turn ends with `usage` then exactly one terminal event; only a sidecar that keeps
refusing our publishes ends it without one (`SidecarError`, so the prompt is retried).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from worker.contract.events import Cancelled, Completed, Failed, Started, UsageReport
from worker.errors import SidecarError, WorkerError
from worker.llm.base import Finish, LLMBackend, LLMRequest, TextDelta, Usage
from worker.observability.tracing import trace_ending, traced_stream  # [otel]
from worker.pipeline.publisher import ChunkWriter, EventStream
from worker.pipeline.usage import estimate_usage

__all__ = ["TextFilter", "TurnResult", "run_turn"]

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


async def run_turn(
    stream: EventStream,
    backend: LLMBackend,
    request: LLMRequest,
    *,
    metadata: Mapping[str, str],
    restarted: bool = False,
    text_filter: TextFilter | None = None,
    cancel: asyncio.Event | None = None,
    cancel_reason: str = "cancelled by request",
    on_ending: Callable[[Sequence[bytes], str], Awaitable[None]] | None = None,
) -> TurnResult:
    await stream.emit(
        Started,
        llm_component=backend.name,
        model=backend.model,
        metadata=dict(metadata),
        restarted=restarted,
    )
    writer = ChunkWriter(stream)
    reader = _Reader(backend, request, writer, text_filter)
    if cancel is not None and cancel.is_set():
        cancelled = True  # cancelled while queued: the LLM is never called
    else:
        cancelled = await _stream_reply(reader, writer, cancel)

    reply = "".join(writer.published_text)
    provider_usage = reader.usage
    usage = provider_usage or estimate_usage(request.messages, reply)
    _, usage_body = stream.build(
        UsageReport,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        source="provider" if provider_usage is not None else "estimated",
    )
    if cancelled:
        terminal, terminal_body = stream.build(Cancelled, reason=cancel_reason)
        result = TurnResult("cancelled", reply, usage)
    elif reader.failure is not None:
        failure = reader.failure
        terminal, terminal_body = stream.build(
            Failed, code=failure.code, message=failure.message, retryable=failure.retryable
        )
        result = TurnResult("failed", reply, usage)
    else:
        terminal, terminal_body = stream.build(
            Completed,
            finish_reason=reader.finish_reason,
            chunks=writer.chunks,
            text_length=writer.text_length,
        )
        result = TurnResult("completed", reply, usage)
    trace_ending(  # [otel]
        status=result.status, usage=usage, finish_reason=reader.finish_reason, error=reader.failure
    )
    ending = [usage_body, terminal_body]
    if on_ending is not None:
        # Recorded before they go out: a crash from here on replays them, never regenerates.
        await on_ending(ending, result.status)
    for kind, body in zip(("usage", terminal.type.name.lower()), ending, strict=True):
        await stream.send(kind, body)
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
    return result


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
    except* SidecarError as group_error:
        raise group_error.exceptions[0] from None
    return cancelled
