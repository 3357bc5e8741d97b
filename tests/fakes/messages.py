"""Deliveries as the pipeline receives them, and LLM scripts, for unit tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from worker.contract.envelopes import InboundMessage
from worker.llm.base import Finish, StreamItem, TextDelta

__all__ = ["cancel", "prompt", "words"]


def words(n: int) -> list[StreamItem | Exception]:
    return [*(TextDelta(f"w{i} ") for i in range(n)), Finish("stop")]


def _extensions(published_at: float | None) -> dict[str, object]:
    if published_at is None:
        return {}
    return {"time": datetime.fromtimestamp(published_at, UTC).isoformat()}


def prompt(
    request_id: str,
    context_id: str = "ctx",
    text: str = "hi",
    *,
    published_at: float | None = None,
    llm_component: str | None = None,
) -> InboundMessage:
    payload: dict[str, Any] = {
        "messages": [{"role": "user", "content": text}],
        "context_id": context_id,
        "request_id": request_id,
    }
    if llm_component is not None:
        payload["llm_component"] = llm_component
    return InboundMessage(
        id=f"evt-{request_id}",
        topic="prompts",
        data=json.dumps(payload).encode(),
        data_content_type="application/json",
        extensions=_extensions(published_at),
    )


def cancel(
    context_id: str, request_id: str | None = None, *, published_at: float | None = None
) -> InboundMessage:
    payload = {"context_id": context_id, **({"request_id": request_id} if request_id else {})}
    return InboundMessage(
        id="cancel-evt",
        topic="cancellations",
        data=json.dumps(payload).encode(),
        data_content_type="application/json",
        extensions=_extensions(published_at),
    )
