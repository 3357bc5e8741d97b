"""The gateway's side of Dapr's app protocol: subscriptions, single and bulk deliveries,
what is stored before acknowledging, and the app API token. The sidecar is a fake over
HTTP that keeps state writes (and can refuse them)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from llm_stream_gateway.app import Gateway, callback_app
from llm_stream_gateway.settings import Settings
from llm_stream_gateway.sidecar import Sidecar
from tests.fakes.events import as_cloudevent, response_event


@dataclass
class FakeSidecar:
    """daprd's state API: every save recorded; `fail` answers 500 instead."""

    saves: list[list[dict[str, Any]]] = field(default_factory=list)
    fail: bool = False

    def app(self) -> web.Application:
        async def save(request: web.Request) -> web.Response:
            if self.fail:
                return web.Response(status=500, text="redis is down")
            self.saves.append(await request.json())
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/v1.0/state/statestore", save)
        return app


def _cloudevent(request_id: str, seq: int) -> dict[str, Any]:
    """A chunk of the reply, as daprd delivers it (structured mode)."""
    return as_cloudevent(response_event("chunk", request_id, 1, seq, index=seq - 2, text="t"))


@pytest.fixture
async def sidecar() -> AsyncIterator[tuple[FakeSidecar, int]]:
    fake = FakeSidecar()
    async with TestServer(fake.app()) as server:
        assert server.port is not None
        yield fake, server.port


async def _client(port: int, **settings: Any) -> AsyncIterator[TestClient[Any, Any]]:
    config = Settings(dapr_http_port=port, **settings)
    async with (
        Sidecar(config) as sidecar,
        TestClient(TestServer(callback_app(Gateway(config, sidecar)))) as client,
    ):
        yield client


@pytest.fixture
async def client(sidecar: tuple[FakeSidecar, int]) -> AsyncIterator[TestClient[Any, Any]]:
    async for c in _client(sidecar[1]):
        yield c


async def test_it_subscribes_in_bulk_to_the_response_topic(client: TestClient[Any, Any]) -> None:
    response = await client.get("/dapr/subscribe")
    (subscription,) = await response.json()
    assert subscription["pubsubname"] == "pubsub"
    assert subscription["topic"] == "responses"
    assert subscription["bulkSubscribe"] == {
        "enabled": True,
        "maxMessagesCount": 100,
        "maxAwaitDurationMs": 5,
    }


async def test_a_bulk_delivery_is_stored_in_one_write_and_each_entry_answered(
    client: TestClient[Any, Any], sidecar: tuple[FakeSidecar, int]
) -> None:
    fake, _ = sidecar
    entries = [
        {"entryId": "a", "event": _cloudevent("r1", 2), "contentType": "application/json"},
        {"entryId": "b", "event": json.dumps(_cloudevent("r2", 3))},
        {"entryId": "c", "event": {"data": {"no": "ids"}}},
    ]
    response = await client.post("/dapr/events/responses", json={"entries": entries})
    assert await response.json() == {
        "statuses": [
            {"entryId": "a", "status": "SUCCESS"},
            {"entryId": "b", "status": "SUCCESS"},
            {"entryId": "c", "status": "DROP"},
        ]
    }
    (save,) = fake.saves
    assert [item["key"] for item in save] == ["stream|r1|1|2", "stream|r2|1|3"]
    assert {item["metadata"]["ttlInSeconds"] for item in save} == {"3600"}
    assert save[0]["value"]["data"]["text"] == "t"


async def test_events_not_stored_are_not_acknowledged(
    client: TestClient[Any, Any], sidecar: tuple[FakeSidecar, int]
) -> None:
    sidecar[0].fail = True
    single = await client.post("/dapr/events/responses", json=_cloudevent("r1", 2))
    assert await single.json() == {"status": "RETRY"}
    bulk = await client.post(
        "/dapr/events/responses",
        json={"entries": [{"entryId": "a", "event": _cloudevent("r1", 3)}]},
    )
    assert await bulk.json() == {"statuses": [{"entryId": "a", "status": "RETRY"}]}


async def test_events_past_the_replay_bound_are_acknowledged_but_not_stored(
    sidecar: tuple[FakeSidecar, int],
) -> None:
    fake, port = sidecar
    async for client in _client(port, replay_max_events=16):
        response = await client.post("/dapr/events/responses", json=_cloudevent("r1", 17))
        assert await response.json() == {"status": "SUCCESS"}
    assert fake.saves == []


async def test_with_an_app_token_only_the_sidecar_is_heard(
    sidecar: tuple[FakeSidecar, int],
) -> None:
    async for client in _client(sidecar[1], app_api_token="s3cret"):
        refused = await client.post("/dapr/events/responses", json=_cloudevent("r1", 2))
        assert refused.status == 401
        wrong = await client.get("/dapr/subscribe", headers={"dapr-api-token": "guess"})
        assert wrong.status == 401
        heard = await client.post(
            "/dapr/events/responses",
            json=_cloudevent("r1", 2),
            headers={"dapr-api-token": "s3cret"},
        )
        assert await heard.json() == {"status": "SUCCESS"}


async def test_a_single_delivery_is_read_in_structured_or_binary_mode(
    client: TestClient[Any, Any], sidecar: tuple[FakeSidecar, int]
) -> None:
    fake, _ = sidecar
    structured = await client.post(
        "/dapr/events/responses",
        data=json.dumps(_cloudevent("r1", 2)),
        headers={"Content-Type": "application/cloudevents+json"},
    )
    envelope = _cloudevent("r1", 3)
    binary = await client.post(
        "/dapr/events/responses",
        data=json.dumps(envelope.pop("data")),
        headers={
            "Content-Type": envelope.pop("datacontenttype"),
            **{f"ce-{name}": value for name, value in envelope.items()},
        },
    )
    neither = await client.post("/dapr/events/responses", json={"data": {"seq": 4}})
    assert [await r.json() for r in (structured, binary, neither)] == [
        {"status": "SUCCESS"},
        {"status": "SUCCESS"},
        {"status": "DROP"},
    ]
    assert [item["key"] for save in fake.saves for item in save] == [
        "stream|r1|1|2",
        "stream|r1|1|3",
    ]
