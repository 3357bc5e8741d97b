"""The synchronous client: the async one on a background loop, same behaviour."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.unit.test_client_async import FakeSidecar, turn
from worker.client import (
    ChatCompletion,
    Client,
    GenerationFailed,
    SidecarUnavailable,
    generate,
)
from worker.contract.envelopes import InboundMessage


def _client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "llm-stream-client"]


def test_streams_and_collects_like_the_async_client() -> None:
    sidecar = FakeSidecar()
    with Client(transport=sidecar) as client:
        stream = client.generate("Hello there")
        events = list(stream)
        reply = client.generate("General Kenobi", stream=False)
    assert events[0] == {"type": "context_id", "data": "ctx-1"}
    assert [e["data"] for e in events if e["type"] == "content"] == ["Hello", " there"]
    assert events[-1]["type"] == "final_usage"
    assert (stream.text, stream.context_id) == ("Hello there", "ctx-1")
    assert stream.usage is not None
    assert isinstance(reply, ChatCompletion)
    assert reply.choices[0].message.content == "General Kenobi"
    assert _client_threads() == []


def test_raw_events_and_early_close() -> None:
    with Client(transport=FakeSidecar()) as client:
        types = [event.type for event in client.generate("a b").events()]
        with client.generate("a b c") as stream:
            next(stream)
        assert client.in_flight == 0
    assert types[0] == "llm.stream.started.v1"
    assert types[-1] == "llm.stream.completed.v1"


def test_raw_events_left_part_way() -> None:
    with Client(transport=FakeSidecar()) as client:
        stream = client.generate("a b c")
        events = stream.events()
        assert next(events).type == "llm.stream.started.v1"
        events.close()
        stream.close()
        assert client.in_flight == 0


def test_failed_raises_in_the_callers_thread() -> None:
    def failing(prompt: dict[str, Any]) -> list[InboundMessage]:
        return turn(prompt["request_id"], [], terminal="failed", code="timeout", retryable=True)

    with Client(transport=FakeSidecar(failing)) as client:
        with pytest.raises(GenerationFailed) as caught:
            list(client.generate("x"))
        assert caught.value.code == "timeout"
        assert caught.value.retryable
        assert client.in_flight == 0


def test_threads_share_one_client_and_one_subscription() -> None:
    sidecar = FakeSidecar()
    with Client(transport=sidecar) as client, ThreadPoolExecutor(4) as pool:
        replies = list(
            pool.map(
                lambda n: client.generate(f"thread {n}", stream=False).choices[0].message.content,
                range(8),
            )
        )
    assert replies == [f"thread {n}" for n in range(8)]
    assert sidecar.calls.count("subscribe") == 1


def test_an_unreachable_sidecar_raises_and_leaves_no_thread() -> None:
    with pytest.raises(SidecarUnavailable):
        Client(transport=FakeSidecar(ready=False)).open()
    assert _client_threads() == []


def test_one_shot_generate_against_nothing_listening() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SidecarUnavailable, match=f"127.0.0.1:{port}"):
        generate("x", address=f"127.0.0.1:{port}", connect_timeout=0.2)
    assert _client_threads() == []
