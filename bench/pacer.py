"""Paced publishers in a process of their own: the bus carrying a worker's load, no worker.

`python -m bench.pacer <sidecar gRPC address> <publishers> <interval s> <seconds>`:
each publisher sends one structured CloudEvent per interval (spread over the first
interval, as streams start), through the worker's own `BatchingPublisher`, so events
due at once share bulk publishes as the worker's do. Each event carries its send time
(`time.monotonic()`, the consumer's clock too) in `data.t`. Prints
`{"published": n, "start": t0, "seconds": s}` (t0 on that same clock; s from t0 to the
last publish: start-up excluded).

Its own process, so that the consumer, in the bench process, does not share an event
loop with a hundred publishers.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from worker.contract.envelopes import Publication
from worker.pipeline.batching import BatchingPublisher
from worker.transport.sidecar import SidecarClient

LIMIT_TYPE = "bench.limit.v1"


async def pace(
    address: str, publishers: int, interval: float, seconds: float
) -> tuple[int, float, float]:
    published = 0
    async with (
        SidecarClient(address) as client,
        BatchingPublisher(client, max_in_flight=4, max_batch=100) as batcher,
    ):
        start = time.monotonic()
        deadline = start + seconds

        async def publisher(index: int) -> None:
            nonlocal published
            due = start + interval * index / publishers
            n = 0
            while (now := time.monotonic()) < deadline:
                await asyncio.sleep(max(due - now, 0))
                due += interval
                n += 1
                event: dict[str, Any] = {
                    "specversion": "1.0",
                    "id": f"paced-{index}-{n}",
                    "type": LIMIT_TYPE,
                    "source": "/bench",
                    "subject": f"ctx-{index}",
                    "datacontenttype": "application/json",
                    "data": {"context_id": f"ctx-{index}", "seq": n, "t": time.monotonic()},
                }
                await batcher.publish(
                    Publication(
                        pubsub="pubsub",
                        topic="responses",
                        data=json.dumps(event).encode(),
                        event_id=event["id"],
                        kind="chunk",
                        metadata={"partitionKey": f"ctx-{index}"},
                    )
                )
                published += 1

        await asyncio.gather(*(publisher(i) for i in range(publishers)))
        elapsed = time.monotonic() - start
    return published, start, elapsed


def main() -> None:
    address, publishers, interval, seconds = sys.argv[1:5]
    published, start, elapsed = asyncio.run(
        pace(address, int(publishers), float(interval), float(seconds))
    )
    print(json.dumps({"published": published, "start": start, "seconds": elapsed}))


if __name__ == "__main__":
    main()
