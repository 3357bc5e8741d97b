"""The edge: every gRPC failure leaves `worker.transport.sidecar` as one of the worker's errors."""

from __future__ import annotations

import pytest

from testbed.net import free_port
from worker.contract.envelopes import Publication
from worker.errors import CallRefused, SidecarError
from worker.transport.sidecar import SidecarClient


@pytest.mark.parametrize("traceparent", ["00-abc\n-forged", "00-4bé9-01"])
async def test_a_call_grpc_refuses_to_send_is_call_refused_not_a_foreign_error(
    traceparent: str,
) -> None:
    # grpc raises its own ExecuteBatchError for such metadata; it once ended the process.
    async with SidecarClient(f"127.0.0.1:{free_port()}") as client:
        with pytest.raises(CallRefused, match="publish to pubsub/responses"):
            await client.publish(
                Publication(
                    pubsub="pubsub",
                    topic="responses",
                    data=b"{}",
                    event_id="r:1:1",
                    kind="chunk",
                    traceparent=traceparent,
                )
            )


async def test_a_sidecar_that_does_not_answer_is_a_sidecar_error() -> None:
    async with SidecarClient(f"127.0.0.1:{free_port()}") as client:
        with pytest.raises(SidecarError, match=r"get state statestore/k failed: UNAVAILABLE"):
            await client.get_state("statestore", "k")
