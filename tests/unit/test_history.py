"""Context continuity: stored turns, their bounds and TTL, and where they go in a request."""

from __future__ import annotations

from tests.fakes.ports import FakeStateStore
from worker.llm.base import ChatMessage
from worker.pipeline import keys
from worker.pipeline.history import ConversationHistory, with_history


def _history(store: FakeStateStore, **bounds: int) -> ConversationHistory:
    settings = {"max_turns": 3, "max_chars": 1000, "ttl_seconds": 60, **bounds}
    return ConversationHistory(store, "statestore", **settings)


async def test_turns_are_stored_and_loaded_in_order_with_ttl() -> None:
    store = FakeStateStore()
    history = _history(store)
    await history.append("c1", "r1", [ChatMessage("user", "one")], "reply one")
    await history.append("c1", "r2", [ChatMessage("user", "two")], "reply two")
    assert await history.load("c1") == [
        ChatMessage("user", "one"),
        ChatMessage("assistant", "reply one"),
        ChatMessage("user", "two"),
        ChatMessage("assistant", "reply two"),
    ]
    assert await history.load("other") == []
    assert store.ttls[keys.history("c1")] == 60


async def test_oldest_turns_dropped_beyond_max_turns() -> None:
    history = _history(FakeStateStore(), max_turns=2)
    for n in range(4):
        await history.append("c", f"r{n}", [ChatMessage("user", f"q{n}")], f"a{n}")
    assert [m.content for m in await history.load("c")] == ["q2", "a2", "q3", "a3"]


async def test_oldest_turns_dropped_beyond_max_chars() -> None:
    history = _history(FakeStateStore(), max_chars=25)
    await history.append("c", "r1", [ChatMessage("user", "x" * 10)], "y" * 10)
    await history.append("c", "r2", [ChatMessage("user", "z" * 5)], "w" * 5)
    assert [m.content for m in await history.load("c")] == ["z" * 5, "w" * 5]


async def test_system_messages_are_not_stored_and_lead_the_request() -> None:
    history = _history(FakeStateStore())
    await history.append(
        "c", "r1", [ChatMessage("system", "be brief"), ChatMessage("user", "hi")], "hello"
    )
    stored = await history.load("c")
    assert stored == [ChatMessage("user", "hi"), ChatMessage("assistant", "hello")]
    request = with_history(
        [ChatMessage("system", "be brief"), ChatMessage("user", "and now?")], stored
    )
    assert [m.role for m in request] == ["system", "user", "assistant", "user"]
    assert request[-1].content == "and now?"


async def test_unreadable_stored_history_starts_afresh() -> None:
    store = FakeStateStore()
    store.items[keys.history("c")] = (b"{garbage", "1")
    history = _history(store)
    assert await history.load("c") == []
    await history.append("c", "r1", [ChatMessage("user", "q")], "a")
    assert len(await history.load("c")) == 2


async def test_a_request_written_twice_keeps_one_turn_in_its_place() -> None:
    # An attempt that wrote its turn and died is answered again: its successor's reply
    # replaces the first one instead of following it.
    history = _history(FakeStateStore())
    await history.append("c", "r1", [ChatMessage("user", "q1")], "first try")
    await history.append("c", "r2", [ChatMessage("user", "q2")], "a2")
    await history.append("c", "r1", [ChatMessage("user", "q1")], "second try")
    assert [m.content for m in await history.load("c")] == ["q1", "second try", "q2", "a2"]
    assert [m.content for m in await history.load("c", excluding="r1")] == ["q2", "a2"]


async def test_history_stored_before_request_ids_were_kept_is_still_read() -> None:
    store = FakeStateStore()
    store.items[keys.history("c")] = (b'[[{"role":"user","content":"old"}]]', "1")
    history = _history(store)
    await history.append("c", "r1", [ChatMessage("user", "new")], "a")
    assert [m.content for m in await history.load("c")] == ["old", "new", "a"]
