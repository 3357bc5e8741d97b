"""The one interface tests use to get a real Dapr sidecar, however it is started."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from testbed.components import Resource, write_components
from testbed.net import free_port

__all__ = [
    "DAPR_RUNTIME_VERSION",
    "DaprLauncher",
    "Launch",
    "Ports",
    "Sidecar",
    "SidecarPorts",
    "daprd_arguments",
]

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


S = TypeVar("S", bound=Sidecar)


@dataclass
class SidecarPorts:
    """Where a running daprd answers, however it was started."""

    app_id: str
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


@dataclass(frozen=True)
class Launch:
    """One daprd to start: its folder (components already written) and its settings."""

    app_id: str
    folder: Path
    resources: Path
    ports: Ports
    app_port: int | None
    app_protocol: str
    configuration: str | None
    extra_args: Sequence[str]
    env: Mapping[str, str]


class DaprLauncher(ABC, Generic[S]):
    """Starts sidecars next to one Redis; `close` stops what it started.

    The folder, components and ports of each sidecar are the same however it runs; a
    launcher only says how daprd is started (`_launch`) and where its Redis is.
    """

    name: str
    workdir: Path
    _sidecars: list[S]

    @property
    @abstractmethod
    def redis_address(self) -> str: ...

    @abstractmethod
    def _launch(self, launch: Launch) -> S:
        """Starts daprd as `launch` says, without waiting for it."""

    @abstractmethod
    def _wait_healthy(self, sidecar: S) -> None:
        """Returns once daprd reports healthy; raises, with its logs, if it never does."""

    @abstractmethod
    def _stop_redis(self) -> None: ...

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
    ) -> S:
        folder = self.workdir / f"{app_id}-{len(self._sidecars)}"
        resources = write_components(folder / "components", components, self.redis_address)
        ports = Ports(grpc=grpc_port or free_port(), http=http_port or free_port())
        launch = Launch(
            app_id, folder, resources, ports, app_port, app_protocol, configuration, extra_args,
            env or {},
        )  # fmt: skip
        return self._run(launch)

    def _run(self, launch: Launch) -> S:
        sidecar = self._launch(launch)
        # Kept before the wait: `close` stops a sidecar that never became healthy too.
        self._sidecars.append(sidecar)
        self._wait_healthy(sidecar)
        return sidecar

    def close(self) -> None:
        for sidecar in self._sidecars:
            sidecar.stop()
        self._sidecars.clear()
        self._stop_redis()


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
