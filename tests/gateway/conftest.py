"""Fixtures for the gateway on the real stack: worker, daprd, Redis, gateway replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from testbed.gateway import GatewayProcess, start_gateway
from testbed.sidecar import DaprLauncher
from testbed.stack import Stack

MakeStack = Callable[..., Awaitable[Stack]]
MakeGateway = Callable[..., Awaitable[GatewayProcess]]


@pytest.fixture
async def make_gateway(
    dapr_launcher: DaprLauncher[Any], tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[MakeGateway]:
    """Factory: a gateway replica with its own sidecar; all are stopped after the test."""
    started: list[GatewayProcess] = []

    async def make(**env: Any) -> GatewayProcess:
        gateway = await asyncio.to_thread(
            start_gateway,
            dapr_launcher,
            tmp_path / "gateways",
            name=f"gateway{len(started)}",
            env={key: str(value) for key, value in env.items()},
        )
        started.append(gateway)
        if gateway.sidecar is not None:
            request.node.dapr_sidecars.append(gateway.sidecar)
        return gateway

    yield make
    report = getattr(request.node, "report_call", None)
    for gateway in started:
        gateway.stop()
        if report is not None and report.failed:
            print(f"\n----- log of {gateway.name} -----\n{gateway.logs()}")
