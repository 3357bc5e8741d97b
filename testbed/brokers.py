"""The pub/sub broker a stack runs on: Redis Streams, or Apache Kafka (partitioned)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import pytest

from testbed.components import (
    ComponentSpec,
    kafka_pubsub,
    kafka_pubsubs,
    prompt_pubsub_names,
    redis_pubsub,
)
from testbed.kafka import KafkaServer
from testbed.net import wait_until

__all__ = ["BOTH_BROKERS", "DEPLOYED_BULK_AWAIT_MS", "Broker", "KafkaBroker", "RedisBroker"]

# The batch window of k8s/overlays/kafka (WORKER_BULK_SUBSCRIBE__MAX_AWAIT_MS).
DEPLOYED_BULK_AWAIT_MS = 500

# For a module's `pytestmark`: its stacks run on Redis and on Kafka (the `broker` fixture).
BOTH_BROKERS = pytest.mark.parametrize(
    "broker", ["redis", pytest.param("kafka", marks=pytest.mark.kafka)], indirect=True
)


class Broker(Protocol):
    """Makes the `pubsub` component every sidecar of a stack uses."""

    @property
    def name(self) -> str: ...

    def pubsub(self, name: str = "pubsub", **metadata: str) -> ComponentSpec: ...

    def worker_pubsubs(self, **metadata: str) -> list[ComponentSpec]:
        """The worker's pub/sub components: `pubsub`, and any more it reads prompts from."""
        ...

    @property
    def prompt_pubsubs(self) -> tuple[str, ...]:
        """The names of the components the worker reads prompts from."""
        ...

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

    def worker_pubsubs(self, **metadata: str) -> list[ComponentSpec]:
        return [redis_pubsub(**metadata)]

    @property
    def prompt_pubsubs(self) -> tuple[str, ...]:
        return ("pubsub",)

    def wait_subscribed(self, group: str, members: int) -> None:
        """Nothing to wait for: a Redis consumer group reads from where the stream began."""


@dataclass(frozen=True)
class KafkaBroker:
    """Kafka on its own server; the state store stays on Redis."""

    server: KafkaServer
    name: str = "kafka"
    # Kafka consumers per replica: pub/sub components in one consumer group, each
    # holding its own share of the partitions of `prompts`.
    consumers: int = 1
    # Prompts in bulk batches (else one at a time per partition, Dapr's default).
    bulk: bool = False
    bulk_await_ms: int = 100

    def pubsub(self, name: str = "pubsub", **metadata: str) -> ComponentSpec:
        return kafka_pubsub(self.server.bootstrap, name, **metadata)

    def worker_pubsubs(self, **metadata: str) -> list[ComponentSpec]:
        return kafka_pubsubs(self.server.bootstrap, self.consumers, **metadata)

    @property
    def prompt_pubsubs(self) -> tuple[str, ...]:
        return prompt_pubsub_names(self.consumers)

    @classmethod
    def deployed(cls, server: KafkaServer) -> KafkaBroker:
        """As k8s/overlays/kafka deploys the worker: three consumers a replica, in bulk."""
        return cls(server, consumers=3, bulk=True, bulk_await_ms=DEPLOYED_BULK_AWAIT_MS)

    @property
    def worker_env(self) -> Mapping[str, str]:
        """The worker reads prompts from each consumer's component, in bulk if asked."""
        env: dict[str, str] = {}
        if self.consumers > 1:
            env["WORKER_PROMPT_PUBSUBS"] = json.dumps(list(self.prompt_pubsubs))
        if self.bulk:
            env["WORKER_BULK_SUBSCRIBE__ENABLED"] = "true"
            env["WORKER_BULK_SUBSCRIBE__MAX_AWAIT_MS"] = str(self.bulk_await_ms)
        return env

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
