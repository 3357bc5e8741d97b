"""The gateway's SSE view of a reply: ids, OpenAI's chunk order, and resuming anywhere."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llm_stream_gateway.errors import InvalidRequest
from llm_stream_gateway.replay import StreamInfo
from llm_stream_gateway.sse import Cursor, SseEvent, SseWriter, parse_cursor
from tests.fakes.events import Terminal, as_event, turn
from worker.client.consumer import Event, Output, Reassembler

INFO = StreamInfo("req-1", "ctx-1", "default", 1700000000, include_usage=True)


def _attempt(
    attempt: int, words: list[str], *, ending: Terminal | None = "completed"
) -> list[Event]:
    usage = {"prompt_tokens": 3, "completion_tokens": 4}
    events = turn("req-1", words, attempt=attempt, terminal=ending, usage=usage)
    return [as_event(event) for event in events]


def _outputs(events: list[Event]) -> list[Output]:
    assembler = Reassembler()
    return [output for event in events for output in assembler.feed(event)]


START = Cursor()


def _sse(outputs: list[Output], cursor: Cursor = START, *, usage: bool = True) -> list[SseEvent]:
    writer = SseWriter(INFO, cursor, include_usage=usage)
    return [sse for output in outputs for sse in writer.events(output)]


def _text(events: list[SseEvent]) -> str:
    text = ""
    for event in events:
        if event.event == "restart":
            text = ""
        elif event.data != "[DONE]":
            for choice in json.loads(event.data).get("choices", []):
                text += choice["delta"].get("content") or ""
    return text


def test_a_reply_is_chunks_then_finish_then_usage_then_done() -> None:
    events = _sse(_outputs(_attempt(1, ["Hello", " world"])))
    bodies = [json.loads(e.data) for e in events[:-1]]
    assert [e.id for e in events] == [f"req-1:1:{n}" for n in (1, 2, 3, 4, 5, 5)]
    assert bodies[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {b["object"] for b in bodies} == {"chat.completion.chunk"}
    assert bodies[-2]["choices"][0]["finish_reason"] == "stop"
    assert bodies[-1]["choices"] == []
    assert bodies[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert events[-1].data == "[DONE]"
    assert _text(events) == "Hello world"


def test_no_usage_chunk_unless_asked() -> None:
    events = _sse(_outputs(_attempt(1, ["a"])), usage=False)
    assert all("usage" not in json.loads(e.data) for e in events[:-1])


def test_a_failure_is_an_error_event_then_done() -> None:
    events = _sse(_outputs(_attempt(1, ["a"], ending="failed")))
    error = json.loads(events[-2].data)["error"]
    assert error["code"] == "llm_error"
    assert error["type"] == "api_error"
    assert events[-1].data == "[DONE]"


def test_a_new_attempt_after_text_was_shown_is_a_restart_event() -> None:
    first, second = _attempt(1, ["lost"], ending=None), _attempt(2, ["kept", " text"])
    events = _sse(_outputs(first + second))
    restarts = [e for e in events if e.event == "restart"]
    assert [e.id for e in restarts] == ["req-1:2:0"]
    assert json.loads(restarts[0].data)["restart"] is True
    assert _text(events) == "kept text"


@given(st.data())
def test_resuming_after_any_event_loses_and_repeats_nothing(data: st.DataObject) -> None:
    """What a reconnecting caller gets: the events after its Last-Event-ID, computed from
    the latest attempt only (as `follow` reads it), whatever it had seen before."""
    restarted = data.draw(st.booleans(), label="restarted")
    words = data.draw(st.lists(st.sampled_from(["a", "b ", "c"]), min_size=0, max_size=6))
    final = _attempt(2 if restarted else 1, words)
    live_events = (_attempt(1, ["x", "y"], ending=None) if restarted else []) + final
    live = _sse(_outputs(live_events))
    cut = data.draw(st.integers(0, len(live) - 2), label="cut")
    seen = live[: cut + 1]
    cursor = parse_cursor("req-1", seen[-1].id)
    resumed = _sse(_outputs(final), cursor)
    ids = [e.id for e in seen + resumed if e.data != "[DONE]"]
    assert len(ids) == len(set(ids))
    assert _text(seen + resumed) == "".join(words)
    assert resumed[-1].data == "[DONE]"


@pytest.mark.parametrize(
    ("value", "cursor"),
    [
        (None, Cursor()),
        ("", Cursor()),
        ("req-1:2:7", Cursor(2, 7)),
        ("3:4", Cursor(3, 4)),
        ("5", Cursor(1, 5)),
    ],
)
def test_positions_parse(value: str | None, cursor: Cursor) -> None:
    assert parse_cursor("req-1", value) == cursor


@pytest.mark.parametrize("value", ["other:1:1", "req-1:x:1", "-1", "req-1:1:1:1"])
def test_positions_of_another_stream_or_malformed_are_rejected(value: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_cursor("req-1", value)
