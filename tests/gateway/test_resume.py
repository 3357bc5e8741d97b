"""Re-attaching to a reply on any gateway replica, and a worker restart as the caller sees it.

The real worker, daprd and Redis; each gateway replica with its own sidecar and its own
consumer group, as in the Deployment.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from testbed.components import inbound_retries
from tests.gateway.conftest import MakeGateway, MakeStack
from tests.gateway.sse import SseEvent, events, text_of

pytestmark = pytest.mark.dapr

# Bare milliseconds: components-contrib ignores "2s".
QUICK_RECLAIM = {"processingTimeout": "2000", "redeliverInterval": "500"}
LEASES = {"WORKER_LEASE_SECONDS": "3"}
SLOW_ECHO = {"WORKER_ECHO__DELAY_SECONDS": "0.05"}


def _words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def _chat(text: str, **fields: Any) -> dict[str, Any]:
    return {"model": "default", "messages": [{"role": "user", "content": text}], **fields}


def _position(event: SseEvent) -> tuple[int, int]:
    _, attempt, seq = event.id.rsplit(":", 2)
    return int(attempt), int(seq)


async def _read_all(response: aiohttp.ClientResponse) -> list[SseEvent]:
    received = []
    async for event in events(response):
        received.append(event)
        if event.done:
            break
    return received


async def test_a_cut_stream_resumes_on_another_replica_from_last_event_id(
    make_stack: MakeStack, make_gateway: MakeGateway
) -> None:
    await make_stack(worker_env=SLOW_ECHO)
    first, second = await make_gateway(), await make_gateway()
    text = _words(40)
    async with aiohttp.ClientSession() as http:
        before: list[SseEvent] = []
        async with http.post(
            f"{first.url}/v1/chat/completions", json=_chat(text, stream=True)
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            request_id = response.headers["X-Request-Id"]
            async for event in events(response):
                before.append(event)
                if len(before) == 6:
                    break  # the connection is dropped mid-reply
        async with http.get(
            f"{second.url}/v1/streams/{request_id}",
            headers={"Last-Event-ID": before[-1].id},
        ) as response:
            assert response.status == 200
            after = await _read_all(response)

    received = before + after
    assert text_of(received) == text
    ids = [e.id for e in received if not e.done]
    assert len(ids) == len(set(ids)), "an event was sent twice"
    assert all(i.startswith(f"{request_id}:1:") for i in ids)
    positions = [_position(e) for e in received if not e.done]
    assert positions == sorted(positions)
    # Contiguous: chunk events carry seq 1.. without a hole (the usage event's place is
    # taken by the finishing chunk).
    assert [seq for _, seq in positions] == list(range(1, len(positions) + 1))
    assert after[-1].done


async def test_a_finished_reply_replays_on_a_replica_started_after_it(
    make_stack: MakeStack, make_gateway: MakeGateway
) -> None:
    await make_stack(worker_env={"WORKER_ECHO__DELAY_SECONDS": "0.01"})
    first = await make_gateway()
    # Longer than one store read (64 events), and a poll so slow that the replay could
    # not wait for it: it must read on at once. (Under load the worker may put several
    # words in one chunk, so there are 200.)
    text = _words(200)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        async with http.post(
            f"{first.url}/v1/chat/completions",
            json=_chat(text, stream_options={"include_usage": True}),
        ) as response:
            assert response.status == 200
            whole = await response.json()
        request_id = whole["id"]
        assert whole["choices"][0]["message"]["content"] == text
        first.kill()
        late = await make_gateway(GATEWAY_POLL_INTERVAL_SECONDS=60)
        async with http.get(f"{late.url}/v1/streams/{request_id}") as response:
            replay = await _read_all(response)
        middle = len(replay) // 2
        _, seq = _position(replay[middle])
        async with http.get(
            f"{late.url}/v1/streams/{request_id}", params={"starting_after": str(seq)}
        ) as response:
            tail = await _read_all(response)

    assert len(replay) > 64 + 3, "too few events to need a second store read"
    assert text_of(replay) == text
    assert replay[-2].json["usage"]["total_tokens"] == whole["usage"]["total_tokens"]
    assert tail == replay[middle + 1 :]


async def test_a_worker_restart_mid_reply_is_a_restart_event(
    make_stack: MakeStack, make_gateway: MakeGateway
) -> None:
    stack = await make_stack(
        pubsub_metadata={"redis": QUICK_RECLAIM},
        extra_components=[inbound_retries()],
        worker_env={**SLOW_ECHO, **LEASES},
    )
    gateway = await make_gateway(GATEWAY_IDLE_TIMEOUT_SECONDS=60)
    text = _words(40)
    received: list[SseEvent] = []
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{gateway.url}/v1/chat/completions", json=_chat(text, stream=True)) as response,
    ):
        request_id = response.headers["X-Request-Id"]
        async for event in events(response):
            received.append(event)
            if len(received) == 4:
                stack.worker.kill()  # SIGKILL mid-reply: attempt 2 follows
                await stack.restart_worker()
            if event.done:
                break

    restarts = [e for e in received if e.event == "restart"]
    assert [e.id for e in restarts] == [f"{request_id}:2:0"]
    assert restarts[0].json["restart"] is True
    cut = received.index(restarts[0])
    assert all(e.id.startswith(f"{request_id}:1:") for e in received[:cut])
    assert all(e.id.startswith(f"{request_id}:2:") for e in received[cut + 1 : -1])
    assert text_of(received) == text


async def test_unknown_streams_bad_positions_and_cancel(
    make_stack: MakeStack, make_gateway: MakeGateway
) -> None:
    await make_stack(worker_env=SLOW_ECHO)
    gateway = await make_gateway()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.url}/v1/streams/gw-unknown") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "stream_not_found"
        async with http.post(
            f"{gateway.url}/v1/chat/completions", json=_chat(_words(200), background=True)
        ) as response:
            assert response.status == 202
            started = await response.json()
        request_id = started["id"]
        async with http.get(
            f"{gateway.url}{started['stream_url']}", headers={"Last-Event-ID": "other:1:1"}
        ) as response:
            assert response.status == 400
            assert (await response.json())["error"]["type"] == "invalid_request_error"
        async with http.get(f"{gateway.url}/v1/streams/{request_id}") as response:
            received: list[SseEvent] = []
            async for event in events(response):
                received.append(event)
                if len(received) == 3:
                    async with http.post(f"{gateway.url}/v1/streams/{request_id}/cancel") as cancel:
                        assert cancel.status == 202
                if event.done:
                    break
    assert received[-2].json["error"]["code"] == "cancelled"
    assert len(text_of(received)) < len(_words(200))


async def test_a_post_repeated_with_its_request_id_gets_the_same_reply_once_generated(
    make_stack: MakeStack, make_gateway: MakeGateway
) -> None:
    stack = await make_stack(worker_env={"WORKER_ECHO__DELAY_SECONDS": "0.005"})
    first, second = await make_gateway(), await make_gateway()
    text = _words(8)
    headers = {"X-Request-Id": "client-retry-1", "X-Context-Id": "ctx-retry"}
    replies = []
    async with aiohttp.ClientSession() as http:
        for gateway in (first, second):
            async with http.post(
                f"{gateway.url}/v1/chat/completions", json=_chat(text), headers=headers
            ) as response:
                assert response.status == 200
                replies.append(await response.json())
    assert [r["id"] for r in replies] == ["client-retry-1"] * 2
    assert [r["choices"][0]["message"]["content"] for r in replies] == [text] * 2
    logs = stack.worker.logs()
    assert logs.count("request client-retry-1 (context ctx-retry, attempt 1) completed") == 1
    assert "request client-retry-1 is done already" in logs
