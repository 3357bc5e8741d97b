"""The pub/sub broker a stack runs on: Redis Streams, or Apache Kafka (partitioned)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import pytest

from testbed.components import ComponentSpec, kafka_pubsub, redis_pubsub
from testbed.kafka import KafkaServer
from testbed.net import wait_until

__all__ = ["BOTH_BROKERS", "Broker", "KafkaBroker", "RedisBroker"]

# For a module's `pytestmark`: its stacks run on Redis and on Kafka (the `broker` fixture).
BOTH_BROKERS = pytest.mark.parametrize(
    "broker", ["redis", pytest.param("kafka", marks=pytest.mark.kafka)], indirect=True
)


class Broker(Protocol):
    """Makes the `pubsub` component every sidecar of a stack uses."""

    @property
    def name(self) -> str: ...

    def pubsub(self, name: str = "pubsub", **metadata: str) -> ComponentSpec: ...

    @property
    def worker_env(self) -> Mapping[str, str]:
        """The worker's settings for this broker, as its deployment sets them."""
        ...

    def wait_subscribed(self, group: str, members: int) -> None:
        """Returns once `members` consumers of `group` hold their share of the topics."""
        ...


@dataclass(frozen=True)
class RedisBroker:
    """Redis Streams on the launcher's Redis (the state store's too)."""

    name: str = "redis"
    worker_env: Mapping[str, str] = field(default_factory=dict)

    def pubsub(self, name: str = "pubsub", **metadata: str) -> ComponentSpec:
        return redis_pubsub(name, **metadata)

    def wait_subscribed(self, group: str, members: int) -> None:
        """Nothing to wait for: a Redis consumer group reads from where the stream began."""


@dataclass(frozen=True)
class KafkaBroker:
    """Kafka on its own server; the state store stays on Redis."""

    server: KafkaServer
    name: str = "kafka"
    # As k8s/overlays/kafka: the worker's defaults (prompts one at a time per partition).
    worker_env: Mapping[str, str] = field(default_factory=dict)

    def pubsub(self, name: str = "pubsub", **metadata: str) -> ComponentSpec:
        return kafka_pubsub(self.server.bootstrap, name, **metadata)

    def wait_subscribed(self, group: str, members: int) -> None:
        """Waits out the group's rebalances, so a measurement or a test starts on a settled
        group (a replica joining later would move partitions in the middle of it)."""
        expected = min(members, self.server.partitions)
        wait_until(
            lambda: self.server.group_members(group) >= expected,
            timeout=90,
            what=f"{expected} members of consumer group {group} holding partitions",
            interval=0.5,
        )
