"""The gateway's two HTTP servers: the public API, and the sidecar's event callback."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web

from llm_stream_gateway.errors import (
    GatewayError,
    InvalidRequest,
    StreamNotFound,
    error_body,
)
from llm_stream_gateway.follow import follow
from llm_stream_gateway.hub import Hub
from llm_stream_gateway.openai_wire import (
    ChatRequest,
    completion,
    failure_error,
    parse_chat_request,
)
from llm_stream_gateway.replay import EventLog, StreamInfo
from llm_stream_gateway.settings import Settings
from llm_stream_gateway.sidecar import Sidecar
from llm_stream_gateway.sse import Cursor, SseEvent, SseWriter, parse_cursor
from worker.client.consumer import Event, Finished, Output
from worker.client.errors import MalformedEvent
from worker.contract.prompt import ID_PATTERN

__all__ = ["Gateway", "HttpDelivery", "callback_app", "public_app"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Gateway:
    """What both servers share: settings, the sidecar, the event log, the live hub."""

    def __init__(self, settings: Settings, sidecar: Sidecar) -> None:
        self.settings = settings
        self.sidecar = sidecar
        self.log = EventLog(
            sidecar,
            ttl_seconds=settings.replay_ttl_seconds,
            max_events=settings.replay_max_events,
        )
        self.hub = Hub()

    def follow(self, request_id: str) -> AsyncGenerator[Output, None]:
        s = self.settings
        return follow(
            request_id,
            log=self.log,
            hub=self.hub,
            poll_interval=s.poll_interval_seconds,
            first_event_timeout=s.first_event_timeout_seconds,
            idle_timeout=s.idle_timeout_seconds,
        )

    # --- the sidecar's side -------------------------------------------------------------

    async def receive(self, envelopes: Sequence[Any]) -> list[str]:
        """Delivered response events: stored first, then handed to live followers.

        Stored before they are acknowledged, so an event this replica took is replayable
        from any replica; a store that fails makes Dapr deliver them again (RETRY).
        Returns each envelope's status, in order.
        """
        statuses: list[str] = []
        events: list[Event] = []
        for envelope in envelopes:
            try:
                event = _event(envelope)
            except MalformedEvent as exc:
                log.warning("dropping a malformed response event: %s", exc)
                statuses.append("DROP")
                continue
            events.append(event)
            statuses.append("SUCCESS")
        try:
            await self.log.append(events)
        except GatewayError as exc:
            log.warning("%d events not stored, asking for redelivery: %s", len(events), exc)
            return ["RETRY" if status == "SUCCESS" else status for status in statuses]
        for event in events:
            self.hub.deliver(event)
        return statuses

    # --- the public side ----------------------------------------------------------------

    async def start(self, request: ChatRequest) -> StreamInfo:
        info = StreamInfo(
            request.prompt.request_id,
            request.context_id,
            request.model,
            int(time.time()),
            request.include_usage,
        )
        # Before publishing: a GET /v1/streams/<id> right after the POST must find it.
        await self.log.open_stream(info)
        await self.sidecar.publish(
            self.settings.prompt_topic,
            json.loads(request.prompt.body),
            partition_key=request.context_id,
        )
        return info

    async def info(self, request_id: str) -> StreamInfo:
        if not _valid_id(request_id):
            raise InvalidRequest(f"stream ids match {ID_PATTERN}", param="request_id")
        info = await self.log.info(request_id)
        if info is None:
            raise StreamNotFound(
                f"no stream {request_id!r} (unknown, or older than "
                f"{self.settings.replay_ttl_seconds} s)"
            )
        return info

    async def cancel(self, info: StreamInfo) -> None:
        await self.sidecar.publish(
            self.settings.cancel_topic,
            {"context_id": info.context_id, "request_id": info.request_id},
            partition_key=info.context_id,
        )


@dataclass(frozen=True, slots=True)
class HttpDelivery:
    """One event as daprd POSTs it: a CloudEvent in structured or binary mode."""

    headers: Mapping[str, str]
    body: bytes


def _event(envelope: Any) -> Event:
    """From a bulk entry's event (parsed JSON, or JSON text) or an `HttpDelivery`."""
    if isinstance(envelope, HttpDelivery):
        event = Event.from_http(envelope.headers, envelope.body)
    else:
        if isinstance(envelope, str | bytes):
            try:
                envelope = json.loads(envelope)
            except ValueError as exc:
                raise MalformedEvent("the delivery is not JSON") from exc
        if not isinstance(envelope, dict):
            raise MalformedEvent("the delivery is not a JSON object")
        event = Event.from_cloudevent(envelope)
    data = event.data
    ids_ok = isinstance(data.get("request_id"), str) and isinstance(data.get("context_id"), str)
    numbers_ok = all(
        isinstance(data.get(name), int) and not isinstance(data.get(name), bool)
        for name in ("attempt", "seq")
    )
    if not (ids_ok and numbers_ok):
        raise MalformedEvent(f"event {event.id!r} lacks request_id, context_id, attempt or seq")
    return event


def _valid_id(value: str) -> bool:
    return re.fullmatch(ID_PATTERN.strip("^$"), value) is not None


def _headers(info: StreamInfo) -> dict[str, str]:
    return {"X-Request-Id": info.request_id, "X-Context-Id": info.context_id}


def _error_response(error: GatewayError, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers=headers)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return _error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response(
            error_body(exc.reason, "invalid_request_error", None, f"http_{exc.status}"),
            status=exc.status,
        )


async def _sse(
    request: web.Request,
    gateway: Gateway,
    info: StreamInfo,
    outputs: AsyncGenerator[Output, None],
    cursor: Cursor,
    *,
    first: Output | None = None,
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            # Proxies (nginx) must pass each event on at once.
            "X-Accel-Buffering": "no",
            **_headers(info),
        }
    )
    await response.prepare(request)
    writer = SseWriter(info, cursor, include_usage=info.include_usage)
    last_id = f"{info.request_id}:{cursor.attempt}:{cursor.seq}"
    # The follower runs apart, so that a quiet stretch (an LLM slow to answer) can be
    # filled with keep-alive comments that stop proxies from closing the connection.
    items: asyncio.Queue[Output | GatewayError | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            if first is not None:
                await items.put(first)
            async for output in outputs:
                await items.put(output)
            await items.put(None)
        except GatewayError as exc:
            await items.put(exc)

    # On the first event, not alone: some SSE parsers (OpenAI's SDK) dispatch a block
    # without data as an empty event.
    retry = f"retry: {gateway.settings.sse_retry_ms}\n".encode()
    caller_left = False
    try:
        async with asyncio.TaskGroup() as tasks:
            pumping = tasks.create_task(pump())
            while True:
                try:
                    async with asyncio.timeout(gateway.settings.heartbeat_seconds):
                        item = await items.get()
                except TimeoutError:
                    # A comment line with no blank line after it: a blank line would
                    # end an event, which OpenAI's SDK (holding the last id) would
                    # hand over as an empty one.
                    await response.write(b": keep-alive\n")
                    continue
                if item is None:
                    break
                if isinstance(item, GatewayError):
                    await response.write(
                        retry + SseEvent(last_id, json.dumps(item.body())).encode()
                    )
                    break
                for event in writer.events(item):
                    last_id = event.id
                    await response.write(retry + event.encode())
                    retry = b""
            pumping.cancel()
    except* ConnectionResetError:
        # The caller left: the reply goes on, and stays resumable. Not a cancel.
        log.info("stream %s: caller disconnected after %s", info.request_id, last_id)
        caller_left = True
    finally:
        await outputs.aclose()
    if not caller_left:
        await response.write_eof()
    return response


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    gateway: Gateway = request.app["gateway"]
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from exc
    chat = parse_chat_request(
        body,
        context_header=request.headers.get("X-Context-Id"),
        request_header=request.headers.get("X-Request-Id"),
        default_model=gateway.settings.default_model,
    )
    info = await gateway.start(chat)
    headers = _headers(info)
    if chat.background:
        return web.json_response(
            {
                "id": info.request_id,
                "object": "chat.completion.stream",
                "created": info.created,
                "model": info.model,
                "context_id": info.context_id,
                "stream_url": f"/v1/streams/{info.request_id}",
            },
            status=202,
            headers=headers,
        )
    outputs = gateway.follow(info.request_id)
    try:
        # Waited for before answering: an early failure gets its own HTTP status.
        first = await anext(outputs)
    except GatewayError as exc:
        await outputs.aclose()
        return _error_response(exc, headers)
    if isinstance(first, Finished) and (error := failure_error(first)) is not None:
        await outputs.aclose()
        return _error_response(error, headers)
    if chat.stream:
        return await _sse(request, gateway, info, outputs, Cursor(), first=first)
    try:
        finished = first if isinstance(first, Finished) else None
        while finished is None:
            output = await anext(outputs)
            if isinstance(output, Finished):
                finished = output
    except GatewayError as exc:
        return _error_response(exc, headers)
    finally:
        await outputs.aclose()
    error = failure_error(finished)
    if error is not None:
        return _error_response(error, headers)
    return web.json_response(completion(info, finished), headers=headers)


async def _stream(request: web.Request) -> web.StreamResponse:
    gateway: Gateway = request.app["gateway"]
    request_id = request.match_info["request_id"]
    info = await gateway.info(request_id)
    # Last-Event-ID (sent by a reconnecting EventSource) wins over the query parameter.
    position = request.headers.get("Last-Event-ID") or request.query.get("starting_after")
    cursor = parse_cursor(request_id, position)
    return await _sse(request, gateway, info, gateway.follow(request_id), cursor)


async def _cancel(request: web.Request) -> web.StreamResponse:
    gateway: Gateway = request.app["gateway"]
    info = await gateway.info(request.match_info["request_id"])
    await gateway.cancel(info)
    return web.json_response(
        {"id": info.request_id, "object": "chat.completion.cancellation", "status": "requested"},
        status=202,
        headers=_headers(info),
    )


async def _page(request: web.Request) -> web.StreamResponse:
    page = resources.files("llm_stream_gateway").joinpath("static/index.html").read_text()
    return web.Response(text=page, content_type="text/html")


async def _healthz(request: web.Request) -> web.StreamResponse:
    gateway: Gateway = request.app["gateway"]
    ready = await gateway.sidecar.ready()
    return web.json_response({"sidecar": ready}, status=200 if ready else 503)


def public_app(gateway: Gateway) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=gateway.settings.max_body_bytes)
    app["gateway"] = gateway
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_get("/v1/streams/{request_id}", _stream)
    app.router.add_post("/v1/streams/{request_id}/cancel", _cancel)
    app.router.add_get("/", _page)
    app.router.add_get("/healthz", _healthz)
    return app


def callback_app(gateway: Gateway) -> web.Application:
    """What daprd calls (its --app-port): the subscription, and each response event."""
    settings = gateway.settings
    route = "/dapr/events/responses"

    async def subscriptions(request: web.Request) -> web.StreamResponse:
        subscription: dict[str, Any] = {
            "pubsubname": settings.pubsub,
            "topic": settings.response_topic,
            "route": route,
        }
        if settings.bulk_max_messages > 1:
            # One HTTP call and one state store write per batch instead of per event.
            subscription["bulkSubscribe"] = {
                "enabled": True,
                "maxMessagesCount": settings.bulk_max_messages,
                "maxAwaitDurationMs": settings.bulk_max_await_ms,
            }
        return web.json_response([subscription])

    async def event(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None  # not JSON: a binary-mode CloudEvent may still carry other data
        if isinstance(body, dict) and isinstance(body.get("entries"), list):
            entries = [e for e in body["entries"] if isinstance(e, dict)]
            statuses = await gateway.receive([e.get("event") for e in entries])
            return web.json_response(
                {
                    "statuses": [
                        {"entryId": e.get("entryId"), "status": status}
                        for e, status in zip(entries, statuses, strict=True)
                    ]
                }
            )
        (status,) = await gateway.receive([HttpDelivery(request.headers, raw)])
        return web.json_response({"status": status})

    token = settings.app_api_token

    @web.middleware
    async def sidecar_only(request: web.Request, handler: Handler) -> web.StreamResponse:
        presented = request.headers.get("dapr-api-token", "")
        if token is not None and not hmac.compare_digest(
            presented.encode(), token.get_secret_value().encode()
        ):
            return web.json_response({"error": "unauthorized"}, status=401)
        return await handler(request)

    app = web.Application(middlewares=[sidecar_only], client_max_size=settings.max_body_bytes)
    app.router.add_get("/dapr/subscribe", subscriptions)
    app.router.add_post(route, event)
    return app
