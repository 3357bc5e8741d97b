"""A whole deployment in miniature: the worker with its sidecar, and a consumer app with its own.

The consumer publishes prompts and records every response and dead-lettered prompt,
through the real daprd and Redis, as a downstream service would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from dapr.proto.runtime.v1 import dapr_pb2_grpc, pubsub_pb2

from testbed.apps import RecordingApp
from testbed.brokers import Broker, RedisBroker
from testbed.components import (
    Resource,
    conversation_echo,
    redis_state,
    tracing_configuration,
)
from testbed.net import free_port
from testbed.sidecar import Sidecar
from testbed.worker import WorkerProcess, start_worker
from worker.contract.envelopes import InboundMessage
from worker.transport.dapr import Subscription

__all__ = ["TRACE_ID", "Received", "Stack", "StackFactory", "start_stack"]

TERMINAL = {"completed", "failed", "cancelled"}
# Every prompt is published in this trace; the worker's events must continue it.
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@dataclass(frozen=True)
class Received:
    """One event as the consumer app got it from the sidecar."""

    topic: str
    id: str
    type: str
    source: str
    spec_version: str
    data_content_type: str
    extensions: dict[str, Any]
    data: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.type.removeprefix("llm.stream.").removesuffix(".v1")

    @classmethod
    def of(cls, message: InboundMessage) -> Received:
        return cls(
            topic=message.topic,
            id=message.id,
            type=message.type,
            source=message.source,
            spec_version=message.spec_version,
            data_content_type=message.data_content_type,
            extensions=dict(message.extensions),
            data=_json_object(message.data),
        )


@dataclass
class Stack:
    workers: list[WorkerProcess]
    worker_sidecars: list[Sidecar]
    consumer_sidecar: Sidecar
    consumer: RecordingApp
    workdir: Path
    worker_env: Mapping[str, str]
    started: list[Any]
    received: list[Received] = field(default_factory=list)

    @property
    def worker(self) -> WorkerProcess:
        return self.workers[0]

    @property
    def worker_sidecar(self) -> Sidecar:
        return self.worker_sidecars[0]

    async def restart_worker(self, index: int = 0) -> WorkerProcess:
        """A new worker process in place of the (dead or killed) one, same ports."""
        old = self.workers[index]
        old.kill()
        worker = await asyncio.to_thread(
            start_worker,
            self.workdir,
            self.worker_env,
            dapr_grpc_port=old.dapr_grpc_port,
            dapr_http_port=old.dapr_http_port,
            name=old.app_id,
            app_port=old.app_port,
        )
        self.workers[index] = worker
        self.started.append(worker)
        return worker

    def worker_logs(self) -> str:
        return "\n".join(w.logs() for w in self.workers)

    async def publish(
        self,
        payload: Any,
        *,
        topic: str = "prompts",
        raw: bytes | None = None,
        content_type: str = "application/json",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Publish as any Dapr service would: plain JSON, which Dapr wraps in a CloudEvent."""
        data = raw if raw is not None else json.dumps(payload).encode()
        async with grpc.aio.insecure_channel(self.consumer_sidecar.grpc_address) as channel:
            await dapr_pb2_grpc.DaprStub(channel).PublishEvent(
                pubsub_pb2.PublishEventRequest(
                    pubsub_name="pubsub",
                    topic=topic,
                    data=data,
                    data_content_type=content_type,
                    metadata=dict(metadata or {}),
                ),
                metadata=(("traceparent", TRACEPARENT),),
            )

    async def wait_for(
        self, done: Callable[[list[Received]], bool], *, timeout: float = 30
    ) -> list[Received]:
        async with asyncio.timeout(timeout):
            while not done(self.received):
                self.received.append(Received.of(await self.consumer.received.get()))
        return self.received

    async def turn(self, request_id: str, *, timeout: float = 30) -> list[Received]:
        """The events of one request, once its terminal event arrived, in arrival order."""

        def finished(events: list[Received]) -> bool:
            return any(e.kind in TERMINAL for e in self.of(request_id, events))

        return self.of(request_id, await self.wait_for(finished, timeout=timeout))

    def of(self, request_id: str, events: Sequence[Received] | None = None) -> list[Received]:
        return [
            e
            for e in (self.received if events is None else events)
            if e.topic != "prompts-deadletter" and e.data.get("request_id") == request_id
        ]


def _json_object(data: bytes) -> dict[str, Any]:
    """The event's data as an object; a dead-lettered non-JSON prompt keeps its raw text."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return {"raw": data.decode(errors="replace")}
    return value if isinstance(value, dict) else {"raw": value}


StackFactory = Callable[..., Any]


async def start_stack(
    start_sidecar: Callable[..., Sidecar],
    workdir: Path,
    *,
    worker_env: Mapping[str, str] | Callable[[int], Mapping[str, str]] | None = None,
    extra_components: Sequence[Resource] = (),
    reply_topics: Sequence[str] = ("responses",),
    sidecar_port_for_worker: Callable[[int], int] | None = None,
    sidecar_http_port_for_worker: Callable[[int], int] | None = None,
    pubsub_metadata: Mapping[str, Mapping[str, str]] | None = None,
    replicas: int = 1,
    app_token: str | None = None,
    sidecar_args: Sequence[str] = (),
    broker: Broker | None = None,
    started: list[Any],
) -> Stack:
    """Consumer app and sidecar, worker(s) and sidecar(s); `started` collects what to stop.

    `pubsub_metadata` is the worker's pub/sub component tuning per broker name
    (e.g. {"redis": {"processingTimeout": "2s"}}): the brokers' knobs differ.
    `sidecar_port_for_worker` and `sidecar_http_port_for_worker` map the worker sidecar's
    gRPC and HTTP ports to the ones the worker is given (a fault-injecting proxy's).
    """
    broker = broker or RedisBroker()
    tuning = dict((pubsub_metadata or {}).get(broker.name, {}))
    consumer = RecordingApp(
        routes=[Subscription("pubsub", topic) for topic in (*reply_topics, "prompts-deadletter")]
    )
    consumer_port = await consumer.start()
    started.append(consumer)
    workers: list[WorkerProcess] = []
    sidecars: list[Sidecar] = []
    env: Mapping[str, str] = {}
    for replica in range(replicas):
        grpc_port, http_port = free_port(), free_port()
        # A fault-injecting proxy may sit between the worker and its sidecar.
        worker_grpc = sidecar_port_for_worker(grpc_port) if sidecar_port_for_worker else grpc_port
        worker_http = (
            sidecar_http_port_for_worker(http_port) if sidecar_http_port_for_worker else http_port
        )
        # The environment may depend on the sidecar's HTTP port (via an HTTPEndpoint).
        env = {
            **broker.worker_env,
            **(worker_env(http_port) if callable(worker_env) else dict(worker_env or {})),
        }
        # Dapr's app API token: the sidecar presents it, the worker answers no one else.
        token_env = {"APP_API_TOKEN": app_token} if app_token else {}
        env = {**env, **token_env}
        worker = await asyncio.to_thread(
            start_worker,
            workdir,
            env,
            dapr_grpc_port=worker_grpc,
            dapr_http_port=worker_http,
            name=f"worker{replica}",
        )
        started.append(worker)
        components: list[Resource] = [
            *broker.worker_pubsubs(**tuning),
            redis_state(),
            conversation_echo("dapr-echo"),
            *extra_components,
        ]
        # Every replica has the same app id: one consumer group, as in a Deployment.
        sidecars.append(
            await asyncio.to_thread(
                start_sidecar,
                app_id="llm-stream-worker",
                components=components,
                app_port=worker.app_port,
                grpc_port=grpc_port,
                http_port=http_port,
                configuration=tracing_configuration(),
                extra_args=sidecar_args,
                env=token_env,
            )
        )
        workers.append(worker)
    consumer_sidecar = await asyncio.to_thread(
        start_sidecar,
        app_id="consumer",
        # One delivery at a time (Redis' default is 10 at once; Kafka hands over one a
        # partition): the tests check that events arrive in the order they were published.
        components=[broker.pubsub(**({"concurrency": "1"} if broker.name == "redis" else {}))],
        app_port=consumer_port,
        configuration=tracing_configuration(),
        extra_args=sidecar_args,
    )
    # Every Kafka consumer of every replica is a member of the worker's group.
    members = replicas * len(broker.prompt_pubsubs)
    await asyncio.to_thread(broker.wait_subscribed, "llm-stream-worker", members)
    await asyncio.to_thread(broker.wait_subscribed, "consumer", 1)
    return Stack(workers, sidecars, consumer_sidecar, consumer, workdir, env, started)
