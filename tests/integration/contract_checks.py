"""Assertions of the wire contract (shared/contract.md, sections 2 and 3) on received events."""

from __future__ import annotations

from collections.abc import Sequence

from testbed.stack import TRACE_ID, Received
from tests.fakes.events import MODELS

__all__ = ["assert_turn", "reply_text"]

# Every field of each event type's data, from the contract's models: the worker writes
# them all, defaults included.
_FIELDS = {kind: set(model.model_fields) for kind, model in MODELS.items()}


def reply_text(events: Sequence[Received]) -> str:
    chunks = sorted((e for e in events if e.kind == "chunk"), key=lambda e: e.data["index"])
    return "".join(e.data["text"] for e in chunks)


def assert_turn(
    events: Sequence[Received],
    *,
    request_id: str,
    context_id: str,
    terminal: str = "completed",
    attempt: int = 1,
    topic: str = "responses",
    trace: bool = True,
) -> None:
    """Every attribute and data field of one request's events, and their order.

    `trace`: the events continue the stack's trace (False for a prompt that had none).
    """
    ordered = sorted(events, key=lambda e: e.data["seq"])
    kinds = [e.kind for e in ordered]
    assert kinds[0] == "started", kinds
    assert kinds[-2:] == ["usage", terminal], kinds
    assert set(kinds[1:-2]) <= {"chunk"}, kinds
    assert [e.data["seq"] for e in ordered] == list(range(1, len(ordered) + 1))
    assert len({e.id for e in ordered}) == len(ordered), "duplicate deliveries"
    # Events went out one at a time, each after the previous one was acknowledged;
    # a single Redis stream then delivers them in that order.
    assert [e.data["seq"] for e in events] == sorted(e.data["seq"] for e in events)
    for event in ordered:
        seq = event.data["seq"]
        assert event.topic == topic
        assert event.id == f"{request_id}:{attempt}:{seq}"
        assert event.spec_version == "1.0"
        assert event.source == "/llm-stream-worker"
        assert event.type == f"llm.stream.{event.kind}.v1"
        assert event.data_content_type == "application/json"
        assert event.extensions["subject"] == context_id
        assert event.extensions["partitionkey"] == context_id
        assert event.extensions["sequence"] == f"{seq:010d}"
        if trace:  # the prompt's trace, continued by the worker through its sidecar
            assert event.extensions["traceparent"].split("-")[1] == TRACE_ID
        assert set(event.data) == _FIELDS[event.kind], event.data
        assert event.data["context_id"] == context_id
        assert event.data["request_id"] == request_id
        assert event.data["attempt"] == attempt
    chunks = [e for e in ordered if e.kind == "chunk"]
    assert [e.data["index"] for e in chunks] == list(range(len(chunks)))
    usage = ordered[-2].data
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["source"] in {"provider", "estimated"}
    if terminal == "completed":
        done = ordered[-1].data
        assert done["chunks"] == len(chunks)
        assert done["text_length"] == len(reply_text(ordered))
