"""A reply's outputs as Server-Sent Events in OpenAI's chunk format, each with its id.

Every event's id is `<request_id>:<attempt>:<seq>` of the response event behind it, so
`Last-Event-ID` (which browsers send on their own when they reconnect) says exactly
where a caller is. Events at or before the caller's position are not sent again.

A restart of the worker (a new attempt, contract section 3.5) is sent as
`event: restart` with id `<request_id>:<attempt>:0` and a chunk whose `restart` is
true: the caller drops the text it has and takes the new attempt's from the start.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from llm_stream_gateway.errors import InvalidRequest
from llm_stream_gateway.openai_wire import chunk, failure_error
from llm_stream_gateway.replay import StreamInfo
from worker.client.consumer import Finished, Output, Started, Text, UsageReported
from worker.client.types import CompletionUsage

__all__ = ["Cursor", "SseEvent", "SseWriter", "parse_cursor"]

DONE = "[DONE]"


@dataclass(frozen=True, order=True, slots=True)
class Cursor:
    """Where a caller is: the last (attempt, seq) it received; (0, 0) is nothing yet."""

    attempt: int = 0
    seq: int = 0


def parse_cursor(request_id: str, value: str | None) -> Cursor:
    """From `Last-Event-ID` or `starting_after`: a full event id, `<attempt>:<seq>`, or a
    bare `<seq>` (of attempt 1, the numbering OpenAI's `starting_after` has)."""
    if value is None or value == "":
        return Cursor()
    prefix = f"{request_id}:"
    rest = value.removeprefix(prefix) if value.startswith(prefix) else value
    match = re.fullmatch(r"(?:(\d{1,9}):)?(\d{1,9})", rest)
    if match is None:
        raise InvalidRequest(
            f"{value!r} is not an event id of stream {request_id} "
            "(`<request_id>:<attempt>:<seq>`, `<attempt>:<seq>` or `<seq>`)",
            param="Last-Event-ID",
        )
    return Cursor(int(match.group(1) or 1), int(match.group(2)))


@dataclass(frozen=True, slots=True)
class SseEvent:
    id: str
    data: str
    event: str | None = None

    def encode(self) -> bytes:
        head = f"event: {self.event}\n" if self.event else ""
        return f"{head}id: {self.id}\ndata: {self.data}\n\n".encode()


class SseWriter:
    """Turns outputs into SSE events for one caller, who is at `cursor`."""

    def __init__(self, info: StreamInfo, cursor: Cursor, *, include_usage: bool) -> None:
        self._info = info
        self._cursor = cursor
        self._shown_attempt = cursor.attempt
        self._include_usage = include_usage
        self._usage: CompletionUsage | None = None
        self.ended = False

    def _id(self, attempt: int, seq: int) -> str:
        return f"{self._info.request_id}:{attempt}:{seq}"

    def _json(self, attempt: int, seq: int, body: Any, event: str | None = None) -> SseEvent | None:
        if Cursor(attempt, seq) <= self._cursor:
            return None  # the caller has it already
        return SseEvent(self._id(attempt, seq), json.dumps(body, separators=(",", ":")), event)

    def events(self, output: Output) -> Iterator[SseEvent]:
        match output:
            case Started(attempt=attempt, event=event, context_id=context_id):
                seq = int(event.data["seq"])
                if self._shown_attempt and attempt > self._shown_attempt:
                    restart = self._json(
                        attempt,
                        0,
                        chunk(
                            self._info,
                            delta={"role": "assistant", "content": ""},
                            extra={"restart": True, "attempt": attempt},
                        ),
                        event="restart",
                    )
                    if restart is not None:
                        yield restart
                self._shown_attempt = max(self._shown_attempt, attempt)
                first = self._json(
                    attempt,
                    seq,
                    chunk(
                        self._info,
                        delta={"role": "assistant", "content": ""},
                        extra={"context_id": context_id, "attempt": attempt},
                    ),
                )
                if first is not None:
                    yield first
            case Text(attempt=attempt, event=event, text=text):
                sse = self._json(
                    attempt, int(event.data["seq"]), chunk(self._info, delta={"content": text})
                )
                if sse is not None:
                    yield sse
            case UsageReported(usage=usage):
                # OpenAI sends usage after the finishing chunk: held until the ending.
                self._usage = usage
            case Finished(attempt=attempt, event=event):
                yield from self._ending(output, attempt, int(event.data["seq"]))
            case _:
                return

    def _ending(self, finished: Finished, attempt: int, seq: int) -> Iterator[SseEvent]:
        self.ended = True
        error = failure_error(finished)
        if error is not None:
            # OpenAI's SDKs raise an APIError for a data event that holds an `error`.
            sse = self._json(attempt, seq, error.body(), event=None)
            if sse is not None:
                yield sse
        else:
            # The finishing chunk takes the usage event's place (seq - 1), the usage chunk
            # the terminal's: each has an id of its own, and resuming between them works.
            finish = self._json(
                attempt, seq - 1, chunk(self._info, finish_reason=finished.finish_reason or "stop")
            )
            if finish is not None:
                yield finish
            if self._include_usage and self._usage is not None:
                usage = self._json(attempt, seq, chunk(self._info, usage=self._usage))
                if usage is not None:
                    yield usage
        yield SseEvent(self._id(attempt, seq), DONE)
