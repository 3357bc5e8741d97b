"""The limit reference: CloudEvents pushed through the worker's daprd with no worker involved."""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from typing import Any

import grpc
from dapr.proto.runtime.v1 import dapr_pb2_grpc, pubsub_pb2

from bench.config import LIMIT_TYPE, ROOT
from bench.figures import pct
from bench.load import Bench
from bench.measure import CpuMeter, per_second

__all__ = ["limit_reference", "publish_flat_out", "publish_paced"]


async def limit_reference(
    bench: Bench, publishers: int, seconds: float, batch: int = 1, interval: float = 0.0
) -> dict[str, Any]:
    """Structured CloudEvents pushed through the worker's daprd as fast as it takes them,
    one per call (`batch` 1) or `batch` per bulk publish; or, with `interval`, each
    publisher paced to one event per interval (the bus alone at a worker's load)."""
    print(
        f"bench: limit x{publishers} (batch {batch}, interval {interval}) ...",
        file=sys.stderr,
        flush=True,
    )
    assert bench.worker_sidecar is not None
    bench.recorder.limit_events = 0
    bench.recorder.limit_samples = []
    address = bench.worker_sidecar.grpc_address
    meter = CpuMeter(bench.bus_pids())
    began = start = time.monotonic()
    pacer_cpu: float | None = None
    if interval:
        paced = await publish_paced(address, publishers, interval, seconds)
        accepted, start, elapsed, pacer_cpu = paced
    else:
        accepted = await publish_flat_out(address, publishers, seconds, batch)
        elapsed = time.monotonic() - start
    wait_deadline = time.monotonic() + 60
    while bench.recorder.limit_events < accepted and time.monotonic() < wait_deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    delivered_seconds = max(bench.recorder.last_limit_at - start, 1e-9)
    busy_seconds = max(time.monotonic() - began, 1e-9)
    floor = [(at - json.loads(raw)["t"]) * 1000 for at, raw in bench.recorder.limit_samples]
    used = meter.seconds()
    if pacer_cpu is not None:
        used["pacer"] = pacer_cpu
    cpus = per_second(used, busy_seconds)
    return {
        "latency_ms_p50": pct(floor, 0.5),
        "latency_ms_p99": pct(floor, 0.99),
        "publishers": publishers,
        "batch": batch,
        "interval": interval,
        "seconds": round(elapsed, 2),
        "published": accepted,
        "accepted_per_s": accepted / elapsed,
        "delivered": bench.recorder.limit_events,
        "delivered_per_s": bench.recorder.limit_events / delivered_seconds,
        "cpus_by_process": cpus,
    }


async def publish_flat_out(address: str, publishers: int, seconds: float, batch: int) -> int:
    """Publishers on this event loop, each as fast as the sidecar acknowledges."""
    accepted = 0
    payload = {"context_id": "ctx", "request_id": "r", "seq": 1, "text": "t0-0 t0-1 "}
    body: dict[str, Any] = {
        "specversion": "1.0",
        "type": LIMIT_TYPE,
        "source": "/bench",
        "subject": "ctx",
        "datacontenttype": "application/json",
        "data": payload,
    }
    deadline = time.monotonic() + seconds

    async def publisher(stub: dapr_pb2_grpc.DaprStub, index: int) -> None:
        nonlocal accepted
        n = 0
        metadata = {"partitionKey": f"ctx-{index}"}
        while time.monotonic() < deadline:
            events: list[bytes] = []
            for _ in range(batch):
                n += 1
                event: dict[str, Any] = {**body, "id": f"limit-{index}-{n}"}
                event["data"] = {**payload, "t": time.monotonic()}
                events.append(json.dumps(event).encode())
            if batch == 1:
                await stub.PublishEvent(
                    pubsub_pb2.PublishEventRequest(
                        pubsub_name="pubsub",
                        topic="responses",
                        data=events[0],
                        data_content_type="application/cloudevents+json",
                        metadata=metadata,
                    )
                )
            else:
                response = await stub.BulkPublishEvent(
                    pubsub_pb2.BulkPublishRequest(
                        pubsub_name="pubsub",
                        topic="responses",
                        entries=[
                            pubsub_pb2.BulkPublishRequestEntry(
                                entry_id=str(k),
                                event=data,
                                content_type="application/cloudevents+json",
                                metadata=metadata,
                            )
                            for k, data in enumerate(events)
                        ],
                    )
                )
                if response.failedEntries:
                    raise RuntimeError(f"limit: {len(response.failedEntries)} refused")
            accepted += batch

    async with grpc.aio.insecure_channel(address) as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        await asyncio.gather(*(publisher(stub, i) for i in range(publishers)))
    return accepted


async def publish_paced(
    address: str, publishers: int, interval: float, seconds: float
) -> tuple[int, float, float, float]:
    """`bench/pacer.py` in its own process: events published, when it began, over
    how many seconds, and its CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.pacer", address),
        *(str(publishers), str(interval), str(seconds)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"bench.pacer failed with exit code {process.returncode}")
    # Children reaped meanwhile: only the pacer (the worker runs on).
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    report = json.loads(out)
    return int(report["published"]), report["start"], report["seconds"], cpu
