"""What any Dapr service may publish to the worker: prompts and cancellations."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "DEFAULT_MAX_MESSAGES",
    "DEFAULT_MAX_PROMPT_BYTES",
    "ID_PATTERN",
    "CancelRequest",
    "Identifier",
    "Message",
    "Prompt",
]

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
# The contract's limits that a deployment may change (the worker's settings).
DEFAULT_MAX_PROMPT_BYTES = 256 * 1024
DEFAULT_MAX_MESSAGES = 256

# The models are strict: the contract's JSON types exactly, no coercion ("yes" is not a
# boolean, "0.5" not a number).


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str


class Prompt(BaseModel):
    """Section 1 of the contract. Unknown fields are rejected so typos do not pass silently.

    The number of messages and the whole prompt's size have configurable limits, checked
    at intake (`WORKER_MAX_MESSAGES`, `WORKER_MAX_PROMPT_BYTES`); the schema states their
    defaults.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        validate_by_name=True,
        validate_by_alias=True,
        json_schema_extra={"x-max-bytes": DEFAULT_MAX_PROMPT_BYTES},
    )

    messages: list[Message] = Field(
        min_length=1, json_schema_extra={"maxItems": DEFAULT_MAX_MESSAGES}
    )
    context_id: Identifier | None = None
    request_id: Identifier | None = None
    history: bool = True
    llm_component: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(None, ge=1)
    scrub_pii: bool = Field(False, alias="scrubPII")
    reply_topic: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)


class CancelRequest(BaseModel):
    """Section 4: without a request id, every in-flight and queued turn of the context stops."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    context_id: Identifier
    request_id: Identifier | None = None
