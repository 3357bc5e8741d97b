"""The one interface tests use to get a real Dapr sidecar, however it is started."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tests.harness.components import Resource

__all__ = ["DAPR_RUNTIME_VERSION", "DaprLauncher", "Sidecar"]

# The Dapr runtime release the Go build pins and the container image uses.
DAPR_RUNTIME_VERSION = "1.18.3"


class Sidecar(Protocol):
    """A running daprd, reachable on loopback."""

    app_id: str
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def http_url(self) -> str: ...

    @property
    def grpc_address(self) -> str: ...

    def logs(self) -> str: ...

    def stop(self) -> None: ...


class DaprLauncher(Protocol):
    """Starts sidecars next to one Redis; `close` stops what it started."""

    name: str

    @property
    def redis_address(self) -> str: ...

    def start(
        self,
        *,
        app_id: str,
        components: Sequence[Resource],
        app_port: int | None = None,
        app_protocol: str = "grpc",
        grpc_port: int | None = None,
        http_port: int | None = None,
        configuration: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> Sidecar: ...

    def close(self) -> None: ...
