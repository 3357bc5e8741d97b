"""The gateway reads OpenAI's request shape and rejects, before publishing, what is wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_stream_gateway.errors import InvalidRequest
from llm_stream_gateway.openai_wire import parse_chat_request


def _parse(body: Any, *, context: str | None = None, request: str | None = None) -> Any:
    return parse_chat_request(
        body, context_header=context, request_header=request, default_model="default"
    )


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": "default", "messages": [{"role": "user", "content": "hi"}], **fields}


def test_a_request_becomes_a_prompt_of_the_contract() -> None:
    chat = _parse(
        _chat(
            model="echo",
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": t} for t in "ab"]},
            ],
            temperature=0.5,
            max_completion_tokens=9,
            metadata={"k": "v"},
            stream=True,
            stream_options={"include_usage": True},
        ),
        context="ctx-7",
        request="req-7",
    )  # fmt: skip
    prompt = json.loads(chat.prompt.body)
    assert prompt == {
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}],
        "request_id": "req-7",
        "context_id": "ctx-7",
        "temperature": 0.5,
        "llm_component": "echo",
        "max_tokens": 9,
        "metadata": {"k": "v"},
    }
    assert (chat.stream, chat.include_usage, chat.context_id) == (True, True, "ctx-7")


def test_the_default_model_leaves_the_component_to_the_worker_and_a_context_is_named() -> None:
    chat = _parse(_chat())
    prompt = json.loads(chat.prompt.body)
    assert "llm_component" not in prompt
    assert prompt["context_id"] == chat.context_id
    assert chat.context_id.startswith("ctx-")
    assert chat.prompt.request_id.startswith("gw-")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], None),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        (_chat(messages=[]), "messages"),
        (_chat(messages=["hi"]), "messages.0"),
        (_chat(messages=[{"role": "user", "content": [{"type": "image"}]}]), "messages.0.content"),
        (_chat(n=2), "n"),
        (_chat(stream="yes"), "stream"),
        (_chat(stream_options="x"), "stream_options"),
        (_chat(context_id="no spaces"), "X-Context-Id"),
    ],
)  # fmt: skip
def test_invalid_requests_name_their_parameter(body: Any, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as error:
        _parse(body)
    assert error.value.param == param
    assert error.value.status == 400


@pytest.mark.parametrize(
    "body", [_chat(messages=[{"role": "wizard", "content": "x"}]), _chat(temperature=9)]
)
def test_what_the_contract_rejects_is_rejected_before_publishing(body: Any) -> None:
    with pytest.raises(InvalidRequest):
        _parse(body)


def test_a_request_id_header_must_be_a_contract_id() -> None:
    with pytest.raises(InvalidRequest) as error:
        _parse(_chat(), request="bad id")
    assert error.value.param == "X-Request-Id"
