"""One delivery end to end through the pipeline, with fakes of the sidecar's ports."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.handler import fake_handler
from tests.fakes.ports import FakeSink, FakeStateStore, ScriptedBackend
from worker.contract.envelopes import InboundMessage, Publication
from worker.llm.base import Finish, StreamItem, TextDelta, Usage
from worker.pipeline.handler import PromptHandler
from worker.pipeline.outcome import Outcome

REPLY: list[StreamItem | Exception] = [
    TextDelta("Hello"),
    TextDelta(" there"),
    Usage(3, 2, 5),
    Finish("stop"),
]


def _handler(
    sink: FakeSink, *backends: ScriptedBackend, store: FakeStateStore | None = None
) -> PromptHandler:
    return fake_handler(sink, *backends, store=store or FakeStateStore(), history_max_chars=1000)


def _delivery(payload: Any, event_id: str = "evt-1") -> InboundMessage:
    return InboundMessage(
        id=event_id,
        topic="prompts",
        data=json.dumps(payload).encode(),
        data_content_type="application/json",
        extensions={"traceparent": "00-11111111111111111111111111111111-2222222222222222-01"},
    )


def _prompt(text: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "context_id": "ctx", **fields}


async def test_a_valid_prompt_is_answered_and_acknowledged() -> None:
    sink, backend = FakeSink(), ScriptedBackend(REPLY)
    outcome = await _handler(sink, backend).handle(_delivery(_prompt("Hi", temperature=0.4)))
    assert outcome is Outcome.SUCCESS
    types = sink.types()
    # The first token goes out at once; what came during its publish, in the next chunk.
    assert types[0] == "started"
    assert set(types[1:-2]) == {"chunk"}
    assert types[-2:] == ["usage", "completed"]
    assert sink.text() == "Hello there"
    assert backend.requests[0].temperature == 0.4
    # The prompt's trace continues on every publish (the sidecar takes it from the call).
    assert set(sink.traceparents) == {"00-11111111111111111111111111111111-2222222222222222-01"}


async def test_the_completed_turn_is_remembered_for_the_next_one() -> None:
    sink, backend, store = FakeSink(), ScriptedBackend(REPLY), FakeStateStore()
    handler = _handler(sink, backend, store=store)
    await handler.handle(_delivery(_prompt("first"), "e1"))
    await handler.handle(_delivery(_prompt("second"), "e2"))
    await handler.handle(_delivery(_prompt("third", history=False), "e3"))
    second = [(m.role, m.content) for m in backend.requests[1].messages]
    assert second == [("user", "first"), ("assistant", "Hello there"), ("user", "second")]
    assert [m.content for m in backend.requests[2].messages] == ["third"]


async def test_an_invalid_prompt_is_dropped_after_a_failed_event() -> None:
    sink = FakeSink()
    outcome = await _handler(sink, ScriptedBackend(REPLY)).handle(
        _delivery({"messages": [], "context_id": "ctx", "request_id": "r1"})
    )
    assert outcome is Outcome.DROP
    assert sink.types() == ["failed"]
    failed = sink.published[0].data
    assert failed["code"] == "invalid_prompt"
    assert failed["request_id"] == "r1"
    assert failed["message"].startswith("messages")


async def test_an_unknown_component_is_dropped_after_a_failed_event() -> None:
    sink = FakeSink()
    outcome = await _handler(sink, ScriptedBackend(REPLY)).handle(
        _delivery(_prompt("Hi", llm_component="nope"))
    )
    assert outcome is Outcome.DROP
    assert sink.types() == ["failed"]
    assert sink.published[0].data["code"] == "unknown_component"


async def test_a_sidecar_that_refuses_publishes_means_retry() -> None:
    sink = FakeSink(failures=1000)
    outcome = await _handler(sink, ScriptedBackend(REPLY)).handle(_delivery(_prompt("Hi")))
    assert outcome is Outcome.RETRY


async def test_an_llm_failure_is_reported_and_acknowledged() -> None:
    from worker.errors import LLMUnavailable

    sink = FakeSink()
    backend = ScriptedBackend([LLMUnavailable("down")])
    outcome = await _handler(sink, backend).handle(_delivery(_prompt("Hi")))
    # The consumer was told (failed, retryable); redelivery would only repeat it.
    assert outcome is Outcome.SUCCESS
    assert sink.types() == ["started", "usage", "failed"]


async def test_scrub_pii_scrubs_the_prompt_and_the_streamed_reply() -> None:
    sink = FakeSink()
    backend = ScriptedBackend(
        [TextDelta("mail ada@exa"), TextDelta("mple.com now"), Finish("stop")]
    )
    await _handler(sink, backend).handle(_delivery(_prompt("I am bob@example.org", scrubPII=True)))
    assert backend.requests[0].messages[0].content == "I am <EMAIL_ADDRESS>"
    assert sink.text() == "mail <EMAIL_ADDRESS> now"


async def test_a_backend_that_scrubs_its_reply_itself_gets_the_prompt_scrubbed_already() -> None:
    # Dapr 1.18's request-level scrub_pii scrubs a conversation's output only: the raw
    # prompt must never be handed to such a backend in the hope that it scrubs it.
    sink = FakeSink()
    backend = ScriptedBackend(REPLY, scrubs_pii=True)
    await _handler(sink, backend).handle(_delivery(_prompt("I am bob@example.org", scrubPII=True)))
    request = backend.requests[0]
    assert request.scrub_pii is True
    assert request.messages[0].content == "I am <EMAIL_ADDRESS>"


async def test_history_stored_unscrubbed_is_scrubbed_for_a_turn_that_asks() -> None:
    sink = FakeSink()
    backend = ScriptedBackend(REPLY)
    handler = _handler(sink, backend)
    first = _prompt("I am bob@example.org", context_id="c1", request_id="r1")
    await handler.handle(_delivery(first))
    await handler.handle(
        _delivery(_prompt("Who am I?", context_id="c1", request_id="r2", scrubPII=True))
    )
    sent = [m.content for m in backend.requests[1].messages]
    assert "I am <EMAIL_ADDRESS>" in sent
    assert not any("bob@example.org" in text for text in sent)


async def test_max_tokens_for_a_backend_that_cannot_honour_it_is_refused_by_name() -> None:
    sink = FakeSink()
    backend = ScriptedBackend(REPLY, honours_max_tokens=False)
    outcome = await _handler(sink, backend).handle(_delivery(_prompt("hi", max_tokens=5)))
    assert outcome is Outcome.DROP
    assert backend.requests == []
    [failed] = sink.published
    assert failed.type == "failed"
    assert failed.data["code"] == "invalid_prompt"
    assert failed.data["message"].startswith("max_tokens: ")


class _BuggySink(FakeSink):
    """A sink with a bug that bites the first `bites` publishes (not a sidecar error)."""

    bites = 2

    async def publish(self, publication: Publication, *, call_timeout: float | None = None) -> None:
        if self.bites:
            self.bites -= 1
            raise KeyError("a bug")
        await super().publish(publication, call_timeout=call_timeout)


async def test_a_poison_pill_is_answered_failed_and_dropped_on_its_third_delivery() -> None:
    sink = _BuggySink()
    backend = ScriptedBackend(REPLY)
    handler = _handler(sink, backend)
    message = _delivery(_prompt("hi", request_id="r1"))
    assert await handler.handle(message) is Outcome.RETRY
    assert await handler.handle(message) is Outcome.RETRY
    assert await handler.handle(message) is Outcome.DROP
    assert sink.types() == ["started", "usage", "failed"]
    assert sink.published[-1].data["code"] == "internal"
    assert sink.published[-1].data["attempt"] == 3
    assert backend.requests == []  # the struck-out delivery never calls the LLM


async def test_a_poison_pill_whose_failed_answer_fails_too_is_still_dropped() -> None:
    sink = _BuggySink()
    sink.bites = 100
    handler = _handler(sink, ScriptedBackend(REPLY))
    message = _delivery(_prompt("hi", request_id="r1"))
    outcomes = [await handler.handle(message) for _ in range(3)]
    assert outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.DROP]


async def test_a_trace_context_that_is_no_trace_is_not_passed_on() -> None:
    sink = FakeSink()
    message = InboundMessage(
        id="evt-1",
        topic="prompts",
        data=json.dumps(_prompt("hi")).encode(),
        data_content_type="application/json",
        extensions={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n"},
    )
    assert await _handler(sink, ScriptedBackend(REPLY)).handle(message) is Outcome.SUCCESS
    assert set(sink.traceparents) == {None}
    assert all("traceparent" not in p.event for p in sink.published)
