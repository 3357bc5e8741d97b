"""Dapr component manifests written for one test's sidecar."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = [
    "REDIS_ADDRESS",
    "ComponentSpec",
    "HttpEndpointSpec",
    "RawResource",
    "Resource",
    "conversation_echo",
    "http_endpoint",
    "inbound_retries",
    "kafka_pubsub",
    "kafka_pubsubs",
    "prompt_pubsub_names",
    "redis_pubsub",
    "redis_state",
    "tracing_configuration",
    "write_components",
]

# Placeholder in metadata values, replaced by the Redis address the launcher knows.
REDIS_ADDRESS = "{redis}"


class Resource(Protocol):
    """A Dapr resource manifest (Component, HTTPEndpoint, ...) for a resources folder."""

    @property
    def name(self) -> str: ...

    def to_yaml(self, redis_address: str) -> str: ...


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    type: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    version: str = "v1"

    def to_yaml(self, redis_address: str) -> str:
        # JSON strings are valid YAML scalars, which spares us a YAML dependency.
        lines = [
            "apiVersion: dapr.io/v1alpha1",
            "kind: Component",
            "metadata:",
            f"  name: {json.dumps(self.name)}",
            "spec:",
            f"  type: {json.dumps(self.type)}",
            f"  version: {json.dumps(self.version)}",
            "  metadata:",
        ]
        if not self.metadata:
            lines[-1] = "  metadata: []"
        for key, value in self.metadata.items():
            resolved = value.replace(REDIS_ADDRESS, redis_address)
            lines.append(f"    - name: {json.dumps(key)}")
            lines.append(f"      value: {json.dumps(resolved)}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class HttpEndpointSpec:
    """An HTTPEndpoint: apps call it through the sidecar at /v1.0/invoke/<name>/method/..."""

    name: str
    base_url: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def to_yaml(self, redis_address: str) -> str:
        lines = [
            "apiVersion: dapr.io/v1alpha1",
            "kind: HTTPEndpoint",
            "metadata:",
            f"  name: {json.dumps(self.name)}",
            "spec:",
            f"  baseUrl: {json.dumps(self.base_url)}",
        ]
        if self.headers:
            lines.append("  headers:")
            for key, value in self.headers.items():
                lines.append(f"    - name: {json.dumps(key)}")
                lines.append(f"      value: {json.dumps(value)}")
        return "\n".join(lines) + "\n"


def http_endpoint(name: str, base_url: str, **headers: str) -> HttpEndpointSpec:
    return HttpEndpointSpec(name, base_url, headers)


@dataclass(frozen=True)
class RawResource:
    """Any other Dapr resource (Resiliency, Subscription, ...) as literal YAML."""

    name: str
    yaml: str

    def to_yaml(self, redis_address: str) -> str:
        return self.yaml


def inbound_retries(*components: str, interval: str = "500ms") -> RawResource:
    """A Resiliency policy retrying deliveries to the app without end, on each of
    `components` (default: `pubsub`).

    Without it the sidecar sends a message the app answered RETRY (or failed to
    answer, because it crashed) straight to the dead-letter topic.
    """
    targets = "".join(
        f"      {component}:\n        inbound:\n          retry: redeliver\n"
        for component in components or ("pubsub",)
    )
    return RawResource(
        "resiliency",
        "apiVersion: dapr.io/v1alpha1\n"
        "kind: Resiliency\n"
        "metadata:\n"
        "  name: resiliency\n"
        "spec:\n"
        "  policies:\n"
        "    retries:\n"
        "      redeliver:\n"
        "        policy: constant\n"
        f"        duration: {interval}\n"
        "        maxRetries: -1\n"
        "  targets:\n"
        "    components:\n" + targets,
    )


def tracing_configuration(sampling_rate: str = "1") -> str:
    """A Dapr Configuration that samples every trace (exported nowhere) and resolves
    names without the network (nameformat; mdns, the standalone default, multicasts)."""
    return (
        "apiVersion: dapr.io/v1alpha1\n"
        "kind: Configuration\n"
        "metadata:\n"
        "  name: sidecar\n"
        "spec:\n"
        "  tracing:\n"
        f"    samplingRate: {json.dumps(sampling_rate)}\n"
        "  nameResolution:\n"
        "    component: nameformat\n"
        "    configuration:\n"
        '      format: "{appid}.localhost"\n'
    )


def redis_pubsub(name: str = "pubsub", **metadata: str) -> ComponentSpec:
    return ComponentSpec(name, "pubsub.redis", {"redisHost": REDIS_ADDRESS, **metadata})


def kafka_pubsub(brokers: str, name: str = "pubsub", **metadata: str) -> ComponentSpec:
    """Dapr's pubsub.kafka with the worker's settings (k8s/overlays/kafka/pubsub.yaml)."""
    return ComponentSpec(
        name,
        "pubsub.kafka",
        {
            "brokers": brokers,
            "consumerGroup": "{appID}",
            "clientID": "{appID}",
            "authType": "none",
            "initialOffset": "oldest",
            "maxMessageBytes": "1048576",
            "sessionTimeout": "30s",
            **metadata,
        },
    )


def prompt_pubsub_names(consumers: int) -> tuple[str, ...]:
    """The worker's prompt pub/subs for `consumers` Kafka consumers per replica: `pubsub`
    (which also carries replies and cancellations), then `pubsub-prompts-1`, ..."""
    return ("pubsub", *(f"pubsub-prompts-{n}" for n in range(1, consumers)))


def kafka_pubsubs(brokers: str, consumers: int = 1, **metadata: str) -> list[ComponentSpec]:
    """One component per Kafka consumer a replica runs, all in the app id's consumer group
    (k8s/overlays/kafka: pubsub.yaml and pubsub-prompts.yaml)."""
    return [
        kafka_pubsub(
            brokers,
            name,
            # Its own client id: Kafka's group tools then tell the members apart.
            **({"clientID": f"{{appID}}-{name}"} if name != "pubsub" else {}),
            **metadata,
        )
        for name in prompt_pubsub_names(consumers)
    ]


def redis_state(name: str = "statestore", **metadata: str) -> ComponentSpec:
    return ComponentSpec(name, "state.redis", {"redisHost": REDIS_ADDRESS, **metadata})


def conversation_echo(name: str = "echo") -> ComponentSpec:
    return ComponentSpec(name, "conversation.echo")


def write_components(folder: Path, specs: Iterable[Resource], redis_address: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        (folder / f"{spec.name}.yaml").write_text(spec.to_yaml(redis_address))
    return folder
