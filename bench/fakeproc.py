"""The fake OpenAI-compatible SSE server in a process of its own, for the benchmark.

It runs apart from the consumer so that neither one's event loop delays the other's
timestamps. Both stamp with `time.monotonic()`, which on Linux is one system-wide clock
(CLOCK_MONOTONIC), so emission and arrival times compare directly.

Each prompt's last message is `bench <tag> <count>`; the reply is `count` tokens
`t<tag>-<i> `, unique across a run, so a chunk's text tells which tokens it carries.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from tests.fakes.openai_server import FakeOpenAIServer

__all__ = ["FakeServerProcess", "prompt_text"]

_PROMPT = re.compile(r"bench (\S+) (\d+)")


def prompt_text(tag: str, count: int) -> str:
    return f"bench {tag} {count}"


def _tokens(body: dict[str, Any]) -> list[str]:
    content = str(body["messages"][-1]["content"])
    match = _PROMPT.fullmatch(content.strip())
    if match is None:
        return ["unexpected "]
    tag, count = match[1], int(match[2])
    return [f"t{tag}-{i} " for i in range(count)]


async def _serve(conn: Connection, first_token_delay: float, token_interval: float) -> None:
    async with FakeOpenAIServer(
        _tokens, first_token_delay=first_token_delay, token_interval=token_interval
    ) as server:
        conn.send(server.base_url)
        await asyncio.to_thread(conn.recv)  # "stop"
        conn.send(
            {
                "emitted": server.emitted,
                "requests": len(server.requests),
                "disconnected": server.disconnected,
            }
        )


def _main(conn: Connection, first_token_delay: float, token_interval: float) -> None:
    asyncio.run(_serve(conn, first_token_delay, token_interval))


@dataclass
class FakeServerProcess:
    base_url: str
    _conn: Connection
    _process: multiprocessing.process.BaseProcess

    @classmethod
    def start(cls, first_token_delay: float, token_interval: float) -> FakeServerProcess:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(
            target=_main, args=(child, first_token_delay, token_interval), daemon=True
        )
        process.start()
        if not parent.poll(30):
            process.kill()
            raise RuntimeError("fake OpenAI server did not start")
        return cls(parent.recv(), parent, process)

    def stop(self) -> dict[str, Any]:
        """Stops the server; returns what it emitted (token, monotonic time) and counts."""
        try:
            self._conn.send("stop")
            result: dict[str, Any] = self._conn.recv() if self._conn.poll(60) else {}
        finally:
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        return result

    @property
    def pid(self) -> int:
        return self._process.pid or 0

    def kill(self) -> None:
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
