"""Sidecars as local processes: the daprd built from the Dapr Go module, and Debian's Redis."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.components import Resource, write_components
from testbed.net import free_port, http_status, wait_until
from testbed.redis import RedisServer, start_redis
from testbed.sidecar import Ports, daprd_arguments

__all__ = ["ProcessLauncher", "ProcessSidecar", "daprd_binary"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def daprd_binary() -> str:
    """The daprd to run: $DAPRD, else what scripts/daprd.sh finds or builds."""
    configured = os.environ.get("DAPRD")
    if configured:
        return configured
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "daprd.sh")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return result.stdout.strip()


@dataclass
class ProcessSidecar:
    app_id: str
    http_port: int
    grpc_port: int
    metrics_port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class ProcessLauncher:
    workdir: Path
    name: str = "process"
    redis_appendonly: bool = False
    _redis: RedisServer | None = None
    _sidecars: list[ProcessSidecar] = field(default_factory=list)
    _binary: str | None = None
    _arguments: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def redis(self) -> RedisServer:
        if self._redis is None:
            self._redis = start_redis(self.workdir / "redis", appendonly=self.redis_appendonly)
        return self._redis

    def restart_redis(self) -> RedisServer:
        """SIGKILL Redis and start it again on the same port and folder (its data is kept
        only with `redis_appendonly`)."""
        old = self.redis
        if old.process is not None:
            old.process.kill()
            old.process.wait()
        self._redis = start_redis(
            self.workdir / "redis", appendonly=self.redis_appendonly, port=old.port
        )
        return self._redis

    def restart(self, sidecar: ProcessSidecar) -> ProcessSidecar:
        """SIGKILL a sidecar and start it again with the same ports and components."""
        sidecar.process.kill()
        sidecar.process.wait()
        arguments = self._arguments[sidecar.grpc_port]
        return self.start(
            **{**arguments, "grpc_port": sidecar.grpc_port, "http_port": sidecar.http_port}
        )

    @property
    def redis_address(self) -> str:
        return self.redis.address

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
    ) -> ProcessSidecar:
        if self._binary is None:
            self._binary = daprd_binary()
        if shutil.which(self._binary) is None and not Path(self._binary).exists():
            raise RuntimeError(f"daprd not found at {self._binary!r}")
        index = len(self._sidecars)
        folder = self.workdir / f"{app_id}-{index}"
        resources = write_components(folder / "components", components, self.redis_address)
        ports = Ports(grpc=grpc_port or free_port(), http=http_port or free_port())
        config_path = None
        if configuration is not None:
            config_path = folder / "config.yaml"
            config_path.write_text(configuration)
        args = [
            self._binary,
            *daprd_arguments(
                app_id=app_id,
                resources_path=str(resources),
                ports=ports,
                app_port=app_port,
                app_protocol=app_protocol,
                config_path=str(config_path) if config_path else None,
                extra_args=["--dapr-listen-addresses", "127.0.0.1", *extra_args],
            ),
        ]
        log_path = folder / "daprd.log"
        # The child keeps its own handle on the log; ours is closed at once.
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
                env={**os.environ, **(env or {})},
            )
        sidecar = ProcessSidecar(app_id, ports.http, ports.grpc, ports.metrics, process, log_path)
        self._sidecars.append(sidecar)
        self._arguments[ports.grpc] = {
            "app_id": app_id,
            "components": components,
            "app_port": app_port,
            "app_protocol": app_protocol,
            "configuration": configuration,
            "extra_args": extra_args,
        }
        wait_until(
            lambda: (
                process.poll() is not None or http_status(f"{sidecar.http_url}/v1.0/healthz") == 204
            ),
            timeout=60,
            what=f"daprd {app_id} to report healthy",
            on_timeout=sidecar.logs,
        )
        if process.poll() is not None:
            raise RuntimeError(f"daprd {app_id} exited early:\n{sidecar.logs()}")
        return sidecar

    def close(self) -> None:
        for sidecar in self._sidecars:
            sidecar.stop()
        self._sidecars.clear()
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
