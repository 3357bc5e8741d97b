"""What any Dapr service may publish to the worker: prompts and cancellations."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

__all__ = ["ID_PATTERN", "CancelRequest", "Identifier", "Message", "Prompt"]

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str


class Prompt(BaseModel):
    """Section 1 of the contract. Unknown fields are rejected so typos do not pass silently."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True
    )

    messages: list[Message] = Field(min_length=1)
    context_id: Identifier | None = None
    request_id: Identifier | None = None
    history: bool = True
    llm_component: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(None, ge=1)
    scrub_pii: bool = Field(False, alias="scrubPII")
    reply_topic: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _at_most_16(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 16:
            raise ValueError(f"at most 16 entries, got {len(value)}")
        return value


class CancelRequest(BaseModel):
    """Section 4: without a request id, every in-flight and queued turn of the context stops."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    context_id: Identifier
    request_id: Identifier | None = None
