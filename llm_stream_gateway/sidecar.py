"""The Dapr sidecar's HTTP API, the only module of the gateway that talks to it.

aiohttp only: the gateway needs no Dapr SDK and no gRPC. Every call has a deadline;
connection failures and deadlines become `SidecarUnavailable` (HTTP 503 to callers).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp

from llm_stream_gateway.errors import SidecarUnavailable
from llm_stream_gateway.settings import Settings

__all__ = ["Sidecar"]


class Sidecar:
    def __init__(self, settings: Settings) -> None:
        self._base = f"http://{settings.dapr_host}:{settings.dapr_http_port}/v1.0"
        self._pubsub = settings.pubsub
        self._store = settings.state_store
        self._timeout = aiohttp.ClientTimeout(total=settings.sidecar_timeout_seconds)
        token = settings.dapr_api_token
        self._headers = {"dapr-api-token": token.get_secret_value()} if token else {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def publish(self, topic: str, data: Mapping[str, Any], *, partition_key: str) -> None:
        """Plain JSON, which Dapr wraps in a CloudEvent; partitioned by conversation."""
        url = f"{self._base}/publish/{self._pubsub}/{quote(topic, safe='')}"
        await self._call(
            "POST", url, body=json.dumps(data), params={"metadata.partitionKey": partition_key}
        )

    async def save(self, items: Sequence[tuple[str, Any]], *, ttl_seconds: int) -> None:
        ttl = {"ttlInSeconds": str(ttl_seconds)}
        body = [{"key": key, "value": value, "metadata": ttl} for key, value in items]
        await self._call("POST", f"{self._base}/state/{self._store}", body=json.dumps(body))

    async def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """The stored values of `keys`; absent keys are left out."""
        if not keys:
            return {}
        body = json.dumps({"keys": list(keys), "parallelism": 16})
        answer = await self._call("POST", f"{self._base}/state/{self._store}/bulk", body=body)
        items = json.loads(answer) if answer else []
        return {item["key"]: item["data"] for item in items if item.get("data") is not None}

    async def get(self, key: str) -> Any | None:
        return (await self.get_many([key])).get(key)

    async def ready(self) -> bool:
        try:
            await self._call("GET", f"{self._base}/healthz/outbound")
        except SidecarUnavailable:
            return False
        return True

    async def _call(
        self,
        method: str,
        url: str,
        *,
        body: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> bytes:
        if self._session is None:
            raise RuntimeError("the sidecar client is not open")
        headers = {"content-type": "application/json"} if body is not None else {}
        try:
            async with self._session.request(
                method, url, data=body, params=params, headers=headers
            ) as response:
                answer = await response.read()
                if response.status >= 300:
                    raise SidecarUnavailable(
                        f"the Dapr sidecar answered {response.status} to {method} "
                        f"{url.removeprefix(self._base)}: {answer[:300].decode(errors='replace')}"
                    )
                return answer
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise SidecarUnavailable(
                f"the Dapr sidecar did not answer {method} {url.removeprefix(self._base)}: "
                f"{type(exc).__name__}"
            ) from exc
