"""The gateway's SSE bytes as the official `openai` SDK parses them: a local HTTP server
answers with exactly what `SseWriter` writes (no worker, no sidecar)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from llm_stream_gateway.sse import SseWriter
from tests.unit.test_gateway_sse import INFO, START, _attempt, _outputs
from worker.client.consumer import Event


@asynccontextmanager
async def _sdk(events: list[Event], *, include_usage: bool) -> AsyncIterator[openai.AsyncOpenAI]:
    writer = SseWriter(INFO, START, include_usage=include_usage)
    body = b"retry: 1000\n" + b"".join(
        sse.encode() for output in _outputs(events) for sse in writer.events(output)
    )

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    async with TestServer(app) as server:
        client = openai.AsyncOpenAI(
            base_url=str(server.make_url("/v1")), api_key="unused", max_retries=0
        )
        async with client:
            yield client


async def test_a_restart_reaches_sdk_callers_as_a_chunk_marked_restart() -> None:
    events = _attempt(1, ["lost"], ending=None) + _attempt(2, ["kept"])
    async with _sdk(events, include_usage=True) as client:
        stream = await client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "x"}], stream=True
        )
        text, restarts = "", 0
        async for chunk in stream:
            if (chunk.model_extra or {}).get("restart"):
                restarts += 1
                text = ""
            for choice in chunk.choices:
                text += choice.delta.content or ""
    assert restarts == 1
    assert text == "kept"


async def test_a_failure_mid_stream_raises_an_api_error_in_the_sdk() -> None:
    async with _sdk(_attempt(1, ["partial"], ending="failed"), include_usage=False) as client:
        stream = await client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "x"}], stream=True
        )
        with pytest.raises(openai.APIError) as error:
            async for _ in stream:
                pass
    assert error.value.code == "llm_error"
