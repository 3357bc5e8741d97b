"""The one interface tests use to get a real Dapr sidecar, however it is started."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from testbed.components import Resource
from testbed.net import free_port

__all__ = ["DAPR_RUNTIME_VERSION", "DaprLauncher", "Ports", "Sidecar", "daprd_arguments"]

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
        env: Mapping[str, str] | None = None,
    ) -> Sidecar: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Ports:
    """A sidecar's ports: the ones a test needs to know beforehand, the rest free ones."""

    grpc: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)
    internal: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)


def daprd_arguments(
    *,
    app_id: str,
    resources_path: str,
    ports: Ports,
    app_port: int | None,
    app_protocol: str,
    config_path: str | None,
    extra_args: Sequence[str],
) -> list[str]:
    """daprd's flags, the same however the sidecar is started."""
    args = [
        "--app-id", app_id,
        "--resources-path", resources_path,
        "--dapr-http-port", str(ports.http),
        "--dapr-grpc-port", str(ports.grpc),
        "--dapr-internal-grpc-port", str(ports.internal),
        "--metrics-port", str(ports.metrics),
        "--log-level", "info",
    ]  # fmt: skip
    if config_path is not None:
        args += ["--config", config_path]
    if app_port is not None:
        args += ["--app-port", str(app_port), "--app-protocol", app_protocol]
    return [*args, *extra_args]
