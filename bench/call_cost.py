"""CPU per publish call, the worker's side and daprd's: gRPC against HTTP, same events.

One real daprd (Redis pub/sub); this process publishes through the worker's own edge
classes (`SidecarClient` over grpc.aio, `HttpPublisher` over HTTP/1.1; and, for
comparison, the same HTTP requests sent with aiohttp): a single event
and bulk publishes of 5, 20, 50 and 100 events (`--events`), one call at a time and 4 at
a time (the worker's default `WORKER_PUBLISH_MAX_IN_FLIGHT`), in alternating rounds, on
uvloop as the worker runs. CPU is this process's (every thread) and daprd's, per call.

    python -m bench.call_cost [--calls 1000] [--rounds 3] [--out bench/results/call-cost]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop

from bench.measure import proc_cpu_seconds
from testbed.components import redis_pubsub
from testbed.process import ProcessLauncher
from testbed.sidecar import Sidecar
from worker.contract.envelopes import Publication
from worker.pipeline.ports import BulkEventSink
from worker.transport.http_publisher import HttpPublisher
from worker.transport.sidecar import SidecarClient

__all__ = ["main"]


def _chunk(n: int) -> Publication:
    # As the worker's chunk events are, in size and shape.
    event = {
        "specversion": "1.0",
        "id": f"req-0123456789:1:{n:010d}",
        "source": "/llm-stream-worker",
        "type": "llm.stream.chunk.v1",
        "subject": "ctx-0123456789",
        "partitionkey": "ctx-0123456789",
        "sequence": f"{n:010d}",
        "datacontenttype": "application/json",
        "traceid": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "data": {"context_id": "ctx-0123456789", "request_id": "req-0123456789", "seq": n,
                 "attempt": 1, "text": " token"},
    }  # fmt: skip
    return Publication(
        pubsub="pubsub",
        topic="bench-call-cost",
        data=orjson.dumps(event),
        event_id=str(event["id"]),
        kind="chunk",
        metadata={"partitionKey": "ctx-0123456789"},
    )


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(
    call: Callable[[], Awaitable[Any]], daprd_pid: int, calls: int, concurrency: int
) -> dict[str, float]:
    for _ in range(50):  # connections open, caches warm
        await call()

    async def caller(count: int) -> None:
        for _ in range(count):
            await call()

    own, daprd, wall = _own_cpu(), proc_cpu_seconds(daprd_pid), time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(caller(calls // concurrency))
    wall = time.perf_counter() - wall
    await asyncio.sleep(0.2)  # daprd finishes its side (the Redis writes) before we read
    done = calls // concurrency * concurrency
    return {
        "worker_us_per_call": (_own_cpu() - own) / done * 1e6,
        "daprd_us_per_call": (proc_cpu_seconds(daprd_pid) - daprd) / done * 1e6,
        "wall_us_per_call": wall / done * 1e6,
    }


class _AiohttpPublisher:
    """The same HTTP requests as `HttpPublisher`, sent with aiohttp: what the worker would
    pay for HTTP publishes through the HTTP client it already depends on."""

    def __init__(self, http_url: str) -> None:
        self._url = http_url
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> _AiohttpPublisher:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _post(self, path: str, body: bytes, content_type: str, **params: str) -> None:
        assert self._session is not None
        async with self._session.post(
            self._url + path, data=body, params=params, headers={"content-type": content_type}
        ) as response:
            await response.read()
            if response.status >= 300:
                raise RuntimeError(f"HTTP {response.status}")

    async def publish(self, publication: Publication, *, call_timeout: float | None = None) -> None:
        params = {f"metadata.{k}": v for k, v in publication.metadata.items()}
        path = f"/v1.0/publish/{publication.pubsub}/{publication.topic}"
        await self._post(path, publication.data, publication.content_type, **params)

    async def publish_bulk(
        self, publications: Sequence[Publication], *, call_timeout: float | None = None
    ) -> dict[int, str]:
        first = publications[0]
        body = orjson.dumps(
            [
                {
                    "entryId": str(n),
                    "event": orjson.Fragment(p.data),
                    "contentType": p.content_type,
                    "metadata": dict(p.metadata),
                }
                for n, p in enumerate(publications)
            ]
        )
        path = f"/v1.0-alpha1/publish/bulk/{first.pubsub}/{first.topic}"
        await self._post(path, body, "application/json")
        return {}


async def _round(
    sidecar: Sidecar, daprd_pid: int, calls: int, sizes: list[int]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with (
        SidecarClient(sidecar.grpc_address) as grpc_sink,
        HttpPublisher("127.0.0.1", sidecar.http_port) as http_sink,
        _AiohttpPublisher(sidecar.http_url) as aiohttp_sink,
    ):
        sinks: dict[str, BulkEventSink] = {
            "grpc": grpc_sink,
            "http": http_sink,
            "http (aiohttp)": aiohttp_sink,
        }
        for events in sizes:
            batch = [_chunk(n) for n in range(events)]
            for concurrency in (1, 4):
                for protocol, sink in sinks.items():

                    async def call(
                        sink: BulkEventSink = sink, batch: list[Publication] = batch
                    ) -> None:
                        if len(batch) == 1:
                            await sink.publish(batch[0], call_timeout=10)
                        elif await sink.publish_bulk(batch, call_timeout=10):
                            raise RuntimeError("entries failed")

                    figures = await _measure(call, daprd_pid, calls, concurrency)
                    rows.append(
                        {"protocol": protocol, "events": events, "concurrency": concurrency}
                        | figures
                    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", default="1,5,20,50,100", help="events a call, comma-separated")
    parser.add_argument("--out", type=Path, default=Path("bench/results/call-cost"))
    args = parser.parse_args()
    launcher = ProcessLauncher(Path(tempfile.mkdtemp(prefix="call-cost-")))
    rounds: list[list[dict[str, Any]]] = []
    try:
        sidecar = launcher.start(app_id="call-cost", components=[redis_pubsub()])
        for _ in range(args.rounds):
            sizes = [int(n) for n in args.events.split(",")]
            rounds.append(uvloop.run(_round(sidecar, sidecar.process.pid, args.calls, sizes)))
    finally:
        launcher.close()
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"cpus": os.cpu_count(), "calls": args.calls, "rounds": rounds}
    (args.out / "call-cost.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "| events a call | calls at once | protocol | worker CPU us/call | daprd CPU us/call "
        "| worker + daprd | wall us/call |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, row in enumerate(rounds[0]):
        cells = [r[n] for r in rounds]

        def figures(key: str, cells: list[dict[str, Any]] = cells) -> str:
            return " / ".join(f"{c[key]:.0f}" for c in cells)

        total = " / ".join(f"{c['worker_us_per_call'] + c['daprd_us_per_call']:.0f}" for c in cells)
        lines.append(
            f"| {row['events']} | {row['concurrency']} | {row['protocol']} "
            f"| {figures('worker_us_per_call')} | {figures('daprd_us_per_call')} | {total} "
            f"| {figures('wall_us_per_call')} |"
        )
    table = "\n".join(lines) + "\n"
    (args.out / "call-cost.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
