"""A fault-injecting proxy in front of a real daprd's gRPC and HTTP APIs.

It forwards every call byte for byte to the real sidecar (unary gRPC calls on one port,
HTTP requests on the other) and fails chosen publishes, chosen entries of bulk publishes
and, while `fail_state()` says so, every state write over gRPC, which the real sidecar
cannot be made to do on demand. A refusal looks as daprd's own does when its broker
fails: over gRPC a status code, over HTTP daprd's status and JSON body (`onPublish` and
`onBulkPublish` in dapr/dapr pkg/api/http/http.go). Everything else, and every event it
lets through, is the real thing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
from aiohttp import web
from dapr.proto.runtime.v1 import pubsub_pb2
from yarl import URL

from testbed.net import free_port

__all__ = ["FaultySidecar"]

_PUBLISH = "/dapr.proto.runtime.v1.Dapr/PublishEvent"
_BULK_PUBLISH = "/dapr.proto.runtime.v1.Dapr/BulkPublishEvent"
_STATE_WRITES = {
    "/dapr.proto.runtime.v1.Dapr/SaveState",
    "/dapr.proto.runtime.v1.Dapr/DeleteState",
}
# Per connection, not per request: the proxy's own client sets what it needs.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "host", "content-length", "transfer-encoding", "te", "upgrade"}
)
_REFUSED = "injected: broker unavailable"
_PUBLISH_ERROR = "ERR_PUBSUB_PUBLISH_MESSAGE"


def _identity(data: bytes) -> bytes:
    return data


@dataclass
class FaultySidecar:
    """`fail(n)` says whether the n-th publish (from 1, gRPC and HTTP alike) is refused;
    `fail_entry(n)` whether the n-th bulk-published event is (reported as failed, and
    not forwarded). `publish_calls` counts the publish calls (single and bulk) by the API
    they came over, "grpc" or "http"."""

    fail: Callable[[int], bool]
    fail_entry: Callable[[int], bool] = lambda n: False
    fail_state: Callable[[], bool] = lambda: False
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    refused_state: int = 0
    publishes: int = 0
    refused: int = 0
    bulk_calls: int = 0
    bulk_entries: int = 0
    refused_entries: int = 0
    publish_calls: Counter[str] = field(default_factory=Counter)
    _server: Any = None
    _channel: Any = None
    _http_target: str = ""
    _http_runner: web.AppRunner | None = None
    _http_client: aiohttp.ClientSession | None = None

    async def start(self, grpc_target_port: int, http_target_port: int) -> None:
        """Listens on `grpc_port` and `http_port`, forwarding to daprd's ports given."""
        self._channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_target_port}")
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers([_Forwarder(self)])
        self._server.add_insecure_port(f"127.0.0.1:{self.grpc_port}")
        await self._server.start()
        self._http_target = f"http://127.0.0.1:{http_target_port}"
        # No pool limit: the proxy must not queue what the worker sends concurrently.
        self._http_client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
        )
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._http)
        self._http_runner = web.AppRunner(app, access_log=None)
        await self._http_runner.setup()
        await web.TCPSite(self._http_runner, "127.0.0.1", self.http_port).start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
        if self._channel is not None:
            await self._channel.close()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        if self._http_client is not None:
            await self._http_client.close()

    # --- gRPC -----------------------------------------------------------------------

    async def forward(self, method: str, request: bytes, context: Any) -> bytes:
        if method in _STATE_WRITES and self.fail_state():
            self.refused_state += 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "injected: state store unavailable")
        if method == _BULK_PUBLISH:
            return await self._bulk_publish(request, context)
        if method == _PUBLISH and self._refuse_publish("grpc"):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "injected: sidecar unavailable")
        return await self._forward(method, request, context)

    def _refuse_publish(self, api: str) -> bool:
        self.publish_calls[api] += 1
        self.publishes += 1
        if not self.fail(self.publishes):
            return False
        self.refused += 1
        return True

    def _refuse_entries(self, api: str, entry_ids: Iterable[str]) -> set[str]:
        self.publish_calls[api] += 1
        self.bulk_calls += 1
        refused = set()
        for entry_id in entry_ids:
            self.bulk_entries += 1
            if self.fail_entry(self.bulk_entries):
                refused.add(entry_id)
        self.refused_entries += len(refused)
        return refused

    async def _bulk_publish(self, request: bytes, context: Any) -> bytes:
        bulk = pubsub_pb2.BulkPublishRequest.FromString(request)
        refused = self._refuse_entries("grpc", (entry.entry_id for entry in bulk.entries))
        kept = [entry for entry in bulk.entries if entry.entry_id not in refused]
        response = pubsub_pb2.BulkPublishResponse()
        if kept:
            del bulk.entries[:]
            bulk.entries.extend(kept)
            forwarded = await self._forward(_BULK_PUBLISH, bulk.SerializeToString(), context)
            response.MergeFromString(forwarded)
        for entry_id in refused:
            response.failedEntries.add(entry_id=entry_id, error="injected: entry refused")
        return response.SerializeToString()

    async def _forward(self, method: str, request: bytes, context: Any) -> bytes:
        call = self._channel.unary_unary(
            method, request_serializer=_identity, response_deserializer=_identity
        )
        metadata = tuple((m.key, m.value) for m in context.invocation_metadata() or ())
        try:
            response: bytes = await call(request, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
        return response

    # --- HTTP -----------------------------------------------------------------------

    async def _http(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        route = _publish_route(request.method, request.path)
        if route is not None and route.bulk:
            return await self._http_bulk_publish(request, body, route)
        if route is not None and self._refuse_publish("http"):
            return _publish_failed(route, _REFUSED)
        return await self._http_forward(request, body)

    async def _http_bulk_publish(
        self, request: web.Request, body: bytes, route: _PublishRoute
    ) -> web.StreamResponse:
        try:
            entries = json.loads(body)
            ids = [str(entry["entryId"]) for entry in entries]
        except (ValueError, TypeError, KeyError):
            return await self._http_forward(request, body)  # daprd's own 400
        refused = self._refuse_entries("http", ids)
        if not refused:
            return await self._http_forward(request, body)
        failed: list[Mapping[str, Any]] = [
            {"entryId": entry_id, "error": _REFUSED} for entry_id in ids if entry_id in refused
        ]
        kept = [entry for entry in entries if str(entry["entryId"]) not in refused]
        if kept:
            response = await self._http_forward(
                request, json.dumps(kept, ensure_ascii=False).encode()
            )
            if response.status != 204:
                reported = _failed_entries(response)
                if reported is None:  # the whole call failed: as daprd answered it
                    return response
                failed = [*reported, *failed]
        return _bulk_publish_failed(route, failed)

    async def _http_forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._http_client is not None
        try:
            async with self._http_client.request(
                request.method,
                URL(f"{self._http_target}{request.raw_path}", encoded=True),
                headers=_end_to_end(request.headers.items()),
                data=body,
                # Only the worker's own headers go on: no User-Agent, Accept, ... added.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                allow_redirects=False,
            ) as upstream:
                answer = await upstream.read()
                return web.Response(
                    status=upstream.status,
                    body=answer,
                    headers=_end_to_end(upstream.headers.items()),
                )
        except aiohttp.ClientConnectionError:
            # daprd is gone: so is the connection, as the worker would see without us.
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=502)


def _end_to_end(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers if name.lower() not in _HOP_BY_HOP]


@dataclass(frozen=True)
class _PublishRoute:
    bulk: bool
    pubsub: str
    topic: str


def _publish_route(method: str, path: str) -> _PublishRoute | None:
    """daprd's publish routes: POST|PUT /v1.0/publish/{pubsub}/{topic...} and
    /v1.0[-alpha1]/publish/bulk/{pubsub}/{topic...}."""
    parts = path.split("/")
    if method not in ("POST", "PUT") or len(parts) < 5 or parts[2] != "publish":
        return None
    if parts[3] == "bulk" and len(parts) >= 6 and parts[1] in ("v1.0", "v1.0-alpha1"):
        return _PublishRoute(bulk=True, pubsub=parts[4], topic="/".join(parts[5:]))
    if parts[1] == "v1.0":
        return _PublishRoute(bulk=False, pubsub=parts[3], topic="/".join(parts[4:]))
    return None


def _publish_message(route: _PublishRoute, cause: str) -> str:
    # apierrors.PubSub(name).PublishMessage(topic, err)
    return f"error when publishing to topic {route.topic} in pubsub {route.pubsub}: {cause}"


def _publish_failed(route: _PublishRoute, cause: str) -> web.Response:
    """daprd's answer when the broker refused a publish: 500 and the kit error's JSON."""
    message = _publish_message(route, cause)
    body = {
        "errorCode": _PUBLISH_ERROR,
        "message": message,
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ResourceInfo",
                "description": message,
                "owner": "",
                "resource_name": route.pubsub,
                "resource_type": "pubsub",
            },
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "domain": "dapr.io",
                "metadata": {"error": cause, "topic": route.topic},
                "reason": "DAPR_PUBSUB_PUBLISH_MESSAGE",
            },
        ],
    }
    return _json_error(_compact(body))


def _bulk_publish_failed(route: _PublishRoute, failed: list[Mapping[str, Any]]) -> web.Response:
    """daprd's answer when some entries were not published: 500, the failed entries and
    the error code, repeated (with the first entry's error) in `Metadata.*` headers."""
    body = _compact({"failedEntries": failed, "errorCode": _PUBLISH_ERROR})
    cause = str(failed[0].get("error", ""))
    headers = {
        # Go's net/http writes header names in canonical form.
        "Metadata.responsedata": body,
        "Metadata.error": f"api error: code = Internal desc = {_publish_message(route, cause)}",
    }
    return _json_error(body, headers)


def _json_error(body: str, headers: Mapping[str, str] | None = None) -> web.Response:
    # daprd says `application/json`, with no charset.
    return web.Response(
        status=500,
        body=body.encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _failed_entries(response: web.Response) -> list[Mapping[str, Any]] | None:
    """The failed entries of daprd's bulk answer; None if it is no such answer."""
    try:
        answer = json.loads(response.body)  # type: ignore[arg-type]
        failed = answer["failedEntries"]
    except (ValueError, TypeError, KeyError):
        return None
    return failed if isinstance(failed, list) else None


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class _Forwarder:
    """A generic handler (grpc only needs a `service` method): every method is forwarded."""

    def __init__(self, proxy: FaultySidecar) -> None:
        self._proxy = proxy

    def service(self, handler_call_details: Any) -> Any:
        method = handler_call_details.method

        async def handle(request: bytes, context: Any) -> bytes:
            return await self._proxy.forward(method, request, context)

        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=_identity, response_serializer=_identity
        )
