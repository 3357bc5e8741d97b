"""The async client against an in-memory sidecar: routing, ordering, restarts, errors."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

import pytest

from tests.fakes.events import as_inbound, response_event
from tests.fakes.events import turn as published_turn
from worker.client import (
    AsyncClient,
    ChatCompletion,
    ClientError,
    GenerationCancelled,
    GenerationFailed,
    GenerationTimeout,
    InvalidRequest,
    SidecarUnavailable,
    StreamEvent,
)
from worker.client import stream as stream_module
from worker.contract.envelopes import InboundMessage, Publication
from worker.errors import SidecarError

# What the fake worker answers to a prompt (the prompt's JSON in, response events out).
Answer = Callable[[dict[str, Any]], Sequence[InboundMessage]]
_EOF = object()


def message(kind: str, request_id: str, attempt: int, seq: int, **fields: Any) -> InboundMessage:
    return as_inbound(response_event(kind, request_id, attempt, seq, **fields))


def turn(request_id: str, chunks: Sequence[str], **options: Any) -> list[InboundMessage]:
    """One attempt of a turn as the worker publishes it (`tests.fakes.events.turn`)."""
    return [as_inbound(event) for event in published_turn(request_id, chunks, **options)]


def echo(prompt: dict[str, Any]) -> list[InboundMessage]:
    words = prompt["messages"][-1]["content"].split(" ")
    return turn(prompt["request_id"], [w if i == 0 else f" {w}" for i, w in enumerate(words)])


class FakeSubscription:
    def __init__(self, sidecar: FakeSidecar) -> None:
        self._sidecar = sidecar
        self.queue: asyncio.Queue[object] = asyncio.Queue()

    async def __aenter__(self) -> Self:
        if self._sidecar.hang:
            await asyncio.Event().wait()
        if self._sidecar.refuse_subscribe:
            raise SidecarError("subscribe to pubsub/responses failed: NOT_FOUND")
        self._sidecar.calls.append("subscribe")
        self._sidecar.subscriptions.append(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sidecar.calls.append("unsubscribe")
        self._sidecar.subscriptions.remove(self)

    async def __aiter__(self) -> Any:
        while True:
            item = await self.queue.get()
            if item is _EOF:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class FakeSidecar:
    """A sidecar in memory: records prompts, and delivers to every live subscription
    whatever `answer` makes of a prompt, or what a test `emit`s."""

    def __init__(self, answer: Answer | None = echo, *, ready: bool = True) -> None:
        self.answer = answer
        self.ready = ready
        self.refuse_subscribe = False
        self.fail_publish = False
        # A wedged sidecar answers nothing, neither yes nor no.
        self.hang = False
        self.published: list[dict[str, Any]] = []
        self.cancels: list[dict[str, Any]] = []
        # The metadata of every publish, prompts and cancellations alike, in order.
        self.publish_metadata: list[dict[str, str]] = []
        self.calls: list[str] = []
        self.subscriptions: list[FakeSubscription] = []

    async def wait_ready(self, seconds: float) -> None:
        if not self.ready:
            raise SidecarError(f"Dapr sidecar not ready within {seconds}")

    async def publish(self, publication: Publication, *, call_timeout: float | None = None) -> None:
        pubsub, topic, data = publication.pubsub, publication.topic, publication.data
        content_type = publication.content_type
        self.calls.append("publish")
        if self.hang:
            await asyncio.Event().wait()
        if self.fail_publish:
            raise SidecarError(f"publish to {pubsub}/{topic} failed: UNAVAILABLE")
        self.publish_metadata.append(dict(publication.metadata))
        if topic == "cancellations":
            self.cancels.append(json.loads(data))
            return
        assert (pubsub, topic, content_type) == ("pubsub", "prompts", "application/json")
        prompt = json.loads(data)
        self.published.append(prompt)
        if self.answer is not None:
            self.emit(*self.answer(prompt))

    def subscribe(self, pubsub: str, topic: str) -> FakeSubscription:
        assert (pubsub, topic) == ("pubsub", "responses")
        return FakeSubscription(self)

    def emit(self, *messages: object) -> None:
        for subscription in self.subscriptions:
            for item in messages:
                subscription.queue.put_nowait(item)


async def _collect(stream: Any) -> list[StreamEvent]:
    return [event async for event in stream]


@pytest.fixture
def sidecar() -> FakeSidecar:
    return FakeSidecar()


async def test_streams_the_contract_dicts_after_subscribing_first(sidecar: FakeSidecar) -> None:
    async with AsyncClient(transport=sidecar) as client:
        stream = await client.generate("Hello brave world")
        events = await _collect(stream)
    assert events == [
        {"type": "context_id", "data": "ctx-1"},
        {"type": "content", "data": "Hello"},
        {"type": "content", "data": " brave"},
        {"type": "content", "data": " world"},
        {
            "type": "final_usage",
            "data": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7},
        },
    ]
    assert sidecar.calls == ["subscribe", "publish", "unsubscribe"]
    assert (stream.text, stream.context_id, stream.attempt) == ("Hello brave world", "ctx-1", 1)
    assert stream.usage is not None
    assert stream.usage.source == "provider"


async def test_the_prompt_is_plain_json_with_only_what_was_given(sidecar: FakeSidecar) -> None:
    async with AsyncClient(transport=sidecar, llm_component="client-default") as client:
        await client.generate("a", stream=False)
        await client.generate(
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "b"}],
            stream=False,
            context_id="ctx-7",
            temperature=0.5,
            scrubPII=True,
            llm_component="openai",
            max_tokens=9,
            history=False,
            metadata={"user": "u1"},
        )
    first, second = sidecar.published
    assert first["request_id"].startswith("client-")
    assert first == {
        "messages": [{"role": "user", "content": "a"}],
        "request_id": first["request_id"],
        "llm_component": "client-default",
    }
    assert second == {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "b"},
        ],
        "request_id": second["request_id"],
        "context_id": "ctx-7",
        "temperature": 0.5,
        "llm_component": "openai",
        "max_tokens": 9,
        "metadata": {"user": "u1"},
        "scrub_pii": True,
        "history": False,
    }
    assert first["request_id"] != second["request_id"]


async def test_without_llm_component_the_worker_default_applies(
    sidecar: FakeSidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's variable in the client's environment must not pin a component.
    monkeypatch.setenv("DAPR_LLM_COMPONENT_DEFAULT", "from-client-env")
    async with AsyncClient(transport=sidecar) as client:
        await client.generate("a", stream=False)
    assert "llm_component" not in sidecar.published[0]


async def test_non_streaming_returns_an_openai_style_response(sidecar: FakeSidecar) -> None:
    async with AsyncClient(transport=sidecar) as client:
        reply = await client.generate("Hi there", stream=False)
        assert client.in_flight == 0
    assert isinstance(reply, ChatCompletion)
    assert reply.choices[0].message.content == "Hi there"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.context_id == "ctx-1"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.total_tokens) == (4, 6)
    assert (reply.model, reply.llm_component, reply.object) == (
        "echo-model",
        "echo",
        "chat.completion",
    )
    assert reply.id == sidecar.published[0]["request_id"]


async def test_other_requests_events_shuffled_and_duplicated_are_sorted_out() -> None:
    def chaotic(prompt: dict[str, Any]) -> list[InboundMessage]:
        own = echo(prompt)
        foreign = turn("someone-else", ["not", " mine"])
        delivered = own + own[1:3] + foreign
        random.Random(7).shuffle(delivered)
        return delivered

    async with AsyncClient(transport=FakeSidecar(chaotic)) as client:
        events = await _collect(await client.generate("one two three four"))
    assert "".join(e["data"] for e in events if e["type"] == "content") == "one two three four"
    assert [e["type"] for e in events] == ["context_id", *["content"] * 4, "final_usage"]


async def test_a_restart_flags_a_second_context_id_and_the_text_starts_over() -> None:
    def restarting(prompt: dict[str, Any]) -> list[InboundMessage]:
        request_id = prompt["request_id"]
        return [
            *turn(request_id, ["Once", " up"], terminal=None),
            *turn(request_id, ["Once", " upon", " a time"], attempt=2),
        ]

    async with AsyncClient(transport=FakeSidecar(restarting)) as client:
        stream = await client.generate("story")
        events = await _collect(stream)
        reply = await client.generate("story", stream=False)
    assert events[:3] == [
        {"type": "context_id", "data": "ctx-1"},
        {"type": "content", "data": "Once"},
        {"type": "content", "data": " up"},
    ]
    assert events[3] == {"type": "context_id", "data": "ctx-1", "restarted": True}
    assert [e["data"] for e in events[4:7]] == ["Once", " upon", " a time"]
    assert events[7]["type"] == "final_usage"
    assert (stream.text, stream.attempt) == ("Once upon a time", 2)
    assert reply.choices[0].message.content == "Once upon a time"
    assert reply.attempt == 2


async def test_a_restart_seen_first_hides_the_old_attempt_entirely() -> None:
    def late_old(prompt: dict[str, Any]) -> list[InboundMessage]:
        request_id = prompt["request_id"]
        return [*turn(request_id, ["new"], attempt=2), *turn(request_id, ["old"], terminal=None)]

    async with AsyncClient(transport=FakeSidecar(late_old)) as client:
        events = await _collect(await client.generate("x"))
    assert events[0] == {"type": "context_id", "data": "ctx-1", "restarted": True}
    assert [e["data"] for e in events if e["type"] == "content"] == ["new"]


async def test_failed_raises_with_code_message_and_retryable() -> None:
    def failing(prompt: dict[str, Any]) -> list[InboundMessage]:
        return turn(
            prompt["request_id"],
            ["partial"],
            terminal="failed",
            code="llm_unavailable",
            message="429 from the provider",
            retryable=True,
        )

    async with AsyncClient(transport=FakeSidecar(failing)) as client:
        stream = await client.generate("x")
        seen: list[StreamEvent] = []

        async def read_all() -> None:
            async for event in stream:
                seen.append(event)

        with pytest.raises(GenerationFailed) as caught:
            await read_all()
        with pytest.raises(GenerationFailed):
            await client.generate("x", stream=False)
        assert client.in_flight == 0
    error = caught.value
    assert (error.code, error.message, error.retryable) == (
        "llm_unavailable",
        "429 from the provider",
        True,
    )
    assert error.request_id == stream.request_id
    assert error.context_id == "ctx-1"
    # Usage arrives before the failure, as the contract guarantees.
    assert [e["type"] for e in seen] == ["context_id", "content", "final_usage"]


async def test_a_lone_failed_event_raises_too() -> None:
    def rejecting(prompt: dict[str, Any]) -> list[InboundMessage]:
        return [
            message(
                "failed",
                prompt["request_id"],
                1,
                1,
                code="unknown_component",
                message="llm_component: no LLM component named 'gpt-9'",
                retryable=False,
            )
        ]

    async with AsyncClient(transport=FakeSidecar(rejecting)) as client:
        with pytest.raises(GenerationFailed) as caught:
            await _collect(await client.generate("x", llm_component="gpt-9"))
    assert caught.value.code == "unknown_component"
    assert str(caught.value) == "unknown_component: llm_component: no LLM component named 'gpt-9'"


async def test_cancelled_raises_generation_cancelled() -> None:
    def cancelled(prompt: dict[str, Any]) -> list[InboundMessage]:
        return turn(prompt["request_id"], ["a"], terminal="cancelled")

    async with AsyncClient(transport=FakeSidecar(cancelled)) as client:
        with pytest.raises(GenerationCancelled, match="cancelled by request"):
            await client.generate("x", stream=False)


async def test_no_event_within_the_timeout_raises_generation_timeout() -> None:
    async with AsyncClient(transport=FakeSidecar(answer=None), timeout=0.05) as client:
        with pytest.raises(GenerationTimeout, match="is the worker running") as caught:
            await client.generate("x", stream=False)
        assert not caught.value.started
        assert caught.value.retryable
        assert client.in_flight == 0


async def test_the_timeout_is_per_event_not_for_the_whole_reply() -> None:
    sidecar = FakeSidecar(answer=None)
    async with AsyncClient(transport=sidecar, timeout=0.5) as client:
        stream = await client.generate("x", timeout=0.2)
        messages = turn(stream.request_id, ["a", "b", "c", "d"])

        async def trickle() -> None:
            for item in messages:
                await asyncio.sleep(0.05)
                sidecar.emit(item)

        feeder = asyncio.create_task(trickle())
        events = await _collect(stream)
        await feeder
    assert len(events) == 6


async def test_an_unreachable_sidecar_raises_sidecar_unavailable() -> None:
    client = AsyncClient("127.0.0.1:1", transport=FakeSidecar(ready=False), connect_timeout=0.1)
    with pytest.raises(
        SidecarUnavailable, match=r"cannot reach the Dapr sidecar at 127\.0\.0\.1:1 "
    ):
        await client.open()


async def test_a_refused_subscription_or_publish_raises_sidecar_unavailable(
    sidecar: FakeSidecar,
) -> None:
    async with AsyncClient(transport=sidecar) as client:
        sidecar.refuse_subscribe = True
        with pytest.raises(SidecarUnavailable, match="NOT_FOUND"):
            await client.generate("x")
        assert sidecar.published == []
        sidecar.refuse_subscribe = False
        sidecar.fail_publish = True
        with pytest.raises(SidecarUnavailable, match="UNAVAILABLE"):
            await client.generate("x")
        assert client.in_flight == 0


async def test_a_sidecar_that_hangs_is_given_up_on(sidecar: FakeSidecar) -> None:
    async with AsyncClient(transport=sidecar, connect_timeout=0.05) as client:
        sidecar.hang = True
        with pytest.raises(SidecarUnavailable, match="did not confirm the subscription"):
            await client.generate("x")
        sidecar.hang = False
        await client.generate("warm", stream=False)
        sidecar.hang = True
        with pytest.raises(SidecarUnavailable, match="did not take the prompt"):
            await client.generate("x")
        assert client.in_flight == 0


async def test_a_broken_subscription_fails_requests_in_flight_then_resubscribes(
    sidecar: FakeSidecar,
) -> None:
    sidecar.answer = None
    async with AsyncClient(transport=sidecar) as client:
        first = await client.generate("x")
        second = await client.generate("y")
        sidecar.emit(SidecarError("subscription responses broke: UNAVAILABLE"))
        for stream in (first, second):
            with pytest.raises(SidecarUnavailable, match="broke"):
                await _collect(stream)
        sidecar.answer = echo
        reply = await client.generate("back again", stream=False)
    assert reply.choices[0].message.content == "back again"
    assert sidecar.calls.count("subscribe") == 2


async def test_the_sidecar_ending_the_subscription_fails_requests_in_flight(
    sidecar: FakeSidecar,
) -> None:
    sidecar.answer = None
    async with AsyncClient(transport=sidecar) as client:
        stream = await client.generate("x")
        sidecar.emit(_EOF)
        with pytest.raises(SidecarUnavailable, match="ended the subscription"):
            await _collect(stream)


async def test_concurrent_requests_share_one_subscription(sidecar: FakeSidecar) -> None:
    sidecar.answer = None
    async with AsyncClient(transport=sidecar) as client:
        streams = [await client.generate(f"prompt {n}") for n in range(5)]
        assert client.in_flight == 5
        # The worker answers all five at once, their events interleaved.
        messages = [
            item
            for stream in streams
            for item in turn(stream.request_id, [f"reply {stream.request_id}"])
        ]
        random.Random(3).shuffle(messages)
        sidecar.emit(*messages)
        results = await asyncio.gather(*(_collect(s) for s in streams))
        assert client.in_flight == 0
    assert sidecar.calls.count("subscribe") == 1
    for stream, events in zip(streams, results, strict=True):
        assert [e["data"] for e in events if e["type"] == "content"] == [
            f"reply {stream.request_id}"
        ]


async def test_closing_a_stream_early_stops_routing_to_it(sidecar: FakeSidecar) -> None:
    async with AsyncClient(transport=sidecar) as client:
        async with await client.generate("a b c") as stream:
            assert await anext(stream) == {"type": "context_id", "data": "ctx-1"}
        assert client.in_flight == 0
    # Abandoned before its end: the worker is asked to stop paying for the rest.
    assert [c["request_id"] for c in sidecar.cancels] == [stream.request_id]


async def test_a_conversation_is_published_with_its_context_id_as_partition_key(
    sidecar: FakeSidecar,
) -> None:
    # On Kafka the key keeps a conversation's turns in one partition, in publish order.
    async with AsyncClient(transport=sidecar) as client:
        await client.generate("first turn", stream=False)
        await client.generate("next turn", stream=False, context_id="ctx-9")
        async with await client.generate("a b c", context_id="ctx-9") as stream:
            await anext(stream)
    # A new conversation has no id yet: any partition will do.
    assert sidecar.publish_metadata == [
        {},
        {"partitionKey": "ctx-9"},
        {"partitionKey": "ctx-9"},
        {"partitionKey": "ctx-9"},  # the cancellation of the abandoned stream
    ]


async def test_raw_events_are_ordered_and_deduplicated() -> None:
    def twice(prompt: dict[str, Any]) -> list[InboundMessage]:
        own = echo(prompt)
        return list(reversed(own + own))

    async with AsyncClient(transport=FakeSidecar(twice)) as client:
        stream = await client.generate("a b")
        events = [event async for event in stream.events()]
    assert [e.id.split(":")[-1] for e in events] == ["1", "2", "3", "4", "5"]
    assert events[-1].type == "llm.stream.completed.v1"


async def test_invalid_requests_fail_before_anything_is_published(sidecar: FakeSidecar) -> None:
    async with AsyncClient(transport=sidecar) as client:
        with pytest.raises(InvalidRequest, match="temperature"):
            await client.generate("x", temperature=3.0)
        with pytest.raises(InvalidRequest, match="messages"):
            await client.generate([])
        with pytest.raises(InvalidRequest, match="context_id"):
            await client.generate("x", context_id="has spaces")
    assert sidecar.calls == []


async def test_generate_needs_an_open_client(sidecar: FakeSidecar) -> None:
    client = AsyncClient(transport=sidecar)
    with pytest.raises(ClientError, match="not open"):
        await client.generate("x")
    async with client:
        pass
    with pytest.raises(ClientError, match="not open"):
        await client.generate("x")


async def test_closing_the_client_ends_streams_in_flight(sidecar: FakeSidecar) -> None:
    sidecar.answer = None
    client = AsyncClient(transport=sidecar)
    await client.open()
    stream = await client.generate("x")
    await client.aclose()
    with pytest.raises(ClientError, match="closed"):
        await _collect(stream)
    assert sidecar.calls[-1] == "unsubscribe"


async def test_a_lost_started_is_done_without_after_a_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Dapr 1.17 on Redis may hand the first event to a closed subscription (#10228).
    monkeypatch.setattr(stream_module, "STARTED_GRACE", 0.05)

    def without_started(prompt: dict[str, Any]) -> list[InboundMessage]:
        return echo(prompt)[1:]

    async with AsyncClient(transport=FakeSidecar(without_started), timeout=5) as client:
        stream = await client.generate("still here")
        events = await _collect(stream)
        reply = await client.generate("whole", stream=False)
    assert events[0] == {"type": "context_id", "data": "ctx-1"}
    assert _content_of(events) == "still here"
    assert stream.context_id == "ctx-1"
    assert reply.choices[0].message.content == "whole"
    assert reply.model is None


async def test_a_lost_chunk_is_waited_for_then_named_in_the_timeout() -> None:
    def without_a_chunk(prompt: dict[str, Any]) -> list[InboundMessage]:
        messages = echo(prompt)
        del messages[2]
        return messages

    async with AsyncClient(transport=FakeSidecar(without_a_chunk), timeout=0.1) as client:
        stream = await client.generate("one two three")
        events: list[StreamEvent] = []

        async def read_all() -> None:
            async for event in stream:
                events.append(event)

        with pytest.raises(GenerationTimeout, match=r"events 3 of request \S+ did not arrive"):
            await read_all()
    # Nothing after the hole was handed out.
    assert _content_of(events) == "one"


def _content_of(events: Sequence[StreamEvent]) -> str:
    return "".join(e["data"] for e in events if e["type"] == "content")
