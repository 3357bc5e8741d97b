"""The consumer building block: any delivery order, duplicates, restarts, gaps."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes.events import Terminal, as_cloudevent, as_event, response_event, turn
from worker.client.consumer import (
    Event,
    Finished,
    Gap,
    Other,
    Output,
    Reassembler,
    Started,
    Superseded,
    Text,
    UsageReported,
)
from worker.client.errors import MalformedEvent
from worker.contract.events import ResponseEvent


def _event(kind: str, request_id: str, attempt: int, seq: int, **fields: Any) -> Event:
    return as_event(response_event(kind, request_id, attempt, seq, **fields))


def _turn(
    chunks: Sequence[str],
    *,
    request_id: str = "r1",
    attempt: int = 1,
    terminal: Terminal | None = "completed",
) -> list[Event]:
    """One attempt's events in seq order; `terminal=None` stops before usage (it died)."""
    usage = {"prompt_tokens": 3, "source": "estimated"}  # not the consumer's default
    return [
        as_event(event)
        for event in turn(request_id, chunks, attempt=attempt, terminal=terminal, usage=usage)
    ]


def _feed(assembler: Reassembler, events: Iterable[Event]) -> list[Output]:
    return [output for event in events for output in assembler.feed(event)]


def _finished(outputs: Sequence[Output]) -> list[Finished]:
    return [o for o in outputs if isinstance(o, Finished)]


def _shown(outputs: Sequence[Output], request_id: str = "r1") -> str:
    """The text a consumer shows who appends each Text and clears on Superseded."""
    shown: list[str] = []
    for output in outputs:
        if isinstance(output, Superseded) and output.request_id == request_id:
            shown.clear()
        elif isinstance(output, Text) and output.request_id == request_id:
            shown.append(output.text)
    return "".join(shown)


def test_in_order_stream_yields_each_step_then_finished() -> None:
    outputs = _feed(Reassembler(), _turn(["Hel", "lo"]))
    assert [type(o) for o in outputs] == [Started, Text, Text, UsageReported, Finished]
    started, finished = outputs[0], outputs[-1]
    assert isinstance(started, Started)
    assert (started.context_id, started.attempt, started.restarted) == ("ctx-1", 1, False)
    assert started.llm_component == "echo"
    assert isinstance(finished, Finished)
    assert finished.status == "completed"
    assert finished.text == "Hello"
    assert finished.finish_reason == "stop"
    assert finished.usage is not None
    assert finished.usage.total_tokens == 5
    assert finished.usage.source == "estimated"
    assert finished.gaps == ()
    assert [o.index for o in outputs if isinstance(o, Text)] == [0, 1]


def test_out_of_order_events_wait_for_the_missing_one() -> None:
    assembler = Reassembler()
    started, first, second, usage, completed = _turn(["a", "b"])
    assert assembler.feed(second) == []
    assert assembler.feed(completed) == []
    assert assembler.held("r1") == 2
    assert [type(o) for o in assembler.feed(started)] == [Started]
    assert [type(o) for o in assembler.feed(first)] == [Text, Text]
    outputs = assembler.feed(usage)
    assert [type(o) for o in outputs] == [UsageReported, Finished]
    assert _finished(outputs)[0].text == "ab"
    assert assembler.in_progress == []


def test_duplicates_are_dropped_even_after_the_request_finished() -> None:
    assembler = Reassembler()
    events = _turn(["x", "y"])
    outputs = _feed(assembler, [events[0], events[0], events[1], events[1], *events[2:]])
    assert _finished(outputs)[0].text == "xy"
    assert assembler.counters.duplicates == 2
    assert _feed(assembler, events) == []
    assert assembler.counters.stale == len(events)


def test_a_duplicate_with_a_rewritten_id_is_still_a_duplicate() -> None:
    assembler = Reassembler()
    started = _turn([])[0]
    assembler.feed(started)
    assert assembler.feed(Event(started.type, started.data, id="broker-assigned")) == []
    assert assembler.counters.duplicates == 1


def test_a_new_attempt_supersedes_the_partial_one() -> None:
    assembler = Reassembler()
    first = _turn(["par", "tial"], terminal=None)
    second = _turn(["whole", " reply"], attempt=2)
    outputs = _feed(assembler, [*first, second[0]])
    superseded = [o for o in outputs if isinstance(o, Superseded)]
    assert superseded == [Superseded("r1", "ctx-1", 1, 2, "partial")]
    restarted = outputs[-1]
    assert isinstance(restarted, Started)
    assert restarted.restarted
    assert restarted.attempt == 2
    # Late events of the old attempt change nothing.
    late = _turn(["par", "tial", "ly"], terminal="completed")
    assert _feed(assembler, late) == []
    outputs += _feed(assembler, second[1:])
    finished = _finished(outputs)
    assert len(finished) == 1
    assert (finished[0].text, finished[0].attempt) == ("whole reply", 2)
    assert _shown(outputs) == "whole reply"


def test_a_later_attempt_seen_before_its_started_still_supersedes() -> None:
    assembler = Reassembler()
    first = _turn(["old"], terminal=None)
    second = _turn(["new"], attempt=2)
    outputs = _feed(assembler, [*first, second[2], second[1]])
    assert [type(o) for o in outputs] == [Started, Text, Superseded]
    outputs += _feed(assembler, [second[0], *second[3:]])
    assert _finished(outputs)[0].text == "new"


def test_gaps_are_reported_and_skipped_when_asked_to_hold_nothing() -> None:
    assembler = Reassembler(max_held=0)
    events = _turn(["a", "b", "c"])
    missing = events[2]  # the chunk "b"
    outputs = _feed(assembler, [e for e in events if e is not missing])
    gaps = [o for o in outputs if isinstance(o, Gap)]
    assert gaps == [Gap("r1", "ctx-1", 1, (3,))]
    finished = _finished(outputs)[0]
    assert finished.text == "ac"
    assert finished.gaps == (3,)
    # The missing event, arriving late, is dropped.
    assert assembler.feed(missing) == []


def test_gaps_are_skipped_once_too_many_events_wait_behind_them() -> None:
    assembler = Reassembler(max_held=2)
    events = _turn(["a", "b", "c", "d"])
    assert _feed(assembler, [events[0], events[2], events[3]]) != []
    assert (assembler.held("r1"), assembler.missing("r1")) == (2, (2,))
    outputs = assembler.feed(events[4])
    assert [type(o) for o in outputs] == [Gap, Text, Text, Text]
    assert (assembler.held("r1"), assembler.missing("r1")) == (0, ())


def test_skip_gaps_gives_up_on_demand() -> None:
    assembler = Reassembler()
    events = _turn(["a", "b"])
    _feed(assembler, [events[0], *events[2:]])
    outputs = assembler.skip_gaps("r1")
    assert isinstance(outputs[0], Gap)
    assert _finished(outputs)[0].text == "b"
    assert assembler.skip_gaps("r1") == []


def test_forget_drops_an_unfinished_request() -> None:
    assembler = Reassembler()
    _feed(assembler, _turn(["a"], terminal=None))
    assert assembler.in_progress == ["r1"]
    assembler.forget("r1")
    assert assembler.in_progress == []


@pytest.mark.parametrize(("terminal", "status"), [("failed", "failed"), ("cancelled", "cancelled")])
def test_failed_and_cancelled_turns_finish_with_their_details(
    terminal: Terminal, status: str
) -> None:
    finished = _finished(_feed(Reassembler(), _turn(["part"], terminal=terminal)))[0]
    assert finished.status == status
    assert finished.text == "part"
    if terminal == "failed":
        assert finished.failure is not None
        assert (finished.failure.code, finished.failure.retryable) == ("llm_error", False)
    else:
        assert finished.cancel_reason == "cancelled by request"


def test_a_lone_failed_event_finishes_the_request() -> None:
    failed = _event("failed", "r1", 1, 1, code="invalid_prompt", message="x", retryable=False)
    finished = _finished(Reassembler().feed(failed))[0]
    assert finished.usage is None
    assert finished.failure is not None
    assert finished.failure.code == "invalid_prompt"


def test_unknown_event_types_keep_their_place() -> None:
    events = _turn(["a", "b"])
    # A type of a later contract version: no model of it here.
    unknown = Event("llm.stream.hint.v1", {**events[0].data, "seq": 3}, id="r1:1:3")
    shifted = [
        events[0],
        events[1],
        unknown,
        *(Event(e.type, {**e.data, "seq": e.data["seq"] + 1}, id="") for e in events[2:]),
    ]
    outputs = _feed(Reassembler(), reversed(shifted))
    assert [type(o) for o in outputs] == [Started, Text, Other, Text, UsageReported, Finished]


@pytest.mark.parametrize(
    "data",
    [
        {"request_id": "r", "attempt": 1, "seq": 1},
        {"context_id": "c", "request_id": "r", "attempt": 0, "seq": 1},
        {"context_id": "c", "request_id": "r", "attempt": 1, "seq": True},
        {"context_id": "c", "request_id": "", "attempt": 1, "seq": 1},
    ],
)
def test_malformed_events_raise(data: dict[str, Any]) -> None:
    with pytest.raises(MalformedEvent):
        Reassembler().feed(Event("llm.stream.started.v1", data))


def test_a_chunk_without_text_is_malformed() -> None:
    head = {"context_id": "c", "request_id": "r1", "attempt": 1, "seq": 2}
    with pytest.raises(MalformedEvent, match="text"):
        Reassembler().feed(Event("llm.stream.chunk.v1", {**head, "index": 0}))


_EVERY_TYPE = [*turn("r1", ["a"]), turn("r1", [], terminal="failed")[-1],
               turn("r1", [], terminal="cancelled")[-1]]  # fmt: skip


@pytest.mark.parametrize("event", _EVERY_TYPE, ids=lambda e: e.type.value)
def test_an_event_lacking_a_field_its_model_requires_is_malformed(event: ResponseEvent) -> None:
    required = [
        name
        for name, field in type(event).model_fields.items()
        if field.is_required() and name not in ResponseEvent.model_fields
    ]
    assert required
    Reassembler().feed(as_event(event))  # whole, it is read
    for name in required:
        data = {k: v for k, v in as_event(event).data.items() if k != name}
        with pytest.raises(MalformedEvent, match=name):
            Reassembler().feed(Event(event.type, data, id="x"))


def test_from_cloudevent_as_a_bulk_entry_carries_it() -> None:
    event = Event.from_cloudevent(as_cloudevent(turn("r1", [])[0]))
    assert event.id == "r1:1:1"
    assert isinstance(Reassembler().feed(event)[0], Started)
    with pytest.raises(MalformedEvent):
        Event.from_cloudevent(
            {"specversion": "1.0", "id": "x", "source": "s", "type": "t", "data": "not an object"}
        )


def test_from_http_reads_structured_and_binary_mode_alike() -> None:
    envelope = as_cloudevent(turn("r1", ["a"])[1])
    structured = Event.from_http(
        {"Content-Type": "application/cloudevents+json"}, json.dumps(envelope).encode()
    )
    attributes = {k: v for k, v in envelope.items() if k not in ("data", "datacontenttype")}
    binary = Event.from_http(
        {"Content-Type": "application/json", **{f"ce-{k}": v for k, v in attributes.items()}},
        json.dumps(envelope["data"]).encode(),
    )
    assert structured == binary == Event(envelope["type"], envelope["data"], id="r1:1:2")


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Type": "application/json"}, b'{"data": {"context_id": "c"}}'),
        ({"Content-Type": "application/cloudevents+json"}, b"not json"),
    ],
)
def test_from_http_refuses_what_is_no_cloudevent(headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(MalformedEvent, match="not a CloudEvent"):
        Event.from_http(headers, body)


def test_remember_bounds_the_finished_requests_kept() -> None:
    assembler = Reassembler(remember=1)
    _feed(assembler, _turn(["a"], request_id="r1"))
    _feed(assembler, _turn(["b"], request_id="r2"))
    # r1 was forgotten: a full redelivery of it reassembles again.
    assert _finished(_feed(assembler, _turn(["a"], request_id="r1")))[0].text == "a"


# Property-based: whatever the broker does, the final attempt's text comes out.

_texts = st.lists(st.text(max_size=5), max_size=6)


@st.composite
def _deliveries(draw: st.DrawFn) -> tuple[str, list[Event]]:
    """Earlier attempts that died part-way, a final one that completed: shuffled,
    with some events delivered more than once."""
    partial = draw(st.lists(_texts, max_size=3))
    final = draw(_texts)
    events: list[Event] = []
    for attempt, chunks in enumerate(partial, start=1):
        died_after = draw(st.integers(min_value=1, max_value=len(chunks) + 1))
        events += _turn(chunks, attempt=attempt, terminal=None)[:died_after]
    events += _turn(final, attempt=len(partial) + 1)
    duplicated = draw(st.lists(st.sampled_from(events), max_size=len(events)))
    delivered = events + duplicated
    draw(st.randoms(use_true_random=False)).shuffle(delivered)
    return "".join(final), delivered


@settings(max_examples=300, deadline=None)
@given(_deliveries())
def test_any_order_duplicates_and_restarts_reassemble_the_final_attempt(
    case: tuple[str, list[Event]],
) -> None:
    expected, delivered = case
    assembler = Reassembler()
    outputs = _feed(assembler, delivered)
    finished = _finished(outputs)
    assert len(finished) == 1
    assert finished[0].text == expected
    assert finished[0].gaps == ()
    assert _shown(outputs) == expected
    assert assembler.in_progress == []
    # Within each attempt, what was released came out in index order.
    by_attempt: dict[int, list[int]] = {}
    for output in outputs:
        if isinstance(output, Text):
            by_attempt.setdefault(output.attempt, []).append(output.index)
    for indexes in by_attempt.values():
        assert indexes == list(range(len(indexes)))


@settings(max_examples=100, deadline=None)
@given(st.lists(_texts, min_size=1, max_size=4), st.randoms(use_true_random=False))
def test_interleaved_requests_each_get_their_own_text(
    replies: list[list[str]], rng: random.Random
) -> None:
    delivered = [
        event
        for number, chunks in enumerate(replies)
        for event in _turn(chunks, request_id=f"r{number}")
    ]
    rng.shuffle(delivered)
    finished = _finished(_feed(Reassembler(), delivered))
    assert {f.request_id: f.text for f in finished} == {
        f"r{number}": "".join(chunks) for number, chunks in enumerate(replies)
    }
