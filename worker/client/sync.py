"""`Client` and `generate()`: the same client for code without an event loop.

The async client runs on a private event loop in a background thread, so that
one subscription keeps reading while the caller is busy, and several threads can
share one client (and its subscription).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, Unpack, overload

from worker.client.aio import AsyncClient
from worker.client.consumer import Event, Finished
from worker.client.errors import ClientError
from worker.client.options import DEFAULT_CONNECT_TIMEOUT, ClientOptions, GenerateOptions
from worker.client.prompt import Messages
from worker.client.stream import AsyncReplyStream
from worker.client.types import ChatCompletion, CompletionUsage, StreamEvent

__all__ = ["Client", "ReplyStream", "generate"]

T = TypeVar("T")
_END = object()


class _LoopThread:
    """An event loop running in a daemon thread; `run` waits for a coroutine on it."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="llm-stream-client", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C in the caller's thread: stop the work on the loop too.
            future.cancel()
            raise

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        self.run(self._loop.shutdown_asyncgens())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class ReplyStream(Iterator[StreamEvent]):
    """`for event in stream`: as `AsyncReplyStream`, without an event loop."""

    def __init__(
        self,
        stream: AsyncReplyStream,
        loop: _LoopThread,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._stream = stream
        self._loop = loop
        self._on_close = on_close
        self._closed = False

    @property
    def request_id(self) -> str:
        return self._stream.request_id

    @property
    def context_id(self) -> str | None:
        return self._stream.context_id

    @property
    def usage(self) -> CompletionUsage | None:
        return self._stream.usage

    @property
    def text(self) -> str:
        return self._stream.text

    @property
    def attempt(self) -> int:
        return self._stream.attempt

    @property
    def finished(self) -> Finished | None:
        return self._stream.finished

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> StreamEvent:
        return self._pull(self._stream)

    def events(self) -> Generator[Event, None, None]:
        """The raw events instead, see `AsyncReplyStream.events`."""
        source = self._stream.events()
        try:
            while True:
                yield self._pull(source)
        except StopIteration:
            return
        finally:
            # Once the stream closed (at its end, or on an error), its loop may be gone
            # too; `shutdown_asyncgens` closed `source` then.
            if not self._closed:
                self._loop.run(source.aclose())

    def collect(self) -> ChatCompletion:
        try:
            return self._loop.run(self._stream.collect())
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.run(self._stream.aclose())
        finally:
            if self._on_close is not None:
                self._on_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _pull(self, source: AsyncIterator[T]) -> T:
        async def step() -> T | object:
            # StopAsyncIteration must not cross the thread as an exception of a future.
            try:
                return await anext(source)
            except StopAsyncIteration:
                return _END

        try:
            item = self._loop.run(step())
        except BaseException:
            self.close()
            raise
        if item is _END:
            self.close()
            raise StopIteration
        return item  # type: ignore[return-value]


class Client:
    """The synchronous client; the same arguments as `AsyncClient`.

    with Client() as client:
        for event in client.generate("Tell me a story"):
            ...
        reply = client.generate(messages, stream=False)
    """

    def __init__(self, address: str | None = None, **options: Unpack[ClientOptions]) -> None:
        self._async = AsyncClient(address, **options)
        self._loop: _LoopThread | None = None

    @property
    def address(self) -> str:
        return self._async.address

    @property
    def in_flight(self) -> int:
        return self._async.in_flight

    def open(self) -> None:
        if self._loop is not None:
            return
        loop = _LoopThread()
        try:
            loop.run(self._async.open())
        except BaseException:
            loop.stop()
            raise
        self._loop = loop

    def close(self) -> None:
        if self._loop is None:
            return
        loop, self._loop = self._loop, None
        try:
            loop.run(self._async.aclose())
        finally:
            loop.stop()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @overload
    def generate(
        self, messages: Messages, *, stream: Literal[True] = ..., **options: Unpack[GenerateOptions]
    ) -> ReplyStream: ...

    @overload
    def generate(
        self, messages: Messages, *, stream: Literal[False], **options: Unpack[GenerateOptions]
    ) -> ChatCompletion: ...

    @overload
    def generate(
        self, messages: Messages, *, stream: bool, **options: Unpack[GenerateOptions]
    ) -> ReplyStream | ChatCompletion: ...

    def generate(
        self, messages: Messages, *, stream: bool = True, **options: Unpack[GenerateOptions]
    ) -> ReplyStream | ChatCompletion:
        """See `AsyncClient.generate`."""
        if self._loop is None:
            raise ClientError("the client is not open (use `with Client()`)")
        if not stream:
            return self._loop.run(self._async.generate(messages, stream=False, **options))
        return ReplyStream(
            self._loop.run(self._async.generate(messages, stream=True, **options)), self._loop
        )


@overload
def generate(
    messages: Messages,
    *,
    stream: Literal[True] = ...,
    address: str | None = ...,
    connect_timeout: float = ...,
    **options: Unpack[GenerateOptions],
) -> ReplyStream: ...


@overload
def generate(
    messages: Messages,
    *,
    stream: Literal[False],
    address: str | None = ...,
    connect_timeout: float = ...,
    **options: Unpack[GenerateOptions],
) -> ChatCompletion: ...


@overload
def generate(
    messages: Messages,
    *,
    stream: bool,
    address: str | None = ...,
    connect_timeout: float = ...,
    **options: Unpack[GenerateOptions],
) -> ReplyStream | ChatCompletion: ...


def generate(
    messages: Messages,
    *,
    stream: bool = True,
    address: str | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    **options: Unpack[GenerateOptions],
) -> ReplyStream | ChatCompletion:
    """One prompt with a client of its own (contract section 5's seed API).

    For many prompts keep a `Client` open instead: each call here connects and
    subscribes afresh. A stream closes its client when it ends or is closed.
    """
    client = Client(address, connect_timeout=connect_timeout)
    client.open()
    try:
        result = client.generate(messages, stream=stream, **options)
    except BaseException:
        client.close()
        raise
    if isinstance(result, ChatCompletion):
        client.close()
        return result
    result._on_close = client.close
    return result
