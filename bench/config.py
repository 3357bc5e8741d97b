"""What a run is made of: the profiles, the pub/sub as deployed, the event types counted."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from testbed.brokers import Broker
from testbed.components import ComponentSpec

__all__ = [
    "CHUNK",
    "FIRST_TOKEN_DELAY",
    "KAFKA_PARTITIONS",
    "LIMIT_TYPE",
    "PROFILES",
    "PUBSUB",
    "ROOT",
    "SAMPLING_RATE",
    "STARTED",
    "TERMINAL_TYPES",
    "Profile",
    "pubsub_component",
    "worker_pubsub_components",
]


ROOT = Path(__file__).resolve().parents[1]
CHUNK = "llm.stream.chunk.v1"
STARTED = "llm.stream.started.v1"
TERMINAL_TYPES = {f"llm.stream.{k}.v1" for k in ("completed", "failed", "cancelled")}
LIMIT_TYPE = "bench.limit.v1"
FIRST_TOKEN_DELAY = 0.1
# Deliveries the sidecar runs at once (Dapr's Redis default is 10, which would cap the
# worker at 10 streams), and no reclaiming of long streams while they run.
# Same as components/redis/pubsub.yaml.
PUBSUB = {
    "concurrency": "512",
    "queueDepth": "512",
    # Bare milliseconds: the component ignores "300s" (and keeps its 60 s default).
    "processingTimeout": "300000",
    "redeliverInterval": "60000",
}
# Kafka: partitions of every topic (the worker takes prompts in bulk, as deployed).
KAFKA_PARTITIONS = 3
# The sidecars' tracing, as shipped (components/config/sidecar.yaml): every request traced.
# BENCH_SAMPLING_RATE=0 measures the sidecars without tracing.
SAMPLING_RATE = os.environ.get("BENCH_SAMPLING_RATE", "1")


@dataclass(frozen=True)
class Profile:
    concurrency: tuple[int, ...]
    tokens: int  # per stream at 20 tok/s
    fast_tokens: int  # the one stream as fast as possible
    fast_streams: int  # and many streams as fast as possible, to load the sidecar
    fast_streams_tokens: int
    paced_tokens: int  # one stream at 1000 tokens/s: faster than one publish per token
    naive_streams: int
    naive_tokens: int
    limit_seconds: float
    limit_publishers: tuple[int, ...]
    # (publishers, events per call): the limit with bulk publishes, as the worker makes
    # under load; what a publisher of single events cannot reach.
    limit_bulk: tuple[tuple[int, int], ...] = ((4, 50),)


PROFILES = {
    "quick": Profile((1, 10, 100), 60, 2000, 100, 300, 3000, 100, 60, 4.0, (1, 8, 100)),
    "full": Profile((1, 10, 100, 500), 200, 10000, 100, 1000, 10000, 100, 100, 8.0, (1, 8, 100)),
    "smoke": Profile((1, 10), 20, 200, 10, 50, 500, 10, 20, 1.0, (1, 10)),  # checks the bench
}


def pubsub_component(broker: Broker) -> ComponentSpec:
    """The pub/sub every sidecar of the bench uses, tuned as deployed."""
    return broker.pubsub(**(PUBSUB if broker.name == "redis" else {}))


def worker_pubsub_components(broker: Broker) -> list[ComponentSpec]:
    """The worker sidecar's: on Kafka, one component a consumer, as deployed."""
    return broker.worker_pubsubs(**(PUBSUB if broker.name == "redis" else {}))
