"""Fuzzing the worker on the real daprd and Redis: whatever comes in, it stays up.

Hypothesis generates prompts (valid and broken), raw CloudEvents around them, and raw
app-callback requests. They are sent through the sidecar, as any Dapr app could, and
straight at the app port, as anyone holding the app token could. For every input:

- the worker stays up;
- it ends as a completed reply, or as a `failed` event and the prompt on the
  dead-letter topic (through the sidecar), or as SUCCESS/DROP (at the app port), on
  its first delivery: the worker never answers RETRY, so nothing is redelivered;
- no prompt text, API key or token appears in any line the worker logs;
- the next valid prompt is served.

The examples are drawn once (derandomized, so CI sees the same ones every run), then
sent; `FUZZ_EXAMPLES` draws more, `FUZZ_SEED` others. Each test prints its figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import string
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import pytest
from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from testbed.components import inbound_retries
from testbed.scrape import scrape, series
from testbed.stack import TERMINAL, Stack
from tests.integration.contract_checks import assert_turn, reply_text

pytestmark = pytest.mark.dapr

MakeStack = Callable[..., Awaitable[Stack]]
T = TypeVar("T")

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "120"))
SEED = os.environ.get("FUZZ_SEED")
# In every message's content: it must never show up in a log line.
MARKER = "PROMPT-TEXT-7f3a9c"
API_KEY = "sk-fuzz-0123456789abcdefghijklmnopqrstuv"
TOKEN = "app-token-fuzz-9b8a7c6d5e4f"
Status = appcallback_pb2.TopicEventResponse.TopicEventResponseStatus
# Failure codes of prompts that are dead-lettered (their `failed` event comes first).
_DROPPED = {"invalid_prompt", "unknown_component"}


def _draw(strategy: st.SearchStrategy[T], count: int) -> list[T]:
    """`count` examples of `strategy`, drawn up front (the sending is asynchronous)."""
    drawn: list[T] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        derandomize=SEED is None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: T) -> None:
        drawn.append(value)

    if SEED is not None:
        collect = seed(int(SEED))(collect)
    collect()
    return drawn


# --- strategies ---------------------------------------------------------------------

_VALID_ID = st.from_regex(r"\A[A-Za-z0-9._:-]{1,24}\Z")
_ANY_ID = st.one_of(_VALID_ID, st.text(max_size=24), st.integers(), st.none())
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_CONTENT = st.text(max_size=40).map(lambda text: f"{MARKER} {text}")
_MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "wizard", ""]),
        "content": st.one_of(_CONTENT, _CONTENT, st.integers()),
    },
    optional={"name": st.text(max_size=5)},
)
_PROMPT = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(_MESSAGE, min_size=1, max_size=4), st.lists(_MESSAGE), _JSON)},
    optional={
        "context_id": _ANY_ID,
        "request_id": _ANY_ID,
        "history": st.one_of(st.booleans(), st.sampled_from(["yes", "false", 1, None])),
        "llm_component": st.sampled_from(["echo", "dapr-echo", "nope", "", None]),
        "temperature": st.one_of(st.floats(-1, 3), st.sampled_from(["0.5", None, True])),
        "max_tokens": st.one_of(st.integers(-2, 50), st.sampled_from([5.0, "9", None])),
        "scrub_pii": st.one_of(st.booleans(), st.sampled_from(["yes", 0])),
        "scrubPII": st.booleans(),
        "reply_topic": st.sampled_from(["responses", "somebody-elses-topic", ""]),
        "metadata": st.dictionaries(
            st.text(max_size=6), st.one_of(st.text(max_size=6), st.integers()), max_size=18
        ),
        "unknown_field": _JSON,
    },
)


# Prompts within the contract, with hostile text where text is free.
_GOOD_PROMPT = st.fixed_dictionaries(
    {
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["system", "user", "assistant"]), "content": _CONTENT}
            ),
            min_size=1,
            max_size=3,
        )
    },
    optional={
        "context_id": _VALID_ID,
        "request_id": _VALID_ID,
        "history": st.booleans(),
        "temperature": st.floats(0, 2),
        "scrub_pii": st.booleans(),
        "metadata": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=16),
    },
)


class Deep(int):
    """Data nested this many arrays deep (too deep to build as Python values and dump)."""

    def json(self) -> str:
        return '{"messages": ' + "[" * self + "]" * self + "}"


_DEEP = st.integers(900, 3000).map(Deep)
# What goes in a CloudEvent's `data`: prompts good and bad, any JSON, deep JSON.
_DATA: st.SearchStrategy[Any] = st.one_of(
    _GOOD_PROMPT, _GOOD_PROMPT, _PROMPT, _PROMPT, _JSON, _DEEP
)


def _dumps(value: Any) -> str:
    """JSON text of `value`, with any `Deep` in it written out as deep JSON."""
    if isinstance(value, Deep):
        return value.json()
    if isinstance(value, dict) and isinstance(value.get("data"), Deep):
        return json.dumps({**value, "data": "@deep@"}).replace('"@deep@"', value["data"].json())
    return json.dumps(value)


_TRACE = st.one_of(
    st.just("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    st.text(max_size=60),
    st.text(alphabet=string.hexdigits + "-\n\r é", max_size=60),
)


def _cloudevent_extras() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "traceparent": _TRACE,
            "tracestate": st.text(max_size=30),
            "subject": st.text(max_size=20),
            "partitionkey": st.text(max_size=20),
            "x-extension": _JSON,
        },
    )


def _raw_request() -> st.SearchStrategy[appcallback_pb2.TopicEventRequest]:
    def build(
        event_id: str, topic: str, data: bytes, content_type: str, traceparent: str | None
    ) -> appcallback_pb2.TopicEventRequest:
        extensions = struct_pb2.Struct()
        if traceparent is not None:
            extensions.update({"traceparent": traceparent})
        return appcallback_pb2.TopicEventRequest(
            id=event_id,
            topic=topic,
            pubsub_name="pubsub",
            data=data,
            data_content_type=content_type,
            extensions=extensions,
        )

    data = st.one_of(
        _DATA.map(lambda value: _dumps(value).encode()),
        st.binary(max_size=64),
        st.just(b""),
    )
    return st.builds(
        build,
        st.text(max_size=30),
        st.sampled_from(["prompts", "prompts", "cancellations", "elsewhere", ""]),
        data,
        st.sampled_from(["application/json", "text/plain", "", "application/cloudevents+json"]),
        st.one_of(st.none(), _TRACE),
    )


# The inputs that once broke the worker (issue: poison pills and hostile input), sent in
# every run before the drawn ones, whatever the draw.
_TRACE_OK = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
_KNOWN: list[tuple[Any, dict[str, Any]]] = [
    (
        {"messages": [{"role": "user", "content": f"{MARKER} hi"}]},
        {"traceparent": _TRACE_OK + "\n"},
    ),
    ({"messages": [{"role": "user", "content": f"{MARKER} hi"}]}, {"traceparent": "00-é"}),
    (Deep(5000), {}),
    ({"messages": [{"role": "user", "content": f"{MARKER} hi"}], "scrub_pii": "yes"}, {}),
    (
        {
            "messages": [{"role": "user", "content": f"{MARKER} hi"}],
            "context_id": "A",
            "request_id": "B:C",
        },
        {},
    ),
]


# --- the stack and the checks ---------------------------------------------------------


@pytest.fixture
async def stack(make_stack: MakeStack) -> Stack:
    return await make_stack(
        worker_env={
            "WORKER_ECHO__DELAY_SECONDS": "0",
            "WORKER_CONVERSATION_COMPONENTS": '["dapr-echo"]',
            # Configured and never called: its key must stay out of the logs all the same.
            "WORKER_OPENAI": json.dumps(
                [
                    {
                        "name": "openai",
                        "base_url": "http://127.0.0.1:9/v1",
                        "model": "m",
                        "api_key": API_KEY,
                    }
                ]
            ),
        },
        extra_components=[inbound_retries()],
        app_token=TOKEN,
    )


async def _answers(stack: Stack) -> dict[str, float]:
    text = await asyncio.to_thread(scrape, stack.worker.metrics_port)
    found: dict[str, float] = {}
    for topic in ("prompts", "cancellations", "other"):
        for outcome in ("success", "retry", "drop"):
            if f'outcome="{outcome}",topic="{topic}"' in text:
                value = series(text, "llm_stream_messages_total", topic=topic, outcome=outcome)
                found[outcome] = found.get(outcome, 0) + value
    return found


async def _still_serving(stack: Stack, request_id: str) -> None:
    await stack.publish(
        {
            "messages": [{"role": "user", "content": "all good"}],
            "context_id": "ctx-after",
            "request_id": request_id,
        }
    )
    events = await stack.turn(request_id)
    assert_turn(events, request_id=request_id, context_id="ctx-after")
    assert reply_text(events) == "all good"
    assert all(worker.process.poll() is None for worker in stack.workers)


def _assert_clean_logs(stack: Stack) -> None:
    logs = stack.worker_logs()
    assert MARKER not in logs, "prompt text in the worker's log"
    for secret in (API_KEY, TOKEN):
        assert not any(secret[i : i + 8] in logs for i in range(len(secret) - 7)), "a secret"
    # Every line is a record of its own: none was forged by a newline in an id.
    line = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ |Traceback|  |\w+Error)")
    assert all(line.match(text) for text in logs.splitlines() if text)


def _unique_ids(data: Any, event_id: str) -> Any:
    """Valid ids made unique per example, so a duplicate is never taken for a redelivery."""
    if not isinstance(data, dict):
        return data
    fixed = dict(data)
    for field in ("request_id", "context_id"):
        value = fixed.get(field)
        if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9._:-]{1,24}", value):
            fixed[field] = f"{event_id}.{value}"
    return fixed


async def test_fuzzed_prompts_through_the_sidecar_end_as_a_reply_or_a_dead_letter(
    stack: Stack,
) -> None:
    examples = _KNOWN + _draw(st.tuples(_DATA, _cloudevent_extras()), EXAMPLES)
    endings: Counter[str] = Counter()
    sent: list[tuple[str, set[str]]] = []
    for number, (data, extras) in enumerate(examples):
        event_id = f"fuzz-{number}"
        data = _unique_ids(data, event_id)
        event = {
            "specversion": "1.0",
            "id": event_id,
            "source": "/fuzz",
            "type": "prompt",
            "datacontenttype": "application/json",
            "data": data,
            **extras,
        }
        if "traceparent" in extras:
            event["traceid"] = extras["traceparent"]  # so that daprd keeps it as it is
        try:
            await stack.publish(
                None, raw=_dumps(event).encode(), content_type="application/cloudevents+json"
            )
        except grpc.aio.AioRpcError as refused:
            endings[f"refused by the publisher's sidecar ({refused.code().name})"] += 1
            continue
        request_ids = {event_id}
        if isinstance(data, dict) and isinstance(data.get("request_id"), str):
            request_ids.add(data["request_id"])

        def ended(got: list[Any], ids: set[str] = request_ids, dead: str = event_id) -> bool:
            """Dead-lettered, or answered with a terminal event that is not a rejection."""
            return any(e.topic == "prompts-deadletter" and e.id == dead for e in got) or any(
                e.kind in TERMINAL
                and e.data.get("request_id") in ids
                and e.data.get("code") not in _DROPPED
                for e in got
            )

        await stack.wait_for(ended, timeout=30)
        sent.append((event_id, request_ids))
    await _still_serving(stack, "fuzz-after")
    for event_id, request_ids in sent:  # now that every late event is in
        mine = [e for e in stack.received if e.data.get("request_id") in request_ids]
        if any(e.topic == "prompts-deadletter" and e.id == event_id for e in stack.received):
            told = any(e.kind == "failed" for e in mine)
            endings["dead-lettered, with a failed event" if told else "dead-lettered"] += 1
        else:
            [terminal] = [e.kind for e in mine if e.kind in TERMINAL]
            endings[terminal] += 1
    answers = await _answers(stack)
    print(f"\nfuzz through the sidecar: {len(examples)} inputs, {dict(endings)}, answers {answers}")
    assert answers.get("retry", 0) == 0
    assert sum(endings.values()) == len(examples)
    _assert_clean_logs(stack)


async def test_fuzzed_requests_at_the_app_port_are_answered_success_or_drop(stack: Stack) -> None:
    examples = _draw(_raw_request(), EXAMPLES)
    statuses: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.worker.app_port}") as channel:
        stub = appcallback_pb2_grpc.AppCallbackStub(channel)
        for number, request in enumerate(examples):
            request.id = f"{request.id}{number}" if request.id else ""
            answer = await stub.OnTopicEvent(
                request, metadata=(("dapr-api-token", TOKEN),), timeout=60
            )
            statuses[Status.Name(answer.status)] += 1
    await _still_serving(stack, "fuzz-after-direct")
    print(f"\nfuzz at the app port: {len(examples)} inputs, answers {dict(statuses)}")
    assert set(statuses) <= {"SUCCESS", "DROP"}
    assert sum(statuses.values()) == len(examples)
    _assert_clean_logs(stack)
