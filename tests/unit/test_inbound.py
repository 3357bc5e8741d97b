"""A delivery's trace context: continued when it is one, ignored when it is not."""

from __future__ import annotations

import pytest

from worker.pipeline.inbound import InboundMessage

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
