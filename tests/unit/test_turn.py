"""One turn's events: order, coalescing, usage, failures, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.ports import FakeSink, ScriptedBackend
from tests.fakes.turn import TRACEPARENT, run_turn
from worker.contract.envelopes import Publication
from worker.errors import LLMError, LLMUnavailable, SidecarError
from worker.llm.base import Finish, TextDelta, Usage


def _words(*words: str) -> list[TextDelta]:
    return [TextDelta(w) for w in words]


async def test_events_follow_the_contract_order_with_every_attribute() -> None:
    sink = FakeSink()
    backend = ScriptedBackend([*_words("Hello", " world"), Finish("stop")], pause=0.01)
    result = await run_turn(sink, backend, metadata={"user": "u1"})

    assert result.status == "completed"
    assert sink.types() == ["started", "chunk", "chunk", "usage", "completed"]
    for seq, published in enumerate(sink.published, start=1):
        event = published.event
        assert event["id"] == f"req-1:1:{seq}"
        assert event["specversion"] == "1.0"
        assert event["source"] == "/llm-stream-worker"
        assert event["subject"] == "ctx-1"
        assert event["partitionkey"] == "ctx-1"
        assert event["sequence"] == f"{seq:010d}"
        assert event["datacontenttype"] == "application/json"
        assert event["traceparent"] == TRACEPARENT
        assert published.metadata == {"partitionKey": "ctx-1"}
        assert published.content_type == "application/cloudevents+json"
        assert published.data["seq"] == seq
        assert published.data["attempt"] == 1
        assert published.data["context_id"] == "ctx-1"
        assert published.data["request_id"] == "req-1"
    started = sink.published[0].data
    assert started["llm_component"] == "scripted"
    assert started["model"] == "scripted-model"
    assert started["metadata"] == {"user": "u1"}
    assert started["restarted"] is False
    assert [p.data["index"] for p in sink.published if p.type == "chunk"] == [0, 1]
    completed = sink.published[-1].data
    assert completed == {
        **completed,
        "finish_reason": "stop",
        "chunks": 2,
        "text_length": len("Hello world"),
    }
    assert sink.text() == "Hello world"


async def test_provider_usage_is_reported_as_provider() -> None:
    sink = FakeSink()
    backend = ScriptedBackend([*_words("Hi"), Usage(7, 1, 8), Finish("stop")])
    await run_turn(sink, backend, metadata={})
    usage = next(p.data for p in sink.published if p.type == "usage")
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (7, 1, 8)
    assert usage["source"] == "provider"


async def test_missing_usage_is_estimated_and_marked() -> None:
    sink = FakeSink()
    backend = ScriptedBackend([*_words("Hello", " there"), Finish("stop")])
    await run_turn(sink, backend, metadata={})
    usage = next(p.data for p in sink.published if p.type == "usage")
    assert usage["source"] == "estimated"
    assert usage["completion_tokens"] >= 1
    assert usage["prompt_tokens"] >= 1
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_tokens_arriving_during_a_slow_publish_are_merged_into_one_chunk() -> None:
    sink = FakeSink(delay=0.05)
    tokens = [f"t{i} " for i in range(40)]
    backend = ScriptedBackend([*_words(*tokens), Finish("stop")], pause=0.002)
    await run_turn(sink, backend, metadata={})

    chunks = [p.data["text"] for p in sink.published if p.type == "chunk"]
    assert "".join(chunks) == "".join(tokens)
    # 40 tokens over ~80 ms against 50 ms publishes: a handful of chunks, not 40.
    assert len(chunks) <= 6
    # One publish at a time: event n+1 only after event n was acknowledged.
    assert sink.max_in_flight == 1


async def test_llm_failure_after_start_ends_with_usage_then_failed() -> None:
    sink = FakeSink()
    backend = ScriptedBackend([*_words("Partial"), LLMUnavailable("upstream 503")])
    result = await run_turn(sink, backend, metadata={})
    assert result.status == "failed"
    assert sink.types() == ["started", "chunk", "usage", "failed"]
    failed = sink.published[-1].data
    assert failed["code"] == "llm_unavailable"
    assert failed["message"] == "upstream 503"
    assert failed["retryable"] is True
    assert backend.closed


async def test_non_retryable_llm_error_code() -> None:
    sink = FakeSink()
    backend = ScriptedBackend([LLMError("bad request: model not found")])
    await run_turn(sink, backend, metadata={})
    assert sink.types() == ["started", "usage", "failed"]
    assert sink.published[-1].data["code"] == "llm_error"
    assert sink.published[-1].data["retryable"] is False


async def test_unexpected_backend_exception_is_an_internal_failure() -> None:
    sink = FakeSink()
    backend = ScriptedBackend([*_words("a"), ZeroDivisionError("boom")])
    await run_turn(sink, backend, metadata={})
    assert sink.published[-1].data["code"] == "internal"


async def test_publish_failures_are_retried_with_the_same_event_id() -> None:
    sink = FakeSink(failures=2)
    backend = ScriptedBackend([*_words("ok"), Finish("stop")])
    result = await run_turn(sink, backend, metadata={})
    assert result.status == "completed"
    assert sink.calls == len(sink.published) + 2
    assert [p.data["seq"] for p in sink.published] == [1, 2, 3, 4]


async def test_publish_that_keeps_failing_raises_sidecar_error() -> None:
    sink = FakeSink(failures=100)
    backend = ScriptedBackend([*_words("ok"), Finish("stop")])
    with pytest.raises(SidecarError):
        await run_turn(sink, backend, metadata={}, attempts=3)
    assert sink.calls == 3


async def test_chunk_publish_failure_stops_the_llm_stream() -> None:
    sink = FakeSink()
    backend = ScriptedBackend([*_words(*["x"] * 1000), Finish("stop")], pause=0.001)
    original = sink.publish

    async def fail_on_chunks(
        publication: Publication, *, call_timeout: float | None = None
    ) -> None:
        if publication.kind == "chunk":
            raise SidecarError("sidecar gone")
        await original(publication, call_timeout=call_timeout)

    sink.publish = fail_on_chunks  # type: ignore[method-assign]
    with pytest.raises(SidecarError):
        await run_turn(sink, backend, metadata={}, attempts=2)
    assert backend.closed


async def test_cancel_closes_the_llm_stream_and_ends_with_usage_then_cancelled() -> None:
    sink = FakeSink()
    backend = ScriptedBackend([*_words(*["tok "] * 1000), Finish("stop")], pause=0.005)
    cancel = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, cancel.set)
    result = await run_turn(sink, backend, metadata={}, cancel=cancel)
    assert result.status == "cancelled"
    assert backend.closed
    assert sink.types()[-2:] == ["usage", "cancelled"]
    usage = sink.published[-2].data
    assert usage["source"] == "estimated"
    assert 0 < usage["completion_tokens"] < 1000
    assert sink.text() == result.reply


class _UpperFilter:
    """Holds back everything until flush: the worst case for completeness."""

    def __init__(self) -> None:
        self.held: list[str] = []

    def feed(self, text: str) -> str:
        self.held.append(text)
        return ""

    def flush(self) -> str:
        return "".join(self.held).upper()


async def test_held_back_text_is_flushed_before_usage() -> None:
    sink = FakeSink()
    backend = ScriptedBackend([*_words("abc", "def"), Finish("stop")])
    await run_turn(sink, backend, metadata={}, text_filter=_UpperFilter())
    assert sink.text() == "ABCDEF"
    assert sink.types() == ["started", "chunk", "usage", "completed"]
