"""Prompt validation: every broken rule is rejected with a message naming the field."""

from __future__ import annotations

import json

import pytest

from worker.contract.envelopes import InboundMessage
from worker.contract.ids import assign_context_id
from worker.pipeline.intake import Accepted, Limits, Rejected, read_prompt

LIMITS = Limits(
    max_prompt_bytes=4096,
    max_messages=4,
    reply_topics=frozenset({"responses", "other-responses"}),
    default_reply_topic="responses",
)
GOOD = {"messages": [{"role": "user", "content": "Hi"}], "context_id": "ctx-1"}


def _message(
    payload: object, *, raw: bytes | None = None, event_id: str = "evt-1"
) -> InboundMessage:
    data = raw if raw is not None else json.dumps(payload).encode()
    return InboundMessage(
        id=event_id, topic="prompts", data=data, data_content_type="application/json"
    )


def _rejected(payload: object, **kwargs: object) -> Rejected:
    result = read_prompt(_message(payload, **kwargs), LIMITS)  # type: ignore[arg-type]
    assert isinstance(result, Rejected), result
    assert result.error.code == "invalid_prompt"
    return result


def test_valid_prompt_defaults() -> None:
    result = read_prompt(_message(GOOD), LIMITS)
    assert isinstance(result, Accepted)
    assert result.context_id == "ctx-1"
    assert result.request_id == "evt-1"  # defaults to the CloudEvent id
    assert result.reply_topic == "responses"
    assert result.prompt.history is True
    assert result.prompt.scrub_pii is False


def test_all_fields_and_the_scrubPII_alias() -> None:
    payload = {
        **GOOD,
        "request_id": "turn:7",
        "history": False,
        "llm_component": "openai",
        "temperature": 0.7,
        "max_tokens": 50,
        "scrubPII": True,
        "reply_topic": "other-responses",
        "metadata": {"user": "u1"},
    }
    result = read_prompt(_message(payload), LIMITS)
    assert isinstance(result, Accepted)
    prompt = result.prompt
    assert (prompt.temperature, prompt.max_tokens, prompt.scrub_pii) == (0.7, 50, True)
    assert result.request_id == "turn:7"
    assert result.reply_topic == "other-responses"
    snake = read_prompt(_message({**GOOD, "scrub_pii": True}), LIMITS)
    assert isinstance(snake, Accepted)
    assert snake.prompt.scrub_pii is True


def test_missing_context_id_gets_a_stable_fresh_one() -> None:
    first = read_prompt(_message({"messages": GOOD["messages"]}, event_id="e9"), LIMITS)
    again = read_prompt(_message({"messages": GOOD["messages"]}, event_id="e9"), LIMITS)
    other = read_prompt(_message({"messages": GOOD["messages"]}, event_id="e10"), LIMITS)
    assert isinstance(first, Accepted)
    assert isinstance(again, Accepted)
    assert isinstance(other, Accepted)
    assert first.context_id == again.context_id == assign_context_id("e9")
    assert first.context_id != other.context_id


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"context_id": "c"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({**GOOD, "context_id": "has space"}, "context_id"),
        ({**GOOD, "context_id": "x" * 129}, "context_id"),
        ({**GOOD, "request_id": "no/slash"}, "request_id"),
        ({**GOOD, "temperature": 2.5}, "temperature"),
        ({**GOOD, "temperature": "hot"}, "temperature"),
        ({**GOOD, "max_tokens": 0}, "max_tokens"),
        ({**GOOD, "history": "yes please"}, "history"),
        ({**GOOD, "metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ({**GOOD, "metadata": {"k": 1}}, "metadata.k"),
        ({**GOOD, "surprise": 1}, "surprise"),
        ({**GOOD, "reply_topic": "somebody-elses-topic"}, "reply_topic"),
        ({"messages": [{"role": "user", "content": "x"}] * 5, "context_id": "c"}, "messages"),
    ],
)
def test_broken_rules_name_the_field(payload: dict[str, object], field: str) -> None:
    rejected = _rejected(payload)
    assert rejected.error.message.startswith(field), rejected.error.message


def test_not_json() -> None:
    rejected = _rejected(None, raw=b"{not json")
    assert "not valid JSON" in rejected.error.message
    # The CloudEvent id still identifies the turn, so the publisher can be told.
    assert rejected.request_id == "evt-1"
    assert rejected.context_id == assign_context_id("evt-1")


def test_not_an_object() -> None:
    assert "JSON object" in _rejected(["a"]).error.message


def test_empty_data() -> None:
    assert "no data" in _rejected(None, raw=b"").error.message


def test_oversized() -> None:
    payload = {**GOOD, "messages": [{"role": "user", "content": "x" * 5000}]}
    rejected = _rejected(payload)
    assert "bytes; the limit is 4096" in rejected.error.message
    assert rejected.context_id == "ctx-1"


def test_ids_read_from_an_invalid_prompt() -> None:
    rejected = _rejected({"context_id": "ctx-5", "request_id": "r-5", "messages": "nope"})
    assert (rejected.context_id, rejected.request_id) == ("ctx-5", "r-5")


def test_unreadable_context_id_means_no_failed_event() -> None:
    rejected = _rejected({"context_id": "bad id!", "messages": GOOD["messages"]})
    assert rejected.context_id is None


def test_json_nested_thousands_deep_is_rejected_not_a_crash() -> None:
    # json.loads raises RecursionError here; it used to be answered RETRY forever.
    deep = b'{"messages": ' + b"[" * 1500 + b"]" * 1500 + b"}"
    result = _rejected(None, raw=deep)
    assert result.error.message == "prompt is not valid JSON: nested too deeply"
    assert result.request_id == "evt-1"


def test_deep_json_over_the_size_limit_is_rejected_for_its_size() -> None:
    deep = b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    result = _rejected(None, raw=deep)
    assert result.error.message == "prompt is 10014 bytes; the limit is 4096"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("scrub_pii", "yes"),
        ("scrubPII", 1),
        ("history", "false"),
        ("temperature", "0.5"),
        ("max_tokens", 5.0),
        ("max_tokens", "5"),
        ("context_id", 7),
    ],
)
def test_values_of_the_wrong_json_type_are_not_coerced(field: str, value: object) -> None:
    result = _rejected({**GOOD, field: value})
    assert result.error.message.startswith(f"{field}: ")


def test_the_contract_types_pass_strict_validation() -> None:
    prompt = {**GOOD, "scrub_pii": True, "history": False, "temperature": 1, "max_tokens": 9}
    result = read_prompt(_message(prompt), LIMITS)
    assert isinstance(result, Accepted)
    assert result.prompt.temperature == 1.0


def test_a_rejected_prompt_is_answered_on_its_allowed_reply_topic() -> None:
    result = _rejected({**GOOD, "reply_topic": "other-responses", "history": "no"})
    assert result.reply_topic == "other-responses"


def test_a_rejected_prompt_with_a_foreign_reply_topic_is_answered_on_the_default() -> None:
    result = _rejected({**GOOD, "reply_topic": "somebody-elses-topic"})
    assert result.reply_topic == "responses"


def test_the_rejection_names_fields_but_never_quotes_their_values() -> None:
    secret = "my card is 4111 1111 1111 1111"
    result = _rejected({"messages": [{"role": "wizard", "content": secret}], "history": secret})
    assert "messages.0.role" in result.error.message
    assert secret not in result.error.message
