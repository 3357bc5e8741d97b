"""The echo backend: exact word-by-word echo, max_tokens, pacing, which message it echoes."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.llm.base import ChatMessage, Finish, LLMBackend, LLMRequest, StreamItem, TextDelta
from worker.llm.echo import EchoBackend


def _ask(*messages: ChatMessage, max_tokens: int | None = None) -> LLMRequest:
    return LLMRequest(messages=messages, max_tokens=max_tokens)


async def _collect(backend: LLMBackend, request: LLMRequest) -> list[StreamItem]:
    return [item async for item in backend.stream(request)]


def _deltas(items: list[StreamItem]) -> list[str]:
    return [item.text for item in items if isinstance(item, TextDelta)]


async def test_streams_one_delta_per_word_then_stop() -> None:
    items = await _collect(EchoBackend(delay=0), _ask(ChatMessage("user", "Say hello world")))

    assert _deltas(items) == ["Say", " hello", " world"]
    assert items[-1] == Finish("stop")
    assert len(items) == 4  # no Usage: the pipeline estimates it


async def test_keeps_every_whitespace_character() -> None:
    text = "  two  spaces,\ta tab\nand a newline \r\n at both ends  \n"
    items = await _collect(EchoBackend(delay=0), _ask(ChatMessage("user", text)))

    assert "".join(_deltas(items)) == text
    assert len(_deltas(items)) == len(text.split())


@given(st.text())
def test_deltas_always_concatenate_to_the_message(text: str) -> None:
    backend = EchoBackend(delay=0)
    items = asyncio.run(_collect(backend, _ask(ChatMessage("user", text))))

    assert "".join(_deltas(items)) == text
    assert items[-1] == Finish("stop")


@pytest.mark.parametrize(
    ("max_tokens", "expected", "reason"),
    [
        (0, [], "length"),
        (2, ["one", " two"], "length"),
        (3, ["one", " two", " three "], "stop"),
        (10, ["one", " two", " three "], "stop"),
    ],
)
async def test_max_tokens_counts_words(max_tokens: int, expected: list[str], reason: str) -> None:
    request = _ask(ChatMessage("user", "one two three "), max_tokens=max_tokens)
    items = await _collect(EchoBackend(delay=0), request)

    assert _deltas(items) == expected
    assert items[-1] == Finish(reason)


async def test_echoes_the_last_user_message() -> None:
    request = _ask(
        ChatMessage("system", "be brief"),
        ChatMessage("user", "first question"),
        ChatMessage("assistant", "first answer"),
        ChatMessage("user", "second question"),
        ChatMessage("assistant", "partial"),
    )
    assert "".join(_deltas(await _collect(EchoBackend(delay=0), request))) == "second question"


async def test_without_a_user_message_echoes_the_last_message() -> None:
    request = _ask(ChatMessage("system", "be brief"), ChatMessage("assistant", "hello there"))
    assert "".join(_deltas(await _collect(EchoBackend(delay=0), request))) == "hello there"


async def test_no_messages_is_an_empty_reply() -> None:
    assert await _collect(EchoBackend(delay=0), _ask()) == [Finish("stop")]


async def test_sleeps_delay_between_words() -> None:
    request = _ask(ChatMessage("user", "a b c d e"))
    started = time.monotonic()
    await _collect(EchoBackend(delay=0.02), request)

    assert time.monotonic() - started >= 4 * 0.02 * 0.95  # four gaps between five words


async def test_zero_delay_still_lets_other_tasks_run() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    await _collect(EchoBackend(delay=0), _ask(ChatMessage("user", "word " * 50)))
    during = ticks - before
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert during >= 40


def test_defaults_and_validation() -> None:
    backend = EchoBackend()
    assert (backend.name, backend.model, backend.delay, backend.scrubs_pii) == (
        "echo",
        "echo",
        0.05,
        False,
    )
    with pytest.raises(ValueError, match="delay"):
        EchoBackend(delay=-1)
