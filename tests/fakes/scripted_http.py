"""A TCP peer that answers HTTP requests with scripted bytes, for framing edge cases.

daprd answers well; this peer answers as HTTP/1.1 allows but daprd rarely does (chunked,
split in pieces, framed by the connection's end, closed mid-response), so that the
client's framing is tested on every path. What daprd really does is tested against
daprd (`tests/integration/test_sidecar_behaviour.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

__all__ = ["Answer", "Request", "ScriptedHttpPeer", "scripted_http_peer"]


@dataclass(frozen=True)
class Request:
    head: bytes  # request line and headers
    body: bytes
    connection: int  # which connection (from 1) it came on

    @property
    def target(self) -> str:
        return self.head.split(b" ", 2)[1].decode()

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode()
        return None


@dataclass(frozen=True)
class Answer:
    """What the peer writes back: `pieces` one write each, then maybe closes."""

    pieces: Sequence[bytes]
    close: bool = False
    delay: float = 0.0  # seconds before the first piece

    @classmethod
    def of(
        cls, status: int = 204, body: bytes = b"", *, close: bool = False, delay: float = 0.0
    ) -> Answer:
        head = f"HTTP/1.1 {status} X\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        return cls([head + body], close=close, delay=delay)


@dataclass
class ScriptedHttpPeer:
    answer: Callable[[Request], Answer]
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        connection = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    key, _, value = line.partition(b":")
                    if key.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                request = Request(head, body, connection)
                self.requests.append(request)
                answer = self.answer(request)
                await asyncio.sleep(answer.delay)
                for piece in answer.pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0)
                if answer.close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def scripted_http_peer(
    answer: Callable[[Request], Answer],
) -> AsyncIterator[ScriptedHttpPeer]:
    peer = ScriptedHttpPeer(answer)
    server = await asyncio.start_server(peer._serve, "127.0.0.1", 0)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        server.close()
        for writer in peer._writers:
            writer.close()
        await server.wait_closed()
