"""A TCP proxy in front of gateway replicas, as a Kubernetes Service is: one address,
the first live replica behind it. It can also drop every open connection, a network
fault the gateway cannot be asked to make."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from testbed.net import free_port

__all__ = ["ServiceProxy"]


class ServiceProxy:
    def __init__(self, backends: Sequence[int]) -> None:
        self.backends = list(backends)
        self.port = free_port()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        """Drop every open connection, both ways, mid-whatever."""
        for writer in list(self._writers):
            writer.transport.abort()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        upstream = None
        for port in self.backends:
            with contextlib.suppress(OSError):
                upstream = await asyncio.open_connection("127.0.0.1", port)
                break
        if upstream is None:
            client_w.transport.abort()
            return
        backend_r, backend_w = upstream
        self._writers |= {client_w, backend_w}
        pipes = [
            asyncio.create_task(self._pipe(client_r, backend_w)),
            asyncio.create_task(self._pipe(backend_r, client_w)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for writer in (client_w, backend_w):
                writer.transport.abort()
                self._writers.discard(writer)
            for task in pipes:
                task.cancel()
                self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
