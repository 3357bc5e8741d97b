"""The options of the client, each declared once: those of a prompt (`GenerateOptions`,
the keywords of every `generate`, of `build_prompt` and of `llm-stream ask`) and those
of a client (`ClientOptions`, the keywords of `AsyncClient` and `Client`).

Keywords build them (`generate(messages, context_id=..., temperature=...)`), as the
contract's section 5 writes the call; a caller may also keep one and pass it on
(`generate(messages, **options)`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

from worker.client.ports import Transport

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "DEFAULT_TIMEOUT", "ClientOptions", "GenerateOptions"]

DEFAULT_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 5.0


class GenerateOptions(TypedDict, total=False):
    """The options of a prompt: the keywords of every `generate` (besides `messages` and
    `stream`), of `build_prompt`, and what `llm-stream ask` reads from its flags.

    Declared here only; what is not given is left to the worker (its defaults), but
    for `timeout`, which the client that sends the prompt applies.
    """

    context_id: str | None
    temperature: float | None
    scrubPII: bool  # the contract's spelling (section 5)
    llm_component: str | None
    max_tokens: int | None
    history: bool
    metadata: Mapping[str, str] | None
    # Seconds to wait for each next event of the reply; None: the client's. Not a
    # deadline of the call: the idle limit of the stream.
    timeout: float | None


class ClientOptions(TypedDict, total=False):
    """The keywords of `AsyncClient` and `Client` (besides `address`); defaults in brackets.

    Names (the contract's by default):
    `pubsub` ["pubsub"], `prompt_topic` ["prompts"], `response_topic` ["responses"],
    `cancel_topic` ["cancellations"], and `reply_topic` [None: `response_topic`], which
    the prompts then ask the worker to answer on; `llm_component` [None: the worker's].
    `timeout` [60 s]: how long to wait for each next event of a reply;
    `connect_timeout` [5 s]: how long to wait on the sidecar itself;
    `api_token` [$DAPR_API_TOKEN]; `transport` [a `SidecarClient` of the client's own].
    """

    pubsub: str
    prompt_topic: str
    response_topic: str
    reply_topic: str | None
    cancel_topic: str
    llm_component: str | None
    timeout: float | None
    connect_timeout: float
    api_token: str | None
    transport: Transport | None
