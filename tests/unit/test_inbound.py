"""A delivery's trace context: continued when it is one, ignored when it is not."""

from __future__ import annotations

import pytest

from worker.contract.envelopes import InboundMessage
from worker.contract.trace import TraceContext

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _with(traceparent: object) -> InboundMessage:
    return InboundMessage(
        id="e",
        topic="prompts",
        data=b"{}",
        data_content_type="application/json",
        extensions={"traceparent": traceparent},
    )


def test_a_w3c_traceparent_is_continued() -> None:
    assert _with(VALID).traceparent == VALID


@pytest.mark.parametrize(
    "value",
    [
        VALID + "\n",
        VALID.replace("4bf9", "4bé9"),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx-forged: 1",
        VALID.upper(),
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "",
        42,
        None,
    ],
)
def test_anything_else_is_no_trace(value: object) -> None:
    assert _with(value).traceparent is None


@pytest.mark.parametrize("state", ["vendor=a\nforged: 1", "vendor=é", "x" * 513, 7])
def test_a_tracestate_that_is_no_header_value_is_dropped_and_the_trace_kept(state: object) -> None:
    context = TraceContext.of({"traceparent": VALID, "tracestate": state})
    assert context == TraceContext(VALID, None)


def test_a_well_formed_tracestate_goes_with_its_trace() -> None:
    context = TraceContext.of({"traceparent": VALID, "tracestate": "congo=t61rcWkgMzE"})
    assert context == TraceContext(VALID, "congo=t61rcWkgMzE")
