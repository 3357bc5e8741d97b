"""Sidecars as containers (daprio/daprd and Redis) through testcontainers, where Docker runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.net import free_port, http_status, wait_until
from testbed.sidecar import (
    DAPR_RUNTIME_VERSION,
    DaprLauncher,
    Launch,
    SidecarPorts,
    daprd_arguments,
)

__all__ = ["ContainerLauncher", "docker_unavailable_reason"]

DAPRD_IMAGE = f"daprio/daprd:{DAPR_RUNTIME_VERSION}"
REDIS_IMAGE = "redis:7.4-alpine"


def docker_unavailable_reason() -> str | None:
    """Why the container variant cannot run here, or None when a Docker engine answers."""
    import os

    import docker

    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        # Asking docker-py would leak the socket of its failed connection.
        return "no Docker engine: DOCKER_HOST is unset and /var/run/docker.sock does not exist"
    client = None
    try:
        # A fixed API version: auto-detection would open (and leak) a socket to ask.
        client = docker.from_env(version="1.41")
        client.ping()
    except Exception as exc:  # any failure to reach the engine means "no Docker here"
        return f"no Docker engine reachable ({type(exc).__name__}: {exc})".splitlines()[0]
    finally:
        if client is not None:
            client.close()
    return None


@dataclass
class ContainerSidecar(SidecarPorts):
    container: Any

    def logs(self) -> str:
        stdout, stderr = self.container.get_logs()
        return str(stdout.decode(errors="replace") + stderr.decode(errors="replace"))

    def stop(self) -> None:
        self.container.stop()


@dataclass
class ContainerLauncher(DaprLauncher[ContainerSidecar]):
    """Host networking, so daprd reaches the test's app on loopback as the process variant does."""

    workdir: Path
    name: str = "containers"
    _redis: Any = None
    _redis_port: int = 0
    _sidecars: list[ContainerSidecar] = field(default_factory=list)

    @property
    def redis_address(self) -> str:
        if self._redis is None:
            from testcontainers.core.container import DockerContainer

            self._redis_port = free_port()
            self._redis = (
                DockerContainer(REDIS_IMAGE)
                .with_kwargs(network_mode="host")
                .with_command(f"redis-server --port {self._redis_port} --save '' --appendonly no")
            )
            self._redis.start()
        return f"127.0.0.1:{self._redis_port}"

    def _launch(self, launch: Launch) -> ContainerSidecar:
        from testcontainers.core.container import DockerContainer

        app_id, resources, ports = launch.app_id, launch.resources, launch.ports
        config_path = None
        if launch.configuration is not None:
            (resources / "config.yaml.txt").write_text(launch.configuration)
            config_path = "/components/config.yaml.txt"
        command = [
            "./daprd",
            *daprd_arguments(
                app_id=app_id,
                resources_path="/components",
                ports=ports,
                app_port=launch.app_port,
                app_protocol=launch.app_protocol,
                config_path=config_path,
                extra_args=launch.extra_args,
            ),
        ]
        container = (
            DockerContainer(DAPRD_IMAGE)
            .with_kwargs(network_mode="host")
            .with_volume_mapping(str(resources), "/components", "ro")
            .with_command(command)
        )
        for key, value in launch.env.items():
            container = container.with_env(key, value)
        container.start()
        return ContainerSidecar(app_id, ports.http, ports.grpc, ports.metrics, container)

    def _wait_healthy(self, sidecar: ContainerSidecar) -> None:
        wait_until(
            lambda: http_status(f"{sidecar.http_url}/v1.0/healthz") == 204,
            timeout=90,
            what=f"daprd container {sidecar.app_id} to report healthy",
            on_timeout=sidecar.logs,
        )

    def _stop_redis(self) -> None:
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
