"""OpenAI's chat completion shapes: the request read in, chunks and completions written out."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llm_stream_gateway.errors import GatewayError, InvalidRequest, WorkerFailed
from llm_stream_gateway.replay import StreamInfo
from worker.client.consumer import Finished
from worker.client.errors import InvalidRequest as PromptRejected
from worker.client.prompt import OutgoingPrompt, build_prompt
from worker.client.types import CompletionUsage
from worker.contract.prompt import ID_PATTERN

__all__ = [
    "ChatRequest",
    "chunk",
    "completion",
    "failure_error",
    "parse_chat_request",
    "usage_json",
]

# Worker failure codes (contract section 2) as HTTP statuses.
_FAILURE_STATUS = {
    "invalid_prompt": 400,
    "unknown_component": 404,
    "timeout": 504,
    "llm_unavailable": 503,
}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    prompt: OutgoingPrompt
    context_id: str
    model: str
    stream: bool
    include_usage: bool
    background: bool


def _text(content: Any, where: str) -> str:
    """OpenAI allows content as a string or a list of parts; the worker takes text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, Mapping) and part.get("type") == "text"):
                raise InvalidRequest("only text content parts are supported", param=where)
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise InvalidRequest("content must be a string or a list of text parts", param=where)


def parse_chat_request(
    body: Any, *, context_header: str | None, request_header: str | None, default_model: str
) -> ChatRequest:
    """Validate before publishing: whatever the worker would reject is a 400 here."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("the body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("you must provide a model parameter", param="model")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise InvalidRequest("messages must be a non-empty list", param="messages")
    messages = []
    for n, message in enumerate(raw_messages):
        if not isinstance(message, Mapping):
            raise InvalidRequest("each message must be an object", param=f"messages.{n}")
        messages.append(
            {
                "role": str(message.get("role")),
                "content": _text(message.get("content"), f"messages.{n}.content"),
            }
        )
    if body.get("n", 1) != 1:
        raise InvalidRequest("only n=1 is supported", param="n")
    context_id = context_header or body.get("context_id")
    if context_id is not None and not (
        isinstance(context_id, str) and re.match(ID_PATTERN, context_id)
    ):
        raise InvalidRequest(f"the context id must match {ID_PATTERN}", param="X-Context-Id")
    # The gateway names the conversation itself when the caller does not, so that it can
    # partition the prompt by it and return it at once (header X-Context-Id).
    context_id = context_id or f"ctx-{uuid.uuid4().hex}"
    if request_header is not None and not re.match(ID_PATTERN, request_header):
        raise InvalidRequest(f"X-Request-Id must match {ID_PATTERN}", param="X-Request-Id")
    metadata = body.get("metadata")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, Mapping):
        raise InvalidRequest("stream_options must be an object", param="stream_options")
    try:
        prompt = build_prompt(
            messages,
            context_id=context_id,
            temperature=body.get("temperature"),
            llm_component=None if model == default_model else model,
            max_tokens=max_tokens,
            history=body.get("history", True),
            metadata=metadata,
            request_id=request_header or f"gw-{uuid.uuid4().hex}",
        )
    except PromptRejected as exc:
        raise InvalidRequest(str(exc)) from exc
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream must be a boolean", param="stream")
    return ChatRequest(
        prompt=prompt,
        context_id=context_id,
        model=model,
        stream=stream,
        include_usage=bool(stream_options.get("include_usage", False)),
        background=bool(body.get("background", False)),
    )


def usage_json(usage: CompletionUsage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def chunk(
    info: StreamInfo,
    *,
    delta: Mapping[str, Any] | None = None,
    finish_reason: str | None = None,
    usage: CompletionUsage | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": info.request_id,
        "object": "chat.completion.chunk",
        "created": info.created,
        "model": info.model,
        "choices": (
            []
            if usage is not None
            else [{"index": 0, "delta": dict(delta or {}), "finish_reason": finish_reason}]
        ),
    }
    if usage is not None:
        body["usage"] = usage_json(usage)
    if extra:
        body.update(extra)
    return body


def failure_error(finished: Finished) -> GatewayError | None:
    """The error a `failed` or `cancelled` ending is to a caller; None when it completed."""
    if finished.failure is not None:
        code = finished.failure.code
        return WorkerFailed(
            f"the worker failed: {finished.failure.message}",
            code=code,
            status=_FAILURE_STATUS.get(code, 502),
        )
    if finished.status == "cancelled":
        return WorkerFailed(
            f"the reply was cancelled: {finished.cancel_reason or 'cancelled'}",
            code="cancelled",
            status=409,
        )
    return None


def completion(info: StreamInfo, finished: Finished) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": info.request_id,
        "object": "chat.completion",
        "created": info.created,
        "model": info.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": finished.text},
                "finish_reason": finished.finish_reason or "stop",
            }
        ],
        "context_id": finished.context_id,
        "attempt": finished.attempt,
    }
    if finished.usage is not None:
        body["usage"] = usage_json(finished.usage)
    return body
