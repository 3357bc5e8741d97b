"""A small Server-Sent Events reader over aiohttp, for the tests' own HTTP calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

__all__ = ["SseEvent", "events", "text_of"]


@dataclass(frozen=True)
class SseEvent:
    id: str
    data: str
    event: str = "message"

    @property
    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def done(self) -> bool:
        return self.data == "[DONE]"


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[SseEvent]:
    """The events of an SSE response as the spec parses them (blocks without data skipped)."""
    fields: dict[str, str] = {}
    data: list[str] = []
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                kind = fields.get("event", "message")
                yield SseEvent(fields.get("id", ""), "\n".join(data), kind)
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        else:
            fields[name] = value


def text_of(received: list[SseEvent]) -> str:
    """The reply text as a browser shows it: content deltas, a restart starting it over."""
    text = ""
    for event in received:
        if event.event == "restart":
            text = ""
        elif not event.done:
            for choice in event.json.get("choices", []):
                text += choice["delta"].get("content") or ""
    return text
