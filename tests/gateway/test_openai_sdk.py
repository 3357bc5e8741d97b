"""The official `openai` SDK against the gateway, on the real worker, daprd and Redis."""

from __future__ import annotations

import itertools
import json

import aiohttp
import openai
import pytest

from tests.fakes.openai_server import FakeOpenAIServer
from tests.gateway.conftest import MakeGateway, MakeStack

pytestmark = pytest.mark.dapr

FAST_ECHO = {"WORKER_ECHO__DELAY_SECONDS": "0.005"}


def _client(url: str) -> openai.AsyncOpenAI:
    # No retries: a retried POST would be a second prompt, and hide the status under test.
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


async def test_streams_text_and_usage_then_done(
    make_stack: MakeStack, make_gateway: MakeGateway
) -> None:
    await make_stack(worker_env=FAST_ECHO)
    gateway = await make_gateway()
    text = "The quick brown fox jumps over the lazy dog"
    async with _client(gateway.url) as client:
        stream = await client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": text}],
            stream=True,
            stream_options={"include_usage": True},
        )
        request_id = stream.response.headers["x-request-id"]
        chunks = [chunk async for chunk in stream]

    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert {c.id for c in chunks} == {request_id}
    content = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(content) == text
    assert chunks[0].choices[0].delta.role == "assistant"
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["stop"]
    # The usage chunk comes last, with no choices, as OpenAI sends it.
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0


async def test_no_usage_chunk_unless_asked(
    make_stack: MakeStack, make_gateway: MakeGateway
) -> None:
    await make_stack(worker_env=FAST_ECHO)
    gateway = await make_gateway()
    async with _client(gateway.url) as client:
        stream = await client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "two words"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert all(c.usage is None and c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "two words"


async def test_whole_completion_and_context_continuity(
    make_stack: MakeStack, make_gateway: MakeGateway
) -> None:
    async with FakeOpenAIServer(["Nice", " to", " meet", " you"]) as llm:
        await make_stack(
            worker_env={
                "WORKER_OPENAI": json.dumps(
                    [{"name": "openai", "base_url": llm.base_url, "model": "fake-model"}]
                )
            }
        )
        gateway = await make_gateway()
        async with _client(gateway.url) as client:
            raw = await client.chat.completions.with_raw_response.create(
                model="openai",
                messages=[{"role": "user", "content": "I am Ada"}],
                temperature=0.4,
            )
            reply = raw.parse()
            # The next turn names the conversation; the worker prepends the first turn.
            stream = await client.chat.completions.create(
                model="openai",
                messages=[{"role": "user", "content": "Who am I?"}],
                stream=True,
                extra_headers={"X-Context-Id": raw.headers["x-context-id"]},
            )
            chunks = [chunk async for chunk in stream]

    assert raw.headers["x-context-id"].startswith("ctx-")
    assert reply.object == "chat.completion"
    assert reply.id == raw.headers["x-request-id"]
    assert reply.choices[0].message.content == "Nice to meet you"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Nice to meet you"
    )
    assert llm.requests[0]["json"]["temperature"] == 0.4
    assert llm.requests[1]["json"]["messages"] == [
        {"role": "user", "content": "I am Ada"},
        {"role": "assistant", "content": "Nice to meet you"},
        {"role": "user", "content": "Who am I?"},
    ]


async def test_errors_are_api_errors_with_their_status(
    make_stack: MakeStack, make_gateway: MakeGateway
) -> None:
    await make_stack(worker_env=FAST_ECHO)
    gateway = await make_gateway()
    async with _client(gateway.url) as client:
        # Rejected by the gateway before anything is published.
        with pytest.raises(openai.BadRequestError) as invalid:
            await client.chat.completions.create(model="default", messages=[], stream=True)
        assert invalid.value.status_code == 400
        assert invalid.value.param == "messages"
        # A role the contract does not know: sent as a raw body, the SDK's types forbid it.
        with pytest.raises(openai.BadRequestError) as role:
            await client.post(
                "/chat/completions",
                body={"model": "default", "messages": [{"role": "wizard", "content": "hi"}]},
                cast_to=object,
            )
        assert "role" in role.value.message
        # Rejected by the worker (contract: `failed` with `unknown_component`).
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.chat.completions.create(
                model="no-such-llm", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        assert unknown.value.code == "unknown_component"
        # A stream id nobody started.
        with pytest.raises(openai.NotFoundError) as missing:
            await client.get("/streams/gw-nobody", cast_to=object)
        assert missing.value.code == "stream_not_found"


async def test_keep_alive_comments_fill_quiet_stretches_and_the_sdk_reads_through_them(
    make_stack: MakeStack, make_gateway: MakeGateway
) -> None:
    # A word a second: quiet stretches five times the heartbeat interval.
    await make_stack(worker_env={"WORKER_ECHO__DELAY_SECONDS": "1"})
    gateway = await make_gateway(GATEWAY_HEARTBEAT_SECONDS=0.2)
    text = "one two three"
    async with _client(gateway.url) as client, aiohttp.ClientSession() as http:
        stream = await client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": text}], stream=True
        )
        request_id = stream.response.headers["x-request-id"]
        # The same reply, raw, from a second connection: what goes over the wire.
        async with http.get(f"{gateway.url}/v1/streams/{request_id}") as raw:
            lines = []
            async for line in raw.content:
                lines.append(line.decode().rstrip("\n"))
                if lines[-1] == "data: [DONE]":
                    break
        chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert ": keep-alive" in lines
    # Never a blank line right after a comment: that would be an empty event.
    assert all(
        not (line == ": keep-alive" and following == "")
        for line, following in itertools.pairwise(lines)
    )
