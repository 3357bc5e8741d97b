"""Build the prompt a client publishes, checked against the contract before it leaves."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Unpack

from pydantic import ValidationError

from worker.client.errors import InvalidRequest
from worker.client.options import GenerateOptions
from worker.contract.prompt import Prompt

__all__ = ["Messages", "OutgoingPrompt", "build_prompt", "new_request_id"]

# A list of {"role", "content"} mappings, or one string: a single user message.
Messages = str | Sequence[Mapping[str, str]]


@dataclass(frozen=True, slots=True)
class OutgoingPrompt:
    request_id: str
    body: bytes  # plain JSON: Dapr wraps it in a CloudEvent
    # The conversation's context id, when the caller gave one: published as the
    # `partitionKey`, so a partitioned broker (Kafka) keeps the conversation's turns in
    # one partition, in order. A new conversation (no id yet) may land anywhere.
    context_id: str | None = None

    @property
    def publish_metadata(self) -> dict[str, str]:
        return {"partitionKey": self.context_id} if self.context_id else {}


def new_request_id() -> str:
    return f"client-{uuid.uuid4().hex}"


def build_prompt(
    messages: Messages,
    *,
    reply_topic: str | None = None,
    request_id: str | None = None,
    **options: Unpack[GenerateOptions],
) -> OutgoingPrompt:
    """The prompt's JSON; a value the worker would reject raises `InvalidRequest` here."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    # Set here, not by Dapr, so the client can pick its own events out of the topic.
    request_id = request_id or new_request_id()
    fields: dict[str, object] = {"messages": [dict(m) for m in messages], "request_id": request_id}
    # Only what was given: the worker's defaults stay the worker's.
    context_id = options.get("context_id")
    metadata = options.get("metadata")
    optional: dict[str, object | None] = {
        "context_id": context_id,
        "temperature": options.get("temperature"),
        "llm_component": options.get("llm_component"),
        "max_tokens": options.get("max_tokens"),
        "metadata": dict(metadata) if metadata else None,
        "reply_topic": reply_topic,
        "scrub_pii": options.get("scrubPII") or None,
        "history": None if options.get("history", True) else False,
    }
    fields.update({name: value for name, value in optional.items() if value is not None})
    try:
        prompt = Prompt.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise InvalidRequest(f"{where}: {error['msg']}") from exc
    body = prompt.model_dump(mode="json", exclude_unset=True)
    return OutgoingPrompt(request_id, json.dumps(body).encode(), context_id)
