"""Any OpenAI-compatible chat-completions endpoint, streamed over server-sent events.

Works against OpenAI itself and the many servers that copy its API (vLLM, Ollama,
llama.cpp, LiteLLM, ...), directly or through Dapr service invocation: the backend only
appends `/chat/completions` to `base_url`. The API key lives in a `SecretStr` until the
session's headers are built and is redacted from every error message we raise.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
from pydantic import SecretStr

from worker.errors import LLMError, LLMTimeout, LLMUnavailable, WorkerError
from worker.llm.base import Finish, LLMRequest, StreamItem, TextDelta, Usage

__all__ = ["OpenAIBackend"]

# One SSE event (or an unterminated line) may not grow past this: a broken or hostile
# server must not be able to eat the worker's memory.
_MAX_EVENT_BYTES: Final = 1 << 20
_ERROR_BODY_BYTES: Final = 16 << 10
_ERROR_TEXT_CHARS: Final = 300
_DONE: Final = b"[DONE]"


class OpenAIBackend:
    """Streams chat completions from one endpoint and model; one HTTP session per backend.

    Use as `async with OpenAIBackend(...) as backend:` or call `aclose()` when done; the
    session is opened lazily by the first `stream()`, and a closed backend stays closed.
    """

    __slots__ = (
        "_api_key",
        "_closed",
        "_headers",
        "_max_connections",
        "_model",
        "_name",
        "_read_timeout",
        "_session",
        "_shown_url",
        "_timeout",
        "_url",
    )

    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        *,
        api_key: SecretStr | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        extra_headers: Mapping[str, str] | None = None,
        max_connections: int = 0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("connect_timeout and read_timeout must be > 0 seconds")
        path = parts.path.rstrip("/") + "/chat/completions"
        self._url = urlunsplit(parts._replace(path=path))
        # For messages and repr: no user-info, query or fragment, which may carry secrets.
        self._shown_url = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], path, "", ""))
        self._name = name
        self._model = model
        self._api_key = api_key
        self._headers = dict(extra_headers or {})
        header_names = {key.lower() for key in self._headers}
        if api_key is not None and "authorization" in header_names:
            raise ValueError("give either api_key or an Authorization extra header, not both")
        if "accept" not in header_names:
            self._headers["Accept"] = "text/event-stream"
        # aiohttp's default pool (100) would queue streams at hundreds of concurrent turns;
        # 0 means unlimited and leaves concurrency to the worker.
        self._max_connections = max_connections
        # The read timeout is the idle time between two reads, not a cap on the whole
        # reply. It is watched here (`_IdleWatch`), not by aiohttp's sock_read, which
        # re-arms a timer on every read of the socket: a timer per token.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout)
        self._read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return self._model

    @property
    def provider(self) -> str:
        # The OpenAI API, whoever serves it (the conventions' advice for compatible APIs).
        return "openai"

    @property
    def scrubs_pii(self) -> bool:
        return False

    @property
    def honours_max_tokens(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"OpenAIBackend(name={self._name!r}, model={self._model!r}, url={self._shown_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def stream(self, request: LLMRequest) -> AsyncGenerator[StreamItem, None]:
        session = self._open_session()
        finish: str | None = None
        usage: Usage | None = None
        done = False
        try:
            async with asyncio.timeout(self._read_timeout):  # no answer (headers) in time
                response = await session.post(
                    self._url,
                    json=self._body(request),
                    allow_redirects=False,
                    # The prompt's trace continues into the LLM call (and through a sidecar).
                    headers={"traceparent": request.traceparent} if request.traceparent else None,
                )
            async with response, _IdleWatch(response, self._read_timeout) as idle:
                if not 200 <= response.status < 300 or response.content_type == "application/json":
                    raise await self._refusal(response)
                events = _EventParser()
                try:
                    while not done:
                        chunk = await idle.read()
                        # At EOF, a blank line ends an unterminated last event (`data: [DONE]`
                        # without its blank line), as lenient SSE readers do.
                        for payload in events.feed(chunk or b"\n\n"):
                            if payload == _DONE:
                                done = True
                                break
                            text, reason, reported = self._parse(payload)
                            if reason is not None:
                                finish = reason
                            if reported is not None:
                                usage = reported
                            if text:
                                yield TextDelta(text)
                        if not chunk:
                            break
                except BaseException:
                    # aclose(), cancellation or an error: drop the connection now so the
                    # provider stops generating (and billing) the rest of the reply.
                    response.close()
                    raise
        except aiohttp.ConnectionTimeoutError as exc:
            raise LLMUnavailable(
                f"{self._name}: no connection to {self._shown_url} within "
                f"{self._timeout.connect:g}s"
            ) from exc
        except TimeoutError as exc:  # no headers, or no data, for the read timeout
            raise LLMTimeout(
                f"{self._name}: no data from {self._shown_url} for {self._read_timeout:g}s"
            ) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise LLMUnavailable(
                f"{self._name}: connection to {self._shown_url} failed: {exc}"
            ) from exc
        except aiohttp.ClientError as exc:
            raise LLMError(f"{self._name}: bad response from {self._shown_url}: {exc}") from exc
        except _EventTooLarge as exc:
            raise LLMError(f"{self._name}: an event exceeds {_MAX_EVENT_BYTES} bytes") from exc
        if not done and finish is None:
            raise LLMError(f"{self._name}: the stream ended before [DONE] and any finish_reason")
        if usage is not None:
            yield usage
        # [DONE] without a finish_reason is a complete reply all the same.
        yield Finish(finish or "stop")

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            if self._closed:
                raise LLMUnavailable(f"{self._name}: the backend is closed")
            headers = dict(self._headers)
            if self._api_key is not None:
                headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
            self._session = aiohttp.ClientSession(
                headers=headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._max_connections),
            )
        return self._session

    def _body(self, request: LLMRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        # Absent, not null: several compatible servers reject explicit nulls.
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        return body

    def _parse(self, payload: bytes) -> tuple[str | None, str | None, Usage | None]:
        """One `data:` payload as (content delta, finish_reason, usage)."""
        try:
            event = _loads(payload)
        except (ValueError, RecursionError) as exc:  # also UnicodeDecodeError
            shown = self._clip(payload.decode(errors="replace"))
            raise LLMError(f"{self._name}: unreadable chunk: {shown}") from exc
        if not isinstance(event, dict):
            raise LLMError(f"{self._name}: chunk is not a JSON object: {self._clip(str(event))}")
        error = event.get("error")
        if error:
            raise LLMError(f"{self._name}: error in stream: {self._clip(_error_text(error))}")
        text: str | None = None
        reason: str | None = None
        choices = event.get("choices")
        if choices:
            choice = choices[0] if isinstance(choices, list) else None
            if not isinstance(choice, dict):
                raise LLMError(f"{self._name}: malformed choices: {self._clip(str(choices))}")
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str):
                    text = content
            finish_reason = choice.get("finish_reason")
            if isinstance(finish_reason, str) and finish_reason:
                reason = finish_reason
        usage = event.get("usage")
        return text, reason, _usage(usage) if usage else None

    async def _refusal(self, response: aiohttp.ClientResponse) -> WorkerError:
        """The error for a response that is not an event stream, with the provider's text."""
        try:
            body = await _read_some(response)
        except (aiohttp.ClientError, TimeoutError):
            body = b""  # the status alone still says what happened
        try:
            detail = _error_text(json.loads(body))
        except ValueError:
            detail = body.decode(errors="replace")
        status = response.status
        message = f"{self._name}: HTTP {status} from {self._shown_url}"
        if 200 <= status < 300:
            message += " is JSON, not an event stream"
        if detail.strip():
            message += f": {self._clip(detail)}"
        if status == 429 or status >= 500:
            return LLMUnavailable(message)
        return LLMError(message)

    def _clip(self, text: str) -> str:
        # Redact before clipping, so no clipped prefix of the key can survive.
        if self._api_key is not None:
            secret = self._api_key.get_secret_value()
            if secret:
                text = text.replace(secret, "***")
        text = " ".join(text.split())
        if len(text) > _ERROR_TEXT_CHARS:
            text = text[: _ERROR_TEXT_CHARS - 1] + "…"
        return text


class _EventTooLarge(Exception):
    pass


class _EventParser:
    """Incremental SSE parsing: bytes as they arrive in, complete `data` payloads out.

    Handles LF, CRLF and lone-CR line ends, comments, multi-line data and events or
    line ends split across reads; fields other than `data` (event, id, retry) are unused.
    """

    __slots__ = ("_data", "_partial")

    def __init__(self) -> None:
        self._partial = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._partial:
            chunk = self._partial + chunk
        held = b""
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                # Maybe the first half of a CRLF: decide when the next read comes.
                chunk, held = chunk[:-1], b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        self._partial = lines.pop() + held
        payloads: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    payloads.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
            elif line.startswith(b"data:"):
                data.append(line[6:] if line.startswith(b"data: ") else line[5:])
            elif line == b"data":
                data.append(b"")
            # Anything else is a comment (": keep-alive") or a field we do not use.
        if len(self._partial) > _MAX_EVENT_BYTES or (
            data and sum(map(len, data)) > _MAX_EVENT_BYTES
        ):
            raise _EventTooLarge
        return payloads


async def _read_some(response: aiohttp.ClientResponse) -> bytes:
    """At most about `_ERROR_BODY_BYTES` of the body: enough to say what went wrong."""
    parts: list[bytes] = []
    size = 0
    while size < _ERROR_BODY_BYTES:
        chunk = await response.content.readany()
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def _error_text(error: Any) -> str:
    """The human part of an error object, in the shapes compatible servers use."""
    if isinstance(error, list) and error:
        return _error_text(error[0])
    if isinstance(error, dict):
        for key in ("error", "message", "detail"):
            if key in error:
                return _error_text(error[key])
        return json.dumps(error)
    return str(error)


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = raw.get("prompt_tokens")
    completion = raw.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    total = raw.get("total_tokens")
    return Usage(prompt, completion, total if isinstance(total, int) else prompt + completion)


def _loads(payload: bytes) -> Any:
    """JSON, read fast; what orjson refuses and JSON allows (a lone surrogate's escape, or
    nesting past orjson's limit) is read again the lenient way."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return json.loads(payload)


class _IdleWatch:
    """Closes a response that sent nothing for `seconds`; `read` then raises TimeoutError.

    One timer per `seconds` of streaming, not one per read: a read only notes its time,
    and the timer, when it fires, re-arms itself for `seconds` after the last read.
    """

    __slots__ = ("_handle", "_last", "_loop", "_response", "_seconds", "fired")

    def __init__(self, response: aiohttp.ClientResponse, seconds: float) -> None:
        self._response = response
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._handle: asyncio.TimerHandle | None = None
        self.fired = False

    async def __aenter__(self) -> Self:
        self._handle = self._loop.call_at(self._last + self._seconds, self._check)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def _check(self) -> None:
        due = self._last + self._seconds
        if self._loop.time() < due:
            self._handle = self._loop.call_at(due, self._check)
            return
        self.fired = True
        self._response.close()  # the pending read fails at once

    async def read(self) -> bytes:
        try:
            chunk = await self._response.content.readany()
        except aiohttp.ClientError:
            if self.fired:
                raise TimeoutError from None
            raise
        if self.fired:
            raise TimeoutError
        self._last = self._loop.time()
        return chunk
