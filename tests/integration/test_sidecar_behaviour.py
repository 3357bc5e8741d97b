"""What the real sidecar does to a structured CloudEvent on its way through Redis.

The worker's wire contract rests on these facts; if a Dapr upgrade changes one, this fails.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace

import pytest

from testbed.apps import RecordingApp
from testbed.components import redis_pubsub, tracing_configuration
from tests.conftest import StartSidecar
from tests.integration.sidecar_client import publish_structured
from worker.contract.envelopes import InboundMessage, Publication
from worker.errors import SidecarError
from worker.transport.dapr import Subscription
from worker.transport.http_publisher import HttpPublisher
from worker.transport.sidecar import SidecarClient

pytestmark = pytest.mark.dapr


@dataclass
class Probed:
    """An app subscribed to `topic` behind a sidecar of its own."""

    app: RecordingApp
    address: str  # the sidecar's gRPC address
    topic: str
    http_port: int  # the sidecar's HTTP API

    async def publish(
        self,
        event: Mapping[str, object],
        *,
        metadata: Mapping[str, str] | None = None,
        traceparent: str | None = None,
    ) -> None:
        """Publishes `event` as a structured CloudEvent to the app's topic."""
        await publish_structured(
            self.address,
            pubsub="pubsub",
            topic=self.topic,
            event=event,
            metadata=metadata,
            traceparent=traceparent,
        )


Probe = Callable[..., Awaitable[Probed]]


@pytest.fixture
async def probe(start_sidecar: StartSidecar) -> AsyncIterator[Probe]:
    """Factory of `Probed` apps; they stop after the test, before their sidecars."""
    apps: list[RecordingApp] = []

    async def make(*, topic: str = "responses", configuration: str | None = None) -> Probed:
        app = RecordingApp(routes=[Subscription("pubsub", topic)])
        apps.append(app)
        port = await app.start()
        # daprd's start blocks until it reaches the app, which answers on this event loop.
        sidecar = await asyncio.to_thread(
            start_sidecar,
            app_id="probe",
            components=[redis_pubsub()],
            app_port=port,
            configuration=configuration,
        )
        return Probed(app, sidecar.grpc_address, topic, sidecar.http_port)

    yield make
    for app in apps:
        await app.stop()


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _event(**overrides: object) -> dict[str, object]:
    event: dict[str, object] = {
        "specversion": "1.0",
        "id": "req-1:1:0000000003",
        "source": "/llm-stream-worker",
        "type": "llm.stream.chunk.v1",
        "subject": "ctx-42",
        "partitionkey": "ctx-42",
        "sequence": "0000000003",
        "datacontenttype": "application/json",
        "traceparent": TRACEPARENT,
        "data": {"context_id": "ctx-42", "seq": 3, "text": "Hello"},
    }
    event.update(overrides)
    return event


async def test_structured_cloudevent_keeps_id_type_subject_extensions_and_data(
    probe: Probe,
) -> None:
    probed = await probe()
    await probed.publish(
        _event(),
        metadata={"partitionKey": "ctx-42"},
    )
    received = await probed.app.next_event()

    assert received.id == "req-1:1:0000000003"
    assert received.type == "llm.stream.chunk.v1"
    assert received.source == "/llm-stream-worker"
    assert received.spec_version == "1.0"
    assert received.data_content_type == "application/json"
    assert received.topic == "responses"
    assert json.loads(received.data) == {"context_id": "ctx-42", "seq": 3, "text": "Hello"}
    extensions = received.extensions
    assert extensions["subject"] == "ctx-42"
    assert extensions["partitionkey"] == "ctx-42"
    # A zero-padded string survives as a string, so string order stays numeric order.
    assert extensions["sequence"] == "0000000003"
    # Without a tracing configuration the sidecar blanks the event's trace context.
    assert extensions["traceparent"] == ""


async def test_trace_context_of_the_publish_call_reaches_the_subscriber(
    probe: Probe,
) -> None:
    probed = await probe(configuration=tracing_configuration())
    await probed.publish(_event(), traceparent=TRACEPARENT)
    received = await probed.app.next_event()
    # The sidecar takes the event's trace from the publish call's gRPC metadata, not
    # from the event body: the prompt's trace id, the sidecar's own span id.
    traceparent = str(received.extensions["traceparent"])
    assert traceparent.split("-")[1] == TRACEPARENT.split("-")[1]


async def test_an_envelope_carrying_traceid_keeps_its_own_traceparent(
    probe: Probe,
) -> None:
    # No tracing configuration: without `traceid` this traceparent would be blanked.
    probed = await probe()
    await probed.publish(_event(traceid=TRACEPARENT))
    received = await probed.app.next_event()
    # Why the worker's events carry `traceid`: the prompt's trace survives any sidecar
    # configuration, and bulk publishes, which have no per-event trace metadata.
    assert received.extensions["traceparent"] == TRACEPARENT


async def test_a_bulk_publish_delivers_every_entry_with_its_own_envelope(
    probe: Probe,
) -> None:
    probed = await probe(configuration=tracing_configuration())
    entries = [
        Publication(
            pubsub="pubsub",
            topic="responses",
            event_id=f"req-{n}:1:0000000001",
            kind="chunk",
            data=json.dumps(
                _event(
                    id=f"req-{n}:1:0000000001",
                    subject=f"ctx-{n}",
                    partitionkey=f"ctx-{n}",
                    traceparent=f"00-{n:032x}-00f067aa0ba902b7-01",
                    traceid=f"00-{n:032x}-00f067aa0ba902b7-01",
                    data={"n": n},
                )
            ).encode(),
            metadata={"partitionKey": f"ctx-{n}"},
        )
        for n in range(1, 6)
    ]
    async with SidecarClient(probed.address) as client:
        failed = await client.publish_bulk(entries)
    received = [await probed.app.next_event() for _ in entries]
    assert failed == {}
    by_n = {json.loads(event.data)["n"]: event for event in received}
    assert sorted(by_n) == [1, 2, 3, 4, 5]
    for n, event in by_n.items():
        extensions = event.extensions
        assert event.id == f"req-{n}:1:0000000001"
        assert event.type == "llm.stream.chunk.v1"
        assert event.data_content_type == "application/json"
        assert extensions["subject"] == extensions["partitionkey"] == f"ctx-{n}"
        assert extensions["sequence"] == "0000000003"
        # Each entry keeps its own trace, not the bulk call's.
        assert extensions["traceparent"] == f"00-{n:032x}-00f067aa0ba902b7-01"


def _chunk(n: int, via: str) -> Publication:
    event = _event(
        id=f"req-{via}:1:{n:010d}",
        subject=f"ctx-{n}",
        partitionkey=f"ctx-{n}",
        traceid=f"00-{n + 1:032x}-00f067aa0ba902b7-01",
        # What JSON re-encoding could change: escapes, non-ASCII, numbers.
        data={"n": n, "text": "<b> & \u00e9 \u2028 \ud83d\ude00", "f": 0.1, "big": 2**53},
    )
    return Publication(
        pubsub="pubsub",
        topic="responses",
        event_id=str(event["id"]),
        kind="chunk",
        data=json.dumps(event).encode(),
        metadata={"partitionKey": f"ctx-{n}"},
    )


def _as_delivered(event: InboundMessage) -> dict[str, object]:
    """What a subscriber sees of an event, but its id."""
    return {
        "type": event.type,
        "source": event.source,
        "spec_version": event.spec_version,
        "data_content_type": event.data_content_type,
        "data": event.data,
        "extensions": dict(event.extensions),
    }


async def test_publishes_over_http_deliver_exactly_what_grpc_publishes_deliver(
    probe: Probe,
) -> None:
    # Why the worker may publish over HTTP: the subscriber cannot tell the difference.
    probed = await probe(configuration=tracing_configuration())
    async with (
        SidecarClient(probed.address) as grpc_client,
        HttpPublisher("127.0.0.1", probed.http_port) as http_client,
    ):
        await grpc_client.publish(_chunk(0, "grpc"))
        await http_client.publish(_chunk(0, "http"))
        assert await grpc_client.publish_bulk([_chunk(n, "grpc") for n in range(1, 4)]) == {}
        assert await http_client.publish_bulk([_chunk(n, "http") for n in range(1, 4)]) == {}
    received = [await probed.app.next_event() for _ in range(8)]
    by_path: dict[str, dict[str, dict[str, object]]] = {"grpc": {}, "http": {}}
    for event in received:
        via, _, seq = event.id.removeprefix("req-").partition(":1:")
        by_path[via][seq] = _as_delivered(event)
    assert sorted(by_path["http"]) == sorted(by_path["grpc"]) == [f"{n:010d}" for n in range(4)]
    assert by_path["http"] == by_path["grpc"]
    assert json.loads(by_path["http"]["0000000000"]["data"])["big"] == 2**53  # type: ignore[arg-type]


async def test_a_publish_over_http_to_a_missing_pubsub_fails_with_daprds_error(
    probe: Probe,
) -> None:
    probed = await probe()
    async with HttpPublisher("127.0.0.1", probed.http_port) as http_client:
        with pytest.raises(SidecarError, match="ERR_PUBSUB_NOT_FOUND"):
            await http_client.publish(replace(_chunk(0, "http"), pubsub="nope"), call_timeout=5)
        with pytest.raises(SidecarError, match="ERR_PUBSUB_NOT_FOUND"):
            await http_client.publish_bulk(
                [replace(_chunk(n, "http"), pubsub="nope") for n in range(2)], call_timeout=5
            )


async def test_integer_extension_arrives_as_float(probe: Probe) -> None:
    probed = await probe()
    await probed.publish(_event(attempt=2))
    received = await probed.app.next_event()
    value = received.extensions["attempt"]
    # protobuf Struct has only doubles: why the contract puts integers in `data`.
    assert isinstance(value, float)
    assert value == 2.0


async def test_non_json_datacontenttype_reaches_the_app_without_data(
    probe: Probe,
) -> None:
    probed = await probe()
    await probed.publish(
        _event(datacontenttype="application/x-custom", data="payload"),
    )
    received = await probed.app.next_event()
    # Why every response event says datacontenttype application/json.
    assert received.data == b""


async def test_a_plain_json_publish_arrives_stamped_with_its_publish_time(
    probe: Probe,
) -> None:
    # Context-wide cancels are ordered against prompts by this stamp (the CloudEvent
    # `time` the publisher's sidecar sets), which redeliveries carry unchanged.
    probed = await probe(topic="prompts")
    async with SidecarClient(probed.address) as client:
        for n in range(2):
            await client.publish(
                Publication(
                    pubsub="pubsub",
                    topic="prompts",
                    data=json.dumps({"n": n}).encode(),
                    event_id=str(n),
                    kind="prompt",
                    content_type="application/json",
                )
            )
    received = [await probed.app.next_event() for _ in range(2)]
    stamps = [r.published_at for r in sorted(received, key=lambda r: json.loads(r.data)["n"])]
    first, second = stamps
    assert first is not None
    assert second is not None
    assert first <= second
