"""The worker's own CloudEvent encoder writes what the CloudEvents SDK writes."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from worker.contract.events import (
    Cancelled,
    Chunk,
    Completed,
    EventEncoder,
    Failed,
    ResponseEvent,
    Started,
    UsageReport,
    to_cloudevent,
)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
COMMON: dict[str, Any] = {"context_id": 'ctx-é"1', "request_id": "req/1", "attempt": 2}
EVENTS: list[ResponseEvent] = [
    Started(**COMMON, seq=1, llm_component="echo", model="m", metadata={"k": "v"}),
    Chunk(**COMMON, seq=2, index=0, text='Hé said "hi"\n\u2028😀'),
    UsageReport(
        **COMMON, seq=3, prompt_tokens=3, completion_tokens=4, total_tokens=7, source="provider"
    ),
    Completed(**COMMON, seq=4, finish_reason="stop", chunks=1, text_length=9),
    Failed(**COMMON, seq=5, code="llm_error", message="boom", retryable=False),
    Cancelled(**COMMON, seq=6, reason="asked"),
]


def _without_time(body: bytes) -> tuple[list[str], dict[str, Any]]:
    event = json.loads(body)
    datetime.fromisoformat(event.pop("time"))  # present, and a timestamp
    return list(event), event


@pytest.mark.parametrize("traceparent", [TRACEPARENT, None])
@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type.name.lower())
def test_encoder_matches_the_sdk_attribute_for_attribute_in_the_same_order(
    event: ResponseEvent, traceparent: str | None
) -> None:
    encoder = EventEncoder(
        context_id=event.context_id,
        request_id=event.request_id,
        attempt=event.attempt,
        source="/llm-stream-worker",
        traceparent=traceparent,
    )
    ours = _without_time(encoder.encode(event))
    sdk = _without_time(to_cloudevent(event, source="/llm-stream-worker", traceparent=traceparent))
    assert ours == sdk
    assert ours[1]["id"] == f"req/1:2:{event.seq}"
    assert ours[1]["sequence"] == f"{event.seq:010d}"
    if traceparent:
        # Dapr keeps an envelope's traceparent only next to a `traceid` (see _attributes).
        assert ours[1]["traceparent"] == ours[1]["traceid"] == TRACEPARENT
    else:
        assert "traceparent" not in ours[1]


def test_a_chunk_encoded_from_its_fields_equals_one_encoded_from_the_model() -> None:
    encoder = EventEncoder(
        context_id="c", request_id="r", attempt=1, source="/w", traceparent=TRACEPARENT
    )
    chunk = Chunk(context_id="c", request_id="r", attempt=1, seq=7, index=5, text="tok")
    direct = encoder.encode_chunk(7, 5, "tok")
    assert _without_time(direct) == _without_time(encoder.encode(chunk))


@pytest.mark.parametrize("text", ["caf\u00e9 \U0001f600", "lone \ud800 surrogate", '\x00\n"'])
def test_any_text_a_chunk_can_hold_is_encoded_as_the_sdk_would(text: str) -> None:
    # Non-ASCII, control characters, and the lone surrogate JSON escapes allow (an echoed
    # prompt may hold one): read back, the same text.
    encoder = EventEncoder(context_id="c", request_id="r", attempt=1, source="/w", traceparent=None)
    chunk = Chunk(context_id="c", request_id="r", attempt=1, seq=1, index=0, text=text)
    ours = _without_time(encoder.encode_chunk(1, 0, text))
    assert ours == _without_time(to_cloudevent(chunk, source="/w", traceparent=None))
    assert ours[1]["data"]["text"] == text
