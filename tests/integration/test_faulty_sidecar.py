"""The fault-injecting proxy's HTTP side: it forwards publishes to the real daprd, and
what it refuses looks exactly as daprd's own answer when its broker fails."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from testbed.components import redis_pubsub
from testbed.process import ProcessLauncher
from tests.fakes.faulty_sidecar import FaultySidecar

pytestmark = pytest.mark.dapr

TOKEN = "s3cret-api-token"
EVENT = {
    "specversion": "1.0",
    "id": "e1",
    "source": "test",
    "type": "llm.stream.chunk.v1",
    "datacontenttype": "application/json",
    "data": {"text": "hi"},
}


@dataclass(frozen=True)
class Answer:
    status: int
    headers: CIMultiDict[str]
    body: Any


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[ProcessLauncher]:
    launcher = ProcessLauncher(tmp_path / "dapr")
    try:
        yield launcher
    finally:
        launcher.close()


async def _post(http: aiohttp.ClientSession, url: str, body: Any, content_type: str) -> Answer:
    async with http.post(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": content_type, "dapr-api-token": TOKEN},
    ) as response:
        text = await response.text()
        body = json.loads(text) if text else None
        return Answer(response.status, CIMultiDict(response.headers), body)


async def _publish(http: aiohttp.ClientSession, base: str) -> Answer:
    url = f"{base}/v1.0/publish/pubsub/responses?metadata.partitionKey=ctx-1"
    return await _post(http, url, EVENT, "application/cloudevents+json")


async def _bulk_publish(http: aiohttp.ClientSession, base: str) -> Answer:
    entries = [
        {
            "entryId": str(i),
            "event": {**EVENT, "id": f"e{i}"},
            "contentType": "application/cloudevents+json",
            "metadata": {"partitionKey": "ctx-1"},
        }
        for i in range(2)
    ]
    url = f"{base}/v1.0-alpha1/publish/bulk/pubsub/responses"
    return await _post(http, url, entries, "application/json")


def _shape(value: Any) -> Any:
    """The JSON's structure: keys and the types of the leaves."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(item) for item in value]
    return type(value).__name__


async def test_refused_publishes_look_as_daprd_s_own_broker_failures(
    launcher: ProcessLauncher,
) -> None:
    # With an API token, daprd answers only requests that carry it: the proxy must forward it.
    sidecar = await asyncio.to_thread(
        launcher.start,
        app_id="publisher",
        components=[redis_pubsub()],
        env={"DAPR_API_TOKEN": TOKEN},
    )
    proxy = FaultySidecar(fail=lambda n: n == 1, fail_entry=lambda n: n == 1)
    await proxy.start(sidecar.grpc_port, sidecar.http_port)
    via_proxy = f"http://127.0.0.1:{proxy.http_port}"
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(60):
            refused = await _publish(http, via_proxy)
            forwarded = await _publish(http, via_proxy)
            bulk_refused = await _bulk_publish(http, via_proxy)
            await asyncio.to_thread(launcher.redis.stop)  # now daprd's broker fails
            failed = await _publish(http, sidecar.http_url)
            bulk_failed = await _bulk_publish(http, sidecar.http_url)
    finally:
        await proxy.stop()

    assert forwarded.status == 204
    assert (proxy.publishes, proxy.refused) == (2, 1)
    assert (proxy.bulk_calls, proxy.bulk_entries, proxy.refused_entries) == (1, 2, 1)
    assert proxy.publish_calls == {"http": 3}

    assert failed.status == 500
    assert refused.status == failed.status
    assert refused.headers["Content-Type"] == failed.headers["Content-Type"]
    assert refused.body["errorCode"] == failed.body["errorCode"] == "ERR_PUBSUB_PUBLISH_MESSAGE"
    assert [(d["@type"], d.get("reason")) for d in refused.body["details"]] == [
        (d["@type"], d.get("reason")) for d in failed.body["details"]
    ]
    assert _shape(refused.body) == _shape(failed.body)
    assert refused.body["message"].startswith("error when publishing to topic responses in ")

    # Entry "1" went through (else daprd's answer would list it); "0" is reported failed.
    assert bulk_failed.status == 500
    assert bulk_refused.status == bulk_failed.status
    assert [e["entryId"] for e in bulk_refused.body["failedEntries"]] == ["0"]
    assert sorted(e["entryId"] for e in bulk_failed.body["failedEntries"]) == ["0", "1"]
    assert bulk_refused.body["errorCode"] == bulk_failed.body["errorCode"]
    assert _shape(bulk_refused.body["failedEntries"][0]) == _shape(
        bulk_failed.body["failedEntries"][0]
    )
    assert bulk_refused.body.keys() == bulk_failed.body.keys()
    for answer in (bulk_refused, bulk_failed):
        assert json.loads(answer.headers["Metadata.responsedata"]) == answer.body
        assert answer.headers["Metadata.error"].startswith(
            "api error: code = Internal desc = error when publishing to topic responses"
        )
