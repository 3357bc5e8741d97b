"""A real OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

It speaks the wire format of OpenAI's streaming API (SSE `chat.completion.chunk` events,
a usage chunk with empty `choices`, `data: [DONE]`) and can misbehave on request: fail
with a status, report an error mid-stream, stall, or drop the connection. What it saw
and sent is recorded, so tests can check the request and benchmarks can time tokens.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Literal, Self

from aiohttp import web

__all__ = ["FakeOpenAIServer", "Misbehaviour", "TokenSource"]

# The tokens to stream: fixed, or chosen from the request's JSON body.
TokenSource = Sequence[str] | Callable[[dict[str, Any]], Sequence[str]]
# For one request: fail at once with 503, drop the connection or stall half-way.
Misbehaviour = Literal["fail", "drop", "stall"]


class FakeOpenAIServer:
    """`async with FakeOpenAIServer(["Hel", "lo"]) as server:` then use `server.base_url`."""

    def __init__(
        self,
        tokens: TokenSource,
        *,
        first_token_delay: float = 0.0,
        token_interval: float = 0.0,
        include_usage: bool = True,
        fail_status: int | None = None,
        error_in_stream: bool = False,
        stall_after: int | None = None,
        drop_after: int | None = None,
        misbehave: Callable[[int], Misbehaviour | None] = lambda n: None,
    ) -> None:
        """`misbehave(n)` picks what the n-th request (from 1) suffers, if anything."""
        self._tokens = tokens
        self._first_token_delay = first_token_delay
        self._token_interval = token_interval
        self._include_usage = include_usage
        self._fail_status = fail_status
        self._error_in_stream = error_in_stream
        self._stall_after = stall_after
        self._drop_after = drop_after
        self._misbehave = misbehave
        self.misbehaved: dict[Misbehaviour, int] = {"fail": 0, "drop": 0, "stall": 0}
        self.base_url = ""
        # One {"json": body, "headers": {...}, "peer": (host, port)} per request received.
        self.requests: list[dict[str, Any]] = []
        # Each token and the time.monotonic() at which it was handed to the socket.
        self.emitted: list[tuple[str, float]] = []
        # Clients that went away before their stream ended.
        self.disconnected = 0
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        # handler_cancellation: a client going away cancels its handler, even mid-stall,
        # which is how `disconnected` is counted.
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await runner.setup()
        try:
            # A deep backlog: benchmarks open hundreds of connections at once, and a dropped
            # SYN would add a 1 s retransmit to someone's first-token latency.
            await web.TCPSite(runner, "127.0.0.1", 0, backlog=4096).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()  # ends stalls; cancellations from here on are not disconnects
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = await request.json()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append({"json": body, "headers": dict(request.headers), "peer": peer})
        tokens = list(self._tokens(body) if callable(self._tokens) else self._tokens)
        misbehaviour = self._misbehave(len(self.requests))
        if misbehaviour is not None:
            self.misbehaved[misbehaviour] += 1
        fail_status = 503 if misbehaviour == "fail" else self._fail_status
        stall_after = len(tokens) // 2 if misbehaviour == "stall" else self._stall_after
        drop_after = len(tokens) // 2 if misbehaviour == "drop" else self._drop_after
        if fail_status is not None:
            error = {
                "message": f"fake failure with status {fail_status}",
                "type": "fake_error",
                "param": None,
                "code": None,
            }
            return web.json_response({"error": error}, status=fail_status)
        if not body.get("stream"):
            return self._whole(body, tokens)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        frame = _Framer(f"chatcmpl-fake{len(self.requests)}", str(body.get("model", "")))
        try:
            await response.write(frame.chunk({"role": "assistant", "content": ""}))
            if self._first_token_delay:
                await asyncio.sleep(self._first_token_delay)
            for index, token in enumerate(tokens):
                if await self._interrupted(index, request, stall_after, drop_after):
                    return response
                if index and self._token_interval:
                    await asyncio.sleep(self._token_interval)
                now = time.monotonic()
                await response.write(frame.chunk({"content": token}))
                self.emitted.append((token, now))
            if await self._interrupted(len(tokens), request, stall_after, drop_after):
                return response
            if self._error_in_stream:
                error = {"message": "fake error in stream", "type": "server_error", "code": None}
                await response.write_eof(frame.data({"error": error}))
                return response
            tail = frame.chunk({}, finish_reason="stop")
            if self._include_usage and (body.get("stream_options") or {}).get("include_usage"):
                tail += frame.chunk(None, usage=_usage(body, tokens))
            # One write with the chunked-encoding terminator: a client closing right after
            # [DONE] cannot be mistaken for one that left early.
            await response.write_eof(tail + b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            if not self._stopping.is_set():
                self.disconnected += 1
            raise
        return response

    def _whole(self, body: dict[str, Any], tokens: Sequence[str]) -> web.Response:
        """The non-streaming answer (`stream` absent or false), as clients like Dapr's use."""
        usage = _usage(body, tokens)
        completion = {
            "id": f"chatcmpl-fake{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model", "")),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(tokens)},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
        return web.json_response(completion)

    async def _interrupted(
        self, index: int, request: web.Request, stall_after: int | None, drop_after: int | None
    ) -> bool:
        """Stall or drop the connection when `index` tokens have been sent, if asked to."""
        if index == stall_after:
            await self._stopping.wait()  # silent, connection open, until the server stops
            return True
        if index == drop_after:
            if request.transport is not None:
                request.transport.close()
            return True
        return False


def _usage(body: dict[str, Any], tokens: Sequence[str]) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
    return {
        "prompt_tokens": prompt,
        "completion_tokens": len(tokens),
        "total_tokens": prompt + len(tokens),
    }


class _Framer:
    """`data: {json}\\n\\n` frames for one completion."""

    def __init__(self, completion_id: str, model: str) -> None:
        self._head = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

    def chunk(
        self,
        delta: dict[str, Any] | None,
        *,
        finish_reason: str | None = None,
        usage: dict[str, int] | None = None,
    ) -> bytes:
        """A chunk event; `delta=None` makes the usage chunk, whose `choices` is empty."""
        if delta is None:
            return self.data({**self._head, "choices": [], "usage": usage})
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return self.data({**self._head, "choices": [choice]})

    @staticmethod
    def data(event: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
