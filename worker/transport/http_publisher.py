"""The worker's publishes, over daprd's HTTP API.

Publishing is the worker's hottest sidecar call: over HTTP a call costs the worker about
a third of what it costs over grpc.aio (`bench/results/call-cost/`; see
`worker.transport.routed` for daprd's side). What reaches the broker is the same: daprd
turns an HTTP publish into the same CloudEvent envelope as a gRPC one. Every other
sidecar call stays on gRPC (`worker.transport.sidecar`); `WORKER_PUBLISH_PROTOCOL=grpc`
sends publishes there too.

Every failure is translated into a `WorkerError` here, in `map_http_errors`.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Self
from urllib.parse import quote

import orjson
from pydantic import SecretStr

from worker.contract.envelopes import Publication
from worker.errors import CallRefused, SidecarError, WorkerError
from worker.transport.http1 import Http1Pool, HttpProtocolError, HttpResponse

__all__ = ["HttpPublisher", "map_http_errors"]


@contextmanager
def map_http_errors(what: str) -> Iterator[None]:
    """The one place where this edge's failures become the worker's (see `worker.errors`).

    - the sidecar unreachable, the connection broken, the call past its deadline, or an
      answer that is not HTTP -> `SidecarError` (retryable: the sidecar may answer later);
    - anything raised before the request left (a value no header can carry) -> `CallRefused`.
    """
    try:
        yield
    except (WorkerError, asyncio.CancelledError):
        raise
    except TimeoutError as exc:
        raise SidecarError(f"{what} failed: no answer before its deadline") from exc
    except (OSError, HttpProtocolError) as exc:  # ConnectionError is an OSError
        raise SidecarError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise CallRefused(f"{what}: the request could not be built ({type(exc).__name__})") from exc


def _header(name: str, value: str) -> bytes:
    if not (value.isascii() and value.isprintable()):
        # Never echo the value: it may be a secret.
        raise CallRefused(f"{name} holds characters an HTTP header cannot carry")
    return f"{name}: {value}\r\n".encode()


def _query(metadata: Mapping[str, str]) -> str:
    if not metadata:
        return ""
    return "?" + "&".join(
        f"metadata.{quote(key, safe='')}={quote(value, safe='')}" for key, value in metadata.items()
    )


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "application/cloudevents+json") or media.endswith("+json")


def _bulk_event(publication: Publication) -> bytes:
    """An entry's `event` as daprd's HTTP bulk API reads it: JSON as is, text as a JSON
    string, anything else base64 (daprd decodes it by the entry's content type)."""
    if _is_json(publication.content_type):
        return publication.data
    if publication.content_type.startswith("text/"):
        return orjson.dumps(publication.data.decode())
    return orjson.dumps(base64.b64encode(publication.data).decode())


def _topic_path(pubsub: str, topic: str) -> str:
    return f"{quote(pubsub, safe='')}/{quote(topic, safe='')}"


def _error_body(response: HttpResponse) -> dict[str, object]:
    """daprd's JSON error answer, or {} when the body is none."""
    try:
        body = orjson.loads(response.body) if response.body else {}
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_detail(status: int, body: dict[str, object]) -> str:
    if body.get("errorCode") or body.get("message"):
        return f"HTTP {status} {body.get('errorCode', '')}: {body.get('message', '')}"
    return f"HTTP {status}"


class HttpPublisher:
    """A `BulkEventSink` publishing through daprd's HTTP API on loopback."""

    def __init__(self, host: str, port: int, *, api_token: SecretStr | None = None) -> None:
        self._pool = Http1Pool(host, port)
        self._common = self._pool.host_header
        if api_token is not None:
            try:
                self._common += _header("dapr-api-token", api_token.get_secret_value())
            except CallRefused:
                raise ValueError(
                    "the Dapr API token holds characters an HTTP header cannot carry"
                ) from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pool.close()

    async def _post(
        self, target: str, headers: Sequence[bytes], body: bytes, call_timeout: float | None
    ) -> HttpResponse:
        """One POST of `body`, its answer read before `call_timeout` seconds pass."""
        request = b"".join(
            [
                f"POST {target} HTTP/1.1\r\n".encode(),
                self._common,
                *headers,
                b"content-length: %d\r\n\r\n" % len(body),
                body,
            ]
        )
        async with asyncio.timeout(call_timeout):
            return await self._pool.send(request)

    async def publish(self, publication: Publication, *, call_timeout: float | None = None) -> None:
        what = f"publish to {publication.pubsub}/{publication.topic}"
        with map_http_errors(what):
            target = (
                f"/v1.0/publish/{_topic_path(publication.pubsub, publication.topic)}"
                f"{_query(publication.metadata)}"
            )
            headers = [_header("content-type", publication.content_type)]
            if publication.traceparent:
                # Parents the sidecar's own span; the event keeps the traceparent it carries.
                headers.append(_header("traceparent", publication.traceparent))
            response = await self._post(target, headers, publication.data, call_timeout)
        if not 200 <= response.status < 300:
            raise SidecarError(
                f"{what} failed: {_error_detail(response.status, _error_body(response))}"
            )

    async def publish_bulk(
        self, publications: Sequence[Publication], *, call_timeout: float | None = None
    ) -> dict[int, str]:
        """Publications of one pubsub and topic in one call; failed ones by index."""
        first = publications[0]
        what = f"bulk publish of {len(publications)} events to {first.pubsub}/{first.topic}"
        with map_http_errors(what):
            # The events are JSON already: spliced into the body, never parsed again here.
            entries = [
                b'{"entryId":"%d","event":%b,"contentType":%b,"metadata":%b}'
                % (
                    n,
                    _bulk_event(publication),
                    orjson.dumps(publication.content_type),
                    # Per entry: the sidecar ignores the request's metadata for entries
                    # that have none of their own.
                    orjson.dumps(dict(publication.metadata)),
                )
                for n, publication in enumerate(publications)
            ]
            response = await self._post(
                f"/v1.0-alpha1/publish/bulk/{_topic_path(first.pubsub, first.topic)}",
                [b"content-type: application/json\r\n"],
                b"[" + b",".join(entries) + b"]",
                call_timeout,
            )
        if 200 <= response.status < 300:
            return {}
        body = _error_body(response)
        detail = _error_detail(response.status, body)
        failed = _failed_entries(body, len(publications), detail)
        if not failed:
            raise SidecarError(f"{what} failed: {detail}")
        return failed


def _failed_entries(body: dict[str, object], count: int, detail: str) -> dict[int, str]:
    """The entries daprd reports as failed, by index; empty when it names none (or names
    one we never sent: then nothing it says can be trusted entry by entry)."""
    entries = body.get("failedEntries")
    if not isinstance(entries, list):
        return {}
    failed: dict[int, str] = {}
    for entry in entries:
        entry_id = entry.get("entryId") if isinstance(entry, dict) else None
        if not isinstance(entry_id, str) or not entry_id.isdigit() or int(entry_id) >= count:
            return {}
        failed[int(entry_id)] = str(entry.get("error") or detail)
    return failed
