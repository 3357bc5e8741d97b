"""The OpenAI-compatible backend against real HTTP servers on loopback.

`FakeOpenAIServer` plays a well-behaved (or on request, misbehaving) provider; for SSE
framing edge cases the tests serve raw bytes from tiny aiohttp handlers of their own.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from testbed.net import free_port
from tests.fakes.openai_server import FakeOpenAIServer
from worker.errors import LLMError, LLMTimeout, LLMUnavailable, WorkerError
from worker.llm.base import (
    ChatMessage,
    Finish,
    LLMBackend,
    LLMRequest,
    StreamItem,
    TextDelta,
    Usage,
)
from worker.llm.openai import OpenAIBackend, _EventParser

KEY = "sk-test-0123456789abcdef"
TOKENS = ["Hel", "lo", ",", " world", "!"]
REQUEST = LLMRequest(
    messages=[ChatMessage("system", "Be brief."), ChatMessage("user", "Say hello to the world")]
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _backend(base_url: str, **options: Any) -> OpenAIBackend:
    return OpenAIBackend("my-llm", base_url, "gpt-test", api_key=SecretStr(KEY), **options)


async def _collect(backend: LLMBackend, request: LLMRequest = REQUEST) -> list[StreamItem]:
    return [item async for item in backend.stream(request)]


async def _drain(backend: LLMBackend, into: list[StreamItem]) -> None:
    """Like `_collect`, but what arrived before an error stays in `into`."""
    async for item in backend.stream(REQUEST):
        into.append(item)


def _text(items: list[StreamItem]) -> str:
    return "".join(item.text for item in items if isinstance(item, TextDelta))


async def _wait_for(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(1.0):
        # Polling: the conditions are plain counters of a server that signals nothing.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@asynccontextmanager
async def _raw_server(handler: Handler, path: str = "/v1/chat/completions") -> AsyncIterator[str]:
    """Serve `handler` at `path` on loopback; yields the base URL (without the path's tail)."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}{path.removesuffix('/chat/completions')}"
    finally:
        await runner.cleanup()


def _sse(*writes: bytes, pause: float = 0.01, status: int = 200) -> Handler:
    """A handler that sends `writes` as separate writes, `pause` apart, then ends the body."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=status, headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for data in writes:
            await response.write(data)
            await asyncio.sleep(pause)
        await response.write_eof()
        return response

    return handler


def _chunk(content: str | None = None, finish: str | None = None) -> str:
    delta = "{}" if content is None else f'{{"content":"{content}"}}'
    reason = "null" if finish is None else f'"{finish}"'
    return f'{{"choices":[{{"index":0,"delta":{delta},"finish_reason":{reason}}}]}}'


# -- the happy path ------------------------------------------------------------------


async def test_streams_deltas_then_usage_then_finish() -> None:
    async with FakeOpenAIServer(TOKENS) as server, _backend(server.base_url) as backend:
        items = await _collect(backend)

    assert [item.text for item in items[:-2] if isinstance(item, TextDelta)] == TOKENS
    assert _text(items) == "Hello, world!"
    # prompt_tokens: the fake counts words in all messages (2 + 5).
    assert items[-2:] == [Usage(7, 5, 12), Finish("stop")]
    assert server.disconnected == 0


async def test_no_usage_when_the_server_reports_none() -> None:
    async with (
        FakeOpenAIServer(TOKENS, include_usage=False) as server,
        _backend(server.base_url) as backend,
    ):
        items = await _collect(backend)

    assert _text(items) == "Hello, world!"
    assert not any(isinstance(item, Usage) for item in items)
    assert items[-1] == Finish("stop")


async def test_posts_the_openai_request_body() -> None:
    async with FakeOpenAIServer(TOKENS) as server, _backend(server.base_url) as backend:
        await _collect(backend)
        await _collect(backend, LLMRequest(REQUEST.messages, temperature=0.0, max_tokens=64))

    bare, tuned = (request["json"] for request in server.requests)
    assert bare == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello to the world"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert tuned == {**bare, "temperature": 0.0, "max_tokens": 64}


async def test_token_source_can_depend_on_the_request() -> None:
    def echo_words(body: dict[str, Any]) -> list[str]:
        return [f"{word} " for word in body["messages"][-1]["content"].split()]

    async with FakeOpenAIServer(echo_words) as server, _backend(server.base_url) as backend:
        items = await _collect(backend)

    assert _text(items) == "Say hello to the world "


async def test_a_finished_stream_gives_its_connection_back() -> None:
    async with FakeOpenAIServer(TOKENS) as server, _backend(server.base_url) as backend:
        for _ in range(3):
            await _collect(backend)

    assert len({request["peer"] for request in server.requests}) == 1


async def test_concurrent_streams_share_the_backend() -> None:
    async with (
        FakeOpenAIServer(TOKENS, token_interval=0.01) as server,
        _backend(server.base_url) as backend,
    ):
        results = await asyncio.gather(*(_collect(backend) for _ in range(150)))

    assert {_text(items) for items in results} == {"Hello, world!"}
    # More than aiohttp's default pool of 100 were open at once.
    assert len({request["peer"] for request in server.requests}) == 150
    assert server.disconnected == 0


async def test_base_url_may_be_a_dapr_invocation_path() -> None:
    path = "/v1.0/invoke/my-llm/method/v1/chat/completions"
    handler = _sse(f"data: {_chunk('hi', 'stop')}\n\ndata: [DONE]\n\n".encode())
    async with _raw_server(handler, path) as base_url, _backend(base_url + "/") as backend:
        assert _text(await _collect(backend)) == "hi"


# -- the key ---------------------------------------------------------------------------


async def test_sends_the_key_as_bearer_and_extra_headers() -> None:
    async with (
        FakeOpenAIServer(TOKENS) as server,
        _backend(server.base_url, extra_headers={"dapr-api-token": "t0k"}) as backend,
    ):
        await _collect(backend)

    headers = server.requests[0]["headers"]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["dapr-api-token"] == "t0k"
    assert headers["Accept"] == "text/event-stream"
    assert KEY not in repr(backend)
    assert "t0k" not in repr(backend)


async def test_no_authorization_header_without_a_key() -> None:
    async with (
        FakeOpenAIServer(TOKENS) as server,
        OpenAIBackend("local", server.base_url, "llama") as backend,
    ):
        await _collect(backend)

    assert "Authorization" not in server.requests[0]["headers"]


async def test_a_key_echoed_by_the_provider_is_redacted() -> None:
    async def unauthorized(request: web.Request) -> web.StreamResponse:
        auth = request.headers["Authorization"]
        message = f"Incorrect API key provided: {auth.removeprefix('Bearer ')}"
        return web.json_response({"error": {"message": message}}, status=401)

    async with _raw_server(unauthorized) as base_url, _backend(base_url) as backend:
        with pytest.raises(LLMError) as caught:
            await _collect(backend)

    assert "Incorrect API key provided: ***" in caught.value.message
    assert KEY not in str(caught.value)


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, LLMUnavailable), (500, LLMUnavailable), (503, LLMUnavailable), (400, LLMError)],
)
async def test_http_errors_are_mapped(status: int, error: type[WorkerError]) -> None:
    async with (
        FakeOpenAIServer(TOKENS, fail_status=status) as server,
        _backend(server.base_url) as backend,
    ):
        with pytest.raises(error) as caught:
            await _collect(backend)

    assert type(caught.value) is error
    assert f"HTTP {status}" in caught.value.message
    assert f"fake failure with status {status}" in caught.value.message
    assert KEY not in str(caught.value)


async def test_error_in_stream_is_an_llm_error_after_the_deltas() -> None:
    items: list[StreamItem] = []
    async with (
        FakeOpenAIServer(TOKENS, error_in_stream=True) as server,
        _backend(server.base_url) as backend,
    ):
        with pytest.raises(LLMError, match="fake error in stream") as caught:
            await _drain(backend, items)

    assert _text(items) == "Hello, world!"
    assert KEY not in str(caught.value)


async def test_a_stall_is_a_timeout_and_closes_the_connection() -> None:
    items: list[StreamItem] = []
    async with (
        FakeOpenAIServer(TOKENS, stall_after=2) as server,
        _backend(server.base_url, read_timeout=0.2) as backend,
    ):
        with pytest.raises(LLMTimeout, match=r"no data .* for 0\.2s") as caught:
            await _drain(backend, items)
        await _wait_for(lambda: server.disconnected == 1)

    assert _text(items) == "Hello"
    assert KEY not in str(caught.value)


async def test_no_answer_at_all_is_a_timeout() -> None:
    async def silent(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)  # not even the headers
        return web.StreamResponse()

    async with _raw_server(silent) as base_url, _backend(base_url, read_timeout=0.2) as backend:
        with pytest.raises(LLMTimeout, match=r"no data .* for 0\.2s"):
            await _collect(backend)


async def test_a_steady_stream_longer_than_the_read_timeout_is_fine() -> None:
    # The timeout is the idle time between reads, never a cap on the whole reply.
    async with (
        FakeOpenAIServer(TOKENS * 5, token_interval=0.05) as server,
        _backend(server.base_url, read_timeout=0.2) as backend,
    ):
        assert _text(await _collect(backend)) == "Hello, world!" * 5


async def test_a_slow_first_token_within_the_read_timeout_is_fine() -> None:
    async with (
        FakeOpenAIServer(TOKENS, first_token_delay=0.1, token_interval=0.02) as server,
        _backend(server.base_url, read_timeout=0.5) as backend,
    ):
        assert _text(await _collect(backend)) == "Hello, world!"


async def test_a_dropped_connection_is_unavailable_after_the_deltas() -> None:
    items: list[StreamItem] = []
    async with (
        FakeOpenAIServer(TOKENS, drop_after=3) as server,
        _backend(server.base_url) as backend,
    ):
        with pytest.raises(LLMUnavailable) as caught:
            await _drain(backend, items)

    assert _text(items) == "Hello,"
    assert KEY not in str(caught.value)


async def test_nothing_listening_is_unavailable() -> None:
    async with _backend(f"http://127.0.0.1:{free_port()}/v1") as backend:
        with pytest.raises(LLMUnavailable, match="failed") as caught:
            await _collect(backend)

    assert KEY not in str(caught.value)


async def test_unparseable_json_is_an_llm_error() -> None:
    handler = _sse(f"data: {_chunk('ok')}\n\n".encode(), b"data: {not json\n\n")
    async with _raw_server(handler) as base_url, _backend(base_url) as backend:
        with pytest.raises(LLMError, match=r"unreadable chunk: \{not json"):
            await _collect(backend)


async def test_json_nested_too_deep_to_read_is_an_llm_error() -> None:
    deep = b'{"choices": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    handler = _sse(f"data: {_chunk('ok')}\n\n".encode(), b"data: " + deep + b"\n\n")
    async with _raw_server(handler) as base_url, _backend(base_url) as backend:
        with pytest.raises(LLMError, match="unreadable chunk"):
            await _collect(backend)


async def test_a_lone_surrogate_escape_json_allows_is_streamed_as_sent() -> None:
    # JSON allows the escape, the fast reader does not: read again the lenient way.
    lone = b'{"choices": [{"index": 0, "delta": {"content": "a\\ud83db"}}]}'
    handler = _sse(b"data: " + lone + b"\n\n", f"data: {_chunk(finish='stop')}\n\n".encode())
    async with _raw_server(handler) as base_url, _backend(base_url) as backend:
        items = await _collect(backend)
    assert _text(items) == "a\ud83db"


async def test_an_endless_event_is_an_llm_error() -> None:
    handler = _sse(b"data: " + b"x" * (1 << 19), b"y" * (1 << 19), b"z" * 1024)
    async with _raw_server(handler) as base_url, _backend(base_url) as backend:
        with pytest.raises(LLMError, match="exceeds"):
            await _collect(backend)


async def test_an_end_without_done_or_finish_reason_is_an_llm_error() -> None:
    handler = _sse(f"data: {_chunk('cut')}\n\n".encode())
    async with _raw_server(handler) as base_url, _backend(base_url) as backend:
        with pytest.raises(LLMError, match=r"ended before \[DONE\]"):
            await _collect(backend)


async def test_a_finish_reason_without_done_is_complete() -> None:
    handler = _sse(f"data: {_chunk('all', 'length')}\n\n".encode())
    async with _raw_server(handler) as base_url, _backend(base_url) as backend:
        items = await _collect(backend)

    assert items == [TextDelta("all"), Finish("length")]


async def test_a_json_reply_instead_of_a_stream_is_an_llm_error() -> None:
    async def json_reply(request: web.Request) -> web.StreamResponse:
        return web.json_response({"choices": [{"message": {"content": "whole"}}]})

    async with _raw_server(json_reply) as base_url, _backend(base_url) as backend:
        with pytest.raises(LLMError, match=r"HTTP 200 .* is JSON, not an event stream"):
            await _collect(backend)


# -- SSE framing -----------------------------------------------------------------------


async def test_sse_framing_edge_cases() -> None:
    handler = _sse(
        b": keep-alive\r\n\r\n",
        b"event: message\r\nid: 1\r\nretry: 1000\r\n",
        f"data: {_chunk('one')}\r\n\r\n".encode(),
        # One event split mid-JSON, mid-field name and between the CR and LF of a CRLF.
        f"data: {_chunk(' two')}"[:17].encode(),
        f"data: {_chunk(' two')}"[17:].encode() + b"\r",
        b"\n\r\nda",
        f"ta:{_chunk(' three')}\n\n".encode(),
        # A JSON object spread over several data lines of one event, a CRLF inside it split
        # between its CR and LF (taken for two line ends, it would end the event early).
        b'data: {"choices":[{"index":0,\r',
        b'\ndata: "delta":{"content":" four"},\n',
        b'data: "finish_reason":"stop"}]}\n\n',
        b": the usage chunk\n",
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n',
        # [DONE] without its blank line, then the end of the body.
        b"data: [DONE]",
    )
    async with _raw_server(handler) as base_url, _backend(base_url) as backend:
        items = await _collect(backend)

    assert items == [
        TextDelta("one"),
        TextDelta(" two"),
        TextDelta(" three"),
        TextDelta(" four"),
        Usage(3, 4, 7),
        Finish("stop"),
    ]


async def test_lone_cr_line_ends() -> None:
    handler = _sse(f"data: {_chunk('cr', 'stop')}\r\rdata: [DONE]\r\r".encode())
    async with _raw_server(handler) as base_url, _backend(base_url) as backend:
        assert await _collect(backend) == [TextDelta("cr"), Finish("stop")]


async def test_empty_content_and_role_only_deltas_are_skipped() -> None:
    handler = _sse(
        b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"content":null}}]}\n\n',
        f"data: {_chunk('x', 'stop')}\n\ndata: [DONE]\n\n".encode(),
    )
    async with _raw_server(handler) as base_url, _backend(base_url) as backend:
        assert await _collect(backend) == [TextDelta("x"), Finish("stop")]


_DOCUMENT = (
    b": hello\r\n\r\n"
    b"data: one\r\n\r\n"
    b"event: x\ndata:two\ndata: lines\n\n"
    b"data: crlf\r\ndata: lines\r\n\r\n"
    b"data: three\r\rdata: four\n\n"
)


_PAYLOADS = [b"one", b"two\nlines", b"crlf\nlines", b"three", b"four"]


def _parse_in_pieces(cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(_DOCUMENT)]
    parser = _EventParser()
    return [p for a, b in itertools.pairwise(bounds) for p in parser.feed(_DOCUMENT[a:b])]


def test_event_parser_is_indifferent_to_where_one_read_ends() -> None:
    for cut in range(len(_DOCUMENT) + 1):
        assert _parse_in_pieces([cut]) == _PAYLOADS, f"cut at {cut}"
    assert _parse_in_pieces(list(range(len(_DOCUMENT)))) == _PAYLOADS  # a byte per read


@given(st.lists(st.integers(0, len(_DOCUMENT)), max_size=12))
def test_event_parser_is_indifferent_to_how_reads_split(cuts: list[int]) -> None:
    assert _parse_in_pieces(cuts) == _PAYLOADS


# -- closing ---------------------------------------------------------------------------


async def test_aclose_mid_stream_closes_the_connection() -> None:
    tokens = [f"t{i} " for i in range(200)]
    async with (
        FakeOpenAIServer(tokens, token_interval=0.01) as server,
        _backend(server.base_url) as backend,
    ):
        stream = backend.stream(REQUEST)
        assert await anext(stream) == TextDelta("t0 ")
        assert await anext(stream) == TextDelta("t1 ")
        await stream.aclose()
        await _wait_for(lambda: server.disconnected == 1)

        assert len(server.emitted) < len(tokens)


async def test_cancelling_the_consumer_closes_the_connection() -> None:
    async with (
        FakeOpenAIServer(["tick "] * 200, token_interval=0.01) as server,
        _backend(server.base_url) as backend,
    ):
        task = asyncio.create_task(_collect(backend))
        await _wait_for(lambda: len(server.emitted) >= 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _wait_for(lambda: server.disconnected == 1)


async def test_a_closed_backend_refuses_new_streams() -> None:
    async with FakeOpenAIServer(TOKENS) as server:
        backend = _backend(server.base_url)
        await _collect(backend)
        await backend.aclose()
        await backend.aclose()  # idempotent

        with pytest.raises(LLMUnavailable, match="closed"):
            await _collect(backend)


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="http"):
        OpenAIBackend("x", "127.0.0.1:8080/v1", "m")
    with pytest.raises(ValueError, match="not both"):
        _backend("http://127.0.0.1/v1", extra_headers={"authorization": "Bearer other"})
    with pytest.raises(ValueError, match="> 0"):
        _backend("http://127.0.0.1/v1", read_timeout=0)


def test_repr_hides_credentials_in_the_url() -> None:
    backend = OpenAIBackend("x", "https://user:pw@llm.example/v1?key=secret", "m")

    assert repr(backend) == (
        "OpenAIBackend(name='x', model='m', url='https://llm.example/v1/chat/completions')"
    )
