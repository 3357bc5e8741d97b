"""The HTTP publisher: the requests daprd's HTTP API reads, and every failure mapped to
the worker's errors. That daprd accepts them, and delivers the same events as over gRPC,
is tested against daprd (`tests/integration/test_sidecar_behaviour.py`)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from tests.fakes.scripted_http import Answer, Request, scripted_http_peer
from worker.contract.envelopes import Publication
from worker.errors import CallRefused, SidecarError
from worker.transport.http_publisher import HttpPublisher

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _publication(n: int = 1, **overrides: object) -> Publication:
    fields: dict[str, object] = {
        "pubsub": "pubsub",
        "topic": "responses",
        "data": json.dumps({"id": f"e{n}", "data": {"text": "a <b> & \u00e9"}}).encode(),
        "event_id": f"e{n}",
        "kind": "chunk",
        "metadata": {"partitionKey": f"ctx {n}/&?"},
    }
    fields.update(overrides)
    return Publication(**fields)  # type: ignore[arg-type]


async def test_a_publish_is_one_post_with_the_event_as_body_and_metadata_in_the_query() -> None:
    async with (
        scripted_http_peer(lambda r: Answer.of(204)) as peer,
        HttpPublisher("127.0.0.1", peer.port, api_token=SecretStr("s3cret")) as publisher,
    ):
        await publisher.publish(_publication(traceparent=TRACEPARENT), call_timeout=5)
    [request] = peer.requests
    url = urlsplit(request.target)
    assert request.head.startswith(b"POST /v1.0/publish/pubsub/responses?")
    assert parse_qs(url.query) == {"metadata.partitionKey": ["ctx 1/&?"]}
    assert request.header("content-type") == "application/cloudevents+json"
    assert request.header("dapr-api-token") == "s3cret"
    assert request.header("traceparent") == TRACEPARENT
    assert request.header("host") == f"127.0.0.1:{peer.port}"
    assert request.body == _publication().data


async def test_a_bulk_publish_splices_each_event_into_one_json_array() -> None:
    publications = [_publication(n) for n in range(3)]
    async with (
        scripted_http_peer(lambda r: Answer.of(204)) as peer,
        HttpPublisher("127.0.0.1", peer.port) as publisher,
    ):
        failed = await publisher.publish_bulk(publications, call_timeout=5)
    [request] = peer.requests
    assert failed == {}
    assert request.target == "/v1.0-alpha1/publish/bulk/pubsub/responses"
    assert request.header("content-type") == "application/json"
    assert request.header("dapr-api-token") is None
    assert json.loads(request.body) == [
        {
            "entryId": str(n),
            "event": json.loads(p.data),
            "contentType": "application/cloudevents+json",
            "metadata": {"partitionKey": f"ctx {n}/&?"},
        }
        for n, p in enumerate(publications)
    ]


async def test_bulk_entries_that_are_not_json_travel_as_daprd_reads_them() -> None:
    publications = [
        _publication(1, data=b"plain words", content_type="text/plain"),
        _publication(2, data=b"\x00\xff", content_type="application/octet-stream"),
    ]
    async with (
        scripted_http_peer(lambda r: Answer.of(204)) as peer,
        HttpPublisher("127.0.0.1", peer.port) as publisher,
    ):
        await publisher.publish_bulk(publications)
    events = [entry["event"] for entry in json.loads(peer.requests[0].body)]
    assert events == ["plain words", "AP8="]


async def test_entries_daprd_reports_failed_come_back_by_index() -> None:
    body = json.dumps(
        {
            "failedEntries": [{"entryId": "2", "error": "broker said no"}],
            "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE",
        }
    ).encode()
    async with (
        scripted_http_peer(lambda r: Answer.of(500, body)) as peer,
        HttpPublisher("127.0.0.1", peer.port) as publisher,
    ):
        failed = await publisher.publish_bulk([_publication(n) for n in range(4)])
    assert failed == {2: "broker said no"}


@pytest.mark.parametrize(
    "body",
    [
        b'{"errorCode":"ERR_PUBSUB_NOT_FOUND","message":"pubsub pubsub not found"}',
        # Failed entries that were never sent: nothing in them can be trusted.
        b'{"failedEntries":[{"entryId":"9","error":"?"}],"errorCode":"ERR_PUBSUB_NOT_FOUND"}',
    ],
)
async def test_a_refused_bulk_publish_fails_whole_with_daprds_error_code(body: bytes) -> None:
    async with (
        scripted_http_peer(lambda r: Answer.of(404, body)) as peer,
        HttpPublisher("127.0.0.1", peer.port) as publisher,
    ):
        with pytest.raises(SidecarError, match=r"HTTP 404 ERR_PUBSUB_NOT_FOUND"):
            await publisher.publish_bulk([_publication(1), _publication(2)])


async def test_a_refused_publish_is_a_sidecar_error_naming_the_topic() -> None:
    body = b'{"errorCode":"ERR_PUBSUB_PUBLISH_MESSAGE","message":"error when publish"}'
    async with (
        scripted_http_peer(lambda r: Answer.of(500, body)) as peer,
        HttpPublisher("127.0.0.1", peer.port) as publisher,
    ):
        with pytest.raises(SidecarError, match=r"pubsub/responses.*HTTP 500 ERR_PUBSUB_PUBLISH"):
            await publisher.publish(_publication())


async def test_no_answer_before_the_deadline_is_a_sidecar_error() -> None:
    async with (
        scripted_http_peer(lambda r: Answer.of(204, delay=1)) as peer,
        HttpPublisher("127.0.0.1", peer.port) as publisher,
    ):
        with pytest.raises(SidecarError, match="deadline"):
            await publisher.publish(_publication(), call_timeout=0.05)


async def test_an_unreachable_sidecar_is_a_sidecar_error() -> None:
    async with scripted_http_peer(lambda r: Answer.of()) as peer:
        port = peer.port
    async with HttpPublisher("127.0.0.1", port) as publisher:
        with pytest.raises(SidecarError, match="ConnectionRefusedError"):
            await publisher.publish(_publication())


async def test_a_sidecar_answering_garbage_is_a_sidecar_error() -> None:
    async with (
        scripted_http_peer(lambda r: Answer([b"nonsense\r\n\r\n"])) as peer,
        HttpPublisher("127.0.0.1", peer.port) as publisher,
    ):
        with pytest.raises(SidecarError, match="HttpProtocolError"):
            await publisher.publish(_publication())


async def test_a_value_no_header_can_carry_is_refused_before_anything_is_sent() -> None:
    def never(request: Request) -> Answer:
        raise AssertionError("nothing should have been sent")

    async with (
        scripted_http_peer(never) as peer,
        HttpPublisher("127.0.0.1", peer.port) as publisher,
    ):
        with pytest.raises(CallRefused, match="content-type"):
            await publisher.publish(_publication(content_type="text/plain\r\nx-evil: 1"))
    assert peer.requests == []


def test_an_api_token_no_header_can_carry_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="API token") as refused:
        HttpPublisher("127.0.0.1", 1, api_token=SecretStr("top\r\nsecret"))
    assert "secret" not in str(refused.value)
