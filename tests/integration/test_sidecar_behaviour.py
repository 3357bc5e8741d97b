"""What the real sidecar does to a structured CloudEvent on its way through Redis.

The worker's wire contract rests on these facts; if a Dapr upgrade changes one, this fails.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from google.protobuf.json_format import MessageToDict

from tests.conftest import StartSidecar
from tests.harness.apps import RecordingApp, Route
from tests.harness.components import redis_pubsub, tracing_configuration
from tests.integration.sidecar_client import publish_structured
from worker.contract.envelopes import InboundMessage, Publication
from worker.transport.sidecar import SidecarClient

pytestmark = pytest.mark.dapr


async def _sidecar_with_app(
    start_sidecar: StartSidecar, app: RecordingApp, configuration: str | None = None
) -> str:
    port = await app.start()
    # daprd's start blocks until it reaches the app, which answers on this event loop.
    sidecar = await asyncio.to_thread(
        start_sidecar,
        app_id="probe",
        components=[redis_pubsub()],
        app_port=port,
        configuration=configuration,
    )
    return sidecar.grpc_address


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
    start_sidecar: StartSidecar,
) -> None:
    app = RecordingApp(routes=[Route("pubsub", "responses")])
    try:
        address = await _sidecar_with_app(start_sidecar, app)
        await publish_structured(
            address,
            pubsub="pubsub",
            topic="responses",
            event=_event(),
            metadata={"partitionKey": "ctx-42"},
        )
        received = await app.next_event()
    finally:
        await app.stop()

    assert received.id == "req-1:1:0000000003"
    assert received.type == "llm.stream.chunk.v1"
    assert received.source == "/llm-stream-worker"
    assert received.spec_version == "1.0"
    assert received.data_content_type == "application/json"
    assert received.topic == "responses"
    assert received.pubsub_name == "pubsub"
    assert json.loads(received.data) == {"context_id": "ctx-42", "seq": 3, "text": "Hello"}
    extensions = MessageToDict(received.extensions)
    assert extensions["subject"] == "ctx-42"
    assert extensions["partitionkey"] == "ctx-42"
    # A zero-padded string survives as a string, so string order stays numeric order.
    assert extensions["sequence"] == "0000000003"
    # Without a tracing configuration the sidecar blanks the event's trace context.
    assert extensions["traceparent"] == ""


async def test_trace_context_of_the_publish_call_reaches_the_subscriber(
    start_sidecar: StartSidecar,
) -> None:
    app = RecordingApp(routes=[Route("pubsub", "responses")])
    try:
        address = await _sidecar_with_app(start_sidecar, app, tracing_configuration())
        await publish_structured(
            address, pubsub="pubsub", topic="responses", event=_event(), traceparent=TRACEPARENT
        )
        received = await app.next_event()
    finally:
        await app.stop()
    # The sidecar takes the event's trace from the publish call's gRPC metadata, not
    # from the event body: the prompt's trace id, the sidecar's own span id.
    traceparent = MessageToDict(received.extensions)["traceparent"]
    assert traceparent.split("-")[1] == TRACEPARENT.split("-")[1]


async def test_an_envelope_carrying_traceid_keeps_its_own_traceparent(
    start_sidecar: StartSidecar,
) -> None:
    app = RecordingApp(routes=[Route("pubsub", "responses")])
    try:
        # No tracing configuration: without `traceid` this traceparent would be blanked.
        address = await _sidecar_with_app(start_sidecar, app)
        await publish_structured(
            address, pubsub="pubsub", topic="responses", event=_event(traceid=TRACEPARENT)
        )
        received = await app.next_event()
    finally:
        await app.stop()
    # Why the worker's events carry `traceid`: the prompt's trace survives any sidecar
    # configuration, and bulk publishes, which have no per-event trace metadata.
    assert MessageToDict(received.extensions)["traceparent"] == TRACEPARENT


async def test_a_bulk_publish_delivers_every_entry_with_its_own_envelope(
    start_sidecar: StartSidecar,
) -> None:
    app = RecordingApp(routes=[Route("pubsub", "responses")])
    try:
        address = await _sidecar_with_app(start_sidecar, app, tracing_configuration())
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
        async with SidecarClient(address) as client:
            failed = await client.publish_bulk(entries)
        received = [await app.next_event() for _ in entries]
    finally:
        await app.stop()
    assert failed == {}
    by_n = {json.loads(event.data)["n"]: event for event in received}
    assert sorted(by_n) == [1, 2, 3, 4, 5]
    for n, event in by_n.items():
        extensions = MessageToDict(event.extensions)
        assert event.id == f"req-{n}:1:0000000001"
        assert event.type == "llm.stream.chunk.v1"
        assert event.data_content_type == "application/json"
        assert extensions["subject"] == extensions["partitionkey"] == f"ctx-{n}"
        assert extensions["sequence"] == "0000000003"
        # Each entry keeps its own trace, not the bulk call's.
        assert extensions["traceparent"] == f"00-{n:032x}-00f067aa0ba902b7-01"


async def test_integer_extension_arrives_as_float(start_sidecar: StartSidecar) -> None:
    app = RecordingApp(routes=[Route("pubsub", "responses")])
    try:
        address = await _sidecar_with_app(start_sidecar, app)
        await publish_structured(
            address, pubsub="pubsub", topic="responses", event=_event(attempt=2)
        )
        received = await app.next_event()
    finally:
        await app.stop()
    value = MessageToDict(received.extensions)["attempt"]
    # protobuf Struct has only doubles: why the contract puts integers in `data`.
    assert isinstance(value, float)
    assert value == 2.0


async def test_non_json_datacontenttype_reaches_the_app_without_data(
    start_sidecar: StartSidecar,
) -> None:
    app = RecordingApp(routes=[Route("pubsub", "responses")])
    try:
        address = await _sidecar_with_app(start_sidecar, app)
        await publish_structured(
            address,
            pubsub="pubsub",
            topic="responses",
            event=_event(datacontenttype="application/x-custom", data="payload"),
        )
        received = await app.next_event()
    finally:
        await app.stop()
    # Why every response event says datacontenttype application/json.
    assert received.data == b""


async def test_a_plain_json_publish_arrives_stamped_with_its_publish_time(
    start_sidecar: StartSidecar,
) -> None:
    # Context-wide cancels are ordered against prompts by this stamp (the CloudEvent
    # `time` the publisher's sidecar sets), which redeliveries carry unchanged.
    app = RecordingApp(routes=[Route("pubsub", "prompts")])
    try:
        address = await _sidecar_with_app(start_sidecar, app)
        async with SidecarClient(address) as client:
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
        received = [await app.next_event() for _ in range(2)]
    finally:
        await app.stop()
    stamps = [
        InboundMessage(
            id=r.id,
            topic=r.topic,
            data=r.data,
            data_content_type=r.data_content_type,
            extensions=MessageToDict(r.extensions),
        ).published_at
        for r in sorted(received, key=lambda r: json.loads(r.data)["n"])
    ]
    first, second = stamps
    assert first is not None
    assert second is not None
    assert first <= second
