"""A lean HTTP/1.1 client for calls into the local daprd.

The worker's hottest sidecar call is the publish. A bulk publish of 5 events costs the
worker 210-390 us of CPU over grpc.aio; over this client, a keep-alive connection pool
on asyncio protocols, 66-135 us, and over aiohttp about 1.5-2 times that
(`bench/results/call-cost/`). It knows just enough HTTP/1.1 for a loopback peer it
trusts to speak it: one request at a time per connection, responses framed by
`Content-Length`, chunked encoding or the connection's end.

Errors are this module's own (`ConnectionError`, `HttpProtocolError`); the caller maps
them, as httpx maps httpcore's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast

__all__ = ["Http1Pool", "HttpProtocolError", "HttpResponse"]

# A response head longer than this is not daprd's.
_MAX_HEAD = 64 * 1024
_NO_BODY = frozenset({204, 304})


class HttpProtocolError(Exception):
    """The peer sent something that is not an HTTP/1.1 response to our request."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    headers: dict[bytes, bytes]


@dataclass(slots=True)
class _Head:
    status: int
    headers: dict[bytes, bytes]
    body_start: int


def _parse_head(buffer: bytearray) -> _Head | None:
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > _MAX_HEAD:
            raise HttpProtocolError("response head too long")
        return None
    lines = bytes(buffer[:end]).split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or not code.isdigit():
        raise HttpProtocolError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise HttpProtocolError(f"malformed header line: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return _Head(int(code), headers, end + 4)


def _dechunk(buffer: bytearray, start: int) -> bytes | None:
    """The body of a chunked response in `buffer[start:]`, or None while incomplete."""
    body = bytearray()
    at = start
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size_field = bytes(buffer[at:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError:
            raise HttpProtocolError(f"bad chunk size {size_field[:20]!r}") from None
        at = line_end + 2
        if size == 0:
            # The body ends with an empty line, after trailers if any (daprd sends none).
            if buffer[at : at + 2] == b"\r\n" or buffer.find(b"\r\n\r\n", at) >= 0:
                return bytes(body)
            return None
        if len(buffer) < at + size + 2:
            return None
        body += buffer[at : at + size]
        at += size + 2


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one exchange at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._head: _Head | None = None
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self.closed = False
        self.reusable = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)

    def exchange(self, request: bytes) -> asyncio.Future[HttpResponse]:
        assert self._transport is not None
        assert self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # Bytes nobody asked for: the stream is out of step, never reuse it.
            self.close()
            return
        self._buffer += data
        try:
            response = self._parse(eof=False)
        except HttpProtocolError as exc:
            self._settle(exc)
            return
        if response is not None:
            self._settle(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            response = self._parse(eof=True)
        except HttpProtocolError as error:
            self._settle(error)
            return
        if response is not None:
            self._settle(response)
            return
        reason = f": {exc}" if exc else ""
        self._settle(ConnectionError(f"the sidecar closed the connection mid-response{reason}"))

    def _parse(self, *, eof: bool) -> HttpResponse | None:
        if self._head is None:
            self._head = _parse_head(self._buffer)
            if self._head is None:
                return None
        head = self._head
        if head.status in _NO_BODY or 100 <= head.status < 200:
            body: bytes | None = b""
            end = head.body_start
        elif b"chunked" in head.headers.get(b"transfer-encoding", b"").lower():
            body = _dechunk(self._buffer, head.body_start)
            end = len(self._buffer)
        elif b"content-length" in head.headers:
            try:
                length = int(head.headers[b"content-length"])
            except ValueError:
                raise HttpProtocolError("bad Content-Length") from None
            end = head.body_start + length
            body = bytes(self._buffer[head.body_start : end]) if len(self._buffer) >= end else None
        else:
            # Framed by the connection's end.
            self.reusable = False
            body = bytes(self._buffer[head.body_start :]) if eof else None
            end = len(self._buffer)
        if body is None:
            return None
        if 100 <= head.status < 200:
            raise HttpProtocolError(f"unexpected interim response {head.status}")
        if head.headers.get(b"connection", b"").lower() == b"close":
            self.reusable = False
        if len(self._buffer) > end:
            self.reusable = False  # bytes beyond the response: out of step
        self._buffer.clear()
        self._head = None
        return HttpResponse(head.status, body, head.headers)

    def _settle(self, outcome: HttpResponse | Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if isinstance(outcome, Exception):
            self.reusable = False
            self.close()
        if waiter is None or waiter.done():
            return
        if isinstance(outcome, Exception):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None and not self.closed:
            self._transport.close()
        self.closed = True


class Http1Pool:
    """Keep-alive HTTP/1.1 connections to one host and port, opened as calls need them.

    A connection goes back to the pool only after a whole response was read on it; a
    call that fails, times out or is cancelled closes its connection.
    """

    def __init__(self, host: str, port: int, *, max_idle: int = 16) -> None:
        self._address = (host, port)
        self._host_header = f"Host: {host}:{port}\r\n".encode()
        self._max_idle = max_idle
        self._idle: list[_Connection] = []

    @property
    def host_header(self) -> bytes:
        """The `Host` header line every request on this pool carries."""
        return self._host_header

    async def send(self, request: bytes) -> HttpResponse:
        """Send one whole request (head and body, from `host_header`'s pool), read its
        response. Raises `ConnectionError`, `HttpProtocolError` or `OSError`."""
        connection = self._take_idle()
        if connection is None:
            _, connection = await asyncio.get_running_loop().create_connection(
                _Connection, *self._address
            )
        try:
            response = await connection.exchange(request)
        except BaseException:
            connection.close()
            raise
        if connection.reusable and not connection.closed and len(self._idle) < self._max_idle:
            self._idle.append(connection)
        else:
            connection.close()
        return response

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
        return None

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
