"""From a delivered message to a validated prompt, or to a rejection that says why."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pydantic import ValidationError

from worker.contract.envelopes import InboundMessage
from worker.contract.ids import assign_context_id
from worker.contract.prompt import ID_PATTERN, Prompt
from worker.errors import InvalidPrompt

__all__ = ["Accepted", "Limits", "Rejected", "read_prompt"]

_ID = re.compile(ID_PATTERN)


@dataclass(frozen=True, slots=True)
class Limits:
    max_prompt_bytes: int
    max_messages: int
    reply_topics: frozenset[str]
    default_reply_topic: str


@dataclass(frozen=True, slots=True)
class Accepted:
    prompt: Prompt
    context_id: str
    request_id: str
    reply_topic: str


@dataclass(frozen=True, slots=True)
class Rejected:
    error: InvalidPrompt
    # Where they can be read, so the publisher can be told with a `failed` event.
    context_id: str | None
    request_id: str | None
    reply_topic: str


def read_prompt(message: InboundMessage, limits: Limits) -> Accepted | Rejected:
    raw: object = None
    try:
        if len(message.data) > limits.max_prompt_bytes:
            raise InvalidPrompt(
                f"prompt is {len(message.data)} bytes; the limit is {limits.max_prompt_bytes}"
            )
        if not message.data:
            raise InvalidPrompt(
                "prompt has no data (publish it as JSON with content type application/json)"
            )
        raw = _parse_json(message.data)
        if not isinstance(raw, dict):
            raise InvalidPrompt(f"prompt must be a JSON object, got {type(raw).__name__}")
        messages = raw.get("messages")
        if isinstance(messages, list) and len(messages) > limits.max_messages:
            raise InvalidPrompt(
                f"messages: {len(messages)} messages; the limit is {limits.max_messages}"
            )
        try:
            prompt = Prompt.model_validate(raw)
        except ValidationError as exc:
            raise InvalidPrompt(_describe(exc)) from exc
        reply_topic = prompt.reply_topic or limits.default_reply_topic
        if reply_topic not in limits.reply_topics:
            raise InvalidPrompt(
                f"reply_topic: {reply_topic!r} is not allowed "
                f"(allowed: {', '.join(sorted(limits.reply_topics))})"
            )
    except InvalidPrompt as error:
        if raw is None:
            raw = _try_json(message.data)  # an oversized prompt still names its ids
        request_id, context_id = _readable_ids(raw, message.id)
        return Rejected(error, context_id, request_id, _readable_reply_topic(raw, limits))
    request_id = prompt.request_id or message.id
    if not _ID.match(request_id):
        # The CloudEvent id is our default key; one outside the alphabet cannot be used.
        return Rejected(
            InvalidPrompt(
                f"request_id: the CloudEvent id {request_id!r} is not a valid request id"
            ),
            None,
            None,
            reply_topic,
        )
    context_id = prompt.context_id or assign_context_id(request_id)
    return Accepted(prompt, context_id, request_id, reply_topic)


def _parse_json(data: bytes) -> object:
    """The prompt's JSON; any input that cannot be read is an `InvalidPrompt`, never a crash."""
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidPrompt(f"prompt is not valid JSON: {exc}") from exc
    except RecursionError:
        # Thousands of nested brackets: no prompt is shaped like that.
        raise InvalidPrompt("prompt is not valid JSON: nested too deeply") from None


def _try_json(data: bytes) -> object:
    try:
        return _parse_json(data)
    except InvalidPrompt:
        return None


def _readable_reply_topic(raw: object, limits: Limits) -> str:
    """A rejected prompt's allowed `reply_topic`, so its publisher hears where it listens."""
    topic = raw.get("reply_topic") if isinstance(raw, dict) else None
    if isinstance(topic, str) and topic in limits.reply_topics:
        return topic
    return limits.default_reply_topic


def _readable_ids(raw: object, event_id: str) -> tuple[str | None, str | None]:
    fields = raw if isinstance(raw, dict) else {}
    request_id = fields.get("request_id", event_id)
    if not isinstance(request_id, str) or not _ID.match(request_id):
        return None, None
    context_id = fields.get("context_id")
    if context_id is None:
        return request_id, assign_context_id(request_id)
    if not isinstance(context_id, str) or not _ID.match(context_id):
        return request_id, None
    return request_id, context_id


_MAX_NAMED_ERRORS = 5


def _describe(error: ValidationError) -> str:
    """The broken fields and why, never their values (a value may be the prompt's text)."""
    items = error.errors(include_url=False, include_input=False, include_context=False)
    parts = [
        f"{'.'.join(str(p) for p in item['loc']) or 'prompt'}: {item['msg']}"
        for item in items[:_MAX_NAMED_ERRORS]
    ]
    if len(items) > _MAX_NAMED_ERRORS:
        parts.append(f"and {len(items) - _MAX_NAMED_ERRORS} more")
    return "; ".join(parts)
