"""Fixtures that give tests a real Dapr sidecar next to a real Redis.

`dapr_launcher` is parametrized over the two ways of starting them: local processes
(daprd built from the Dapr Go module, Debian's redis-server) and testcontainers. Every
test that takes it runs on both; the container variant skips where no Docker engine runs.

`broker` is the pub/sub under a stack: Redis Streams unless a module parametrizes it
(`BOTH_BROKERS`), then also Apache Kafka, a fresh KRaft broker per test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.apps import RecordingApp
from testbed.brokers import Broker, KafkaBroker, RedisBroker
from testbed.containers import ContainerLauncher, docker_unavailable_reason
from testbed.kafka import start_kafka
from testbed.process import ProcessLauncher
from testbed.sidecar import DaprLauncher, Sidecar
from testbed.stack import Stack, start_stack

StartSidecar = Callable[..., Sidecar]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(params=["process", "containers"])
def dapr_launcher(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DaprLauncher[Any]]:
    launcher: DaprLauncher[Any]
    if request.param == "containers":
        request.applymarker(pytest.mark.containers)
        reason = docker_unavailable_reason()
        if reason is not None:
            pytest.skip(f"testcontainers variant: {reason}")
        launcher = ContainerLauncher(tmp_path / "dapr")
    else:
        launcher = ProcessLauncher(tmp_path / "dapr")
    started: list[Sidecar] = []
    request.node.dapr_sidecars = started
    try:
        yield launcher
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            for sidecar in started:
                print(f"\n----- log of {sidecar.app_id} -----\n{sidecar.logs()}")
        launcher.close()


@pytest.fixture
def start_sidecar(dapr_launcher: DaprLauncher[Any], request: pytest.FixtureRequest) -> StartSidecar:
    """Factory: start a daprd with the given components; all are stopped after the test."""

    def start(**options: Any) -> Sidecar:
        # The launcher's `start` names (and checks) the options.
        sidecar: Sidecar = dapr_launcher.start(**options)
        request.node.dapr_sidecars.append(sidecar)
        return sidecar

    return start


KAFKA_PARTITIONS = 3


@pytest.fixture
def broker(
    request: pytest.FixtureRequest, tmp_path: Path, dapr_launcher: DaprLauncher[Any]
) -> Iterator[Broker]:
    """The stack's pub/sub broker: Redis unless parametrized; Kafka with 3 partitions,
    the worker reading them as deployed.

    After `dapr_launcher`, so a variant that skips (no Docker) starts no Kafka."""
    if getattr(request, "param", "redis") == "redis":
        yield RedisBroker()
        return
    server = start_kafka(tmp_path / "kafka", partitions=KAFKA_PARTITIONS)
    try:
        # As k8s/overlays/kafka deploys the worker: three Kafka consumers, in bulk.
        yield KafkaBroker.deployed(server)
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print(f"\n----- log of kafka -----\n{server.logs()[-20000:]}")
        # The sidecars first, so they leave their consumer groups on a live broker
        # (quickly); the launcher's own teardown then finds nothing left to stop.
        dapr_launcher.close()
        server.kill()  # its data is thrown away with the test's folder


@pytest.fixture
async def make_stack(
    broker: Broker, start_sidecar: StartSidecar, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Awaitable[Stack]]]:
    """Factory: the worker and a consumer app, each with its real sidecar, on one broker."""
    started: list[Any] = []

    async def make(**kwargs: Any) -> Stack:
        kwargs.setdefault("broker", broker)
        stack = await start_stack(
            start_sidecar, tmp_path / f"stack{len(started)}", started=started, **kwargs
        )
        request.node.dapr_sidecars.extend(stack.workers)
        return stack

    yield make
    for thing in reversed(started):
        if isinstance(thing, RecordingApp):
            await thing.stop()
        else:
            thing.kill()
