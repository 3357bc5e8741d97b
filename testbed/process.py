"""Sidecars as local processes: the daprd built from the Dapr Go module, and Debian's Redis."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from testbed.net import http_status, wait_until
from testbed.reap import kill, terminate
from testbed.redis import RedisServer, start_redis
from testbed.sidecar import DaprLauncher, Launch, SidecarPorts, daprd_arguments

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
class ProcessSidecar(SidecarPorts):
    process: subprocess.Popen[bytes]
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        terminate(self.process, 15)


@dataclass
class ProcessLauncher(DaprLauncher[ProcessSidecar]):
    workdir: Path
    name: str = "process"
    redis_appendonly: bool = False
    _redis: RedisServer | None = None
    _sidecars: list[ProcessSidecar] = field(default_factory=list)
    _binary: str | None = None
    _launches: dict[int, Launch] = field(default_factory=dict)

    @property
    def redis(self) -> RedisServer:
        if self._redis is None:
            self._redis = start_redis(self.workdir / "redis", appendonly=self.redis_appendonly)
        return self._redis

    def restart_redis(self) -> RedisServer:
        """SIGKILL Redis and start it again on the same port and folder (its data is kept
        only with `redis_appendonly`)."""
        old = self.redis
        old.kill()
        self._redis = start_redis(
            self.workdir / "redis", appendonly=self.redis_appendonly, port=old.port
        )
        return self._redis

    def restart(self, sidecar: ProcessSidecar) -> ProcessSidecar:
        """SIGKILL a sidecar and start it again as it was: same ports, components and
        folder (its log goes on in the same file)."""
        kill(sidecar.process)
        return self._run(self._launches[sidecar.grpc_port])

    @property
    def redis_address(self) -> str:
        return self.redis.address

    def _launch(self, launch: Launch) -> ProcessSidecar:
        if self._binary is None:
            self._binary = daprd_binary()
        if shutil.which(self._binary) is None and not Path(self._binary).exists():
            raise RuntimeError(f"daprd not found at {self._binary!r}")
        app_id, folder, ports = launch.app_id, launch.folder, launch.ports
        self._launches[ports.grpc] = launch
        config_path = None
        if launch.configuration is not None:
            config_path = folder / "config.yaml"
            config_path.write_text(launch.configuration)
        args = [
            self._binary,
            *daprd_arguments(
                app_id=app_id,
                resources_path=str(launch.resources),
                ports=ports,
                app_port=launch.app_port,
                app_protocol=launch.app_protocol,
                config_path=str(config_path) if config_path else None,
                extra_args=["--dapr-listen-addresses", "127.0.0.1", *launch.extra_args],
            ),
        ]
        log_path = folder / "daprd.log"
        # The child keeps its own handle on the log; ours is closed at once.
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
                env={**os.environ, **launch.env},
            )
        return ProcessSidecar(app_id, ports.http, ports.grpc, ports.metrics, process, log_path)

    def _wait_healthy(self, sidecar: ProcessSidecar) -> None:
        process = sidecar.process
        wait_until(
            lambda: (
                process.poll() is not None or http_status(f"{sidecar.http_url}/v1.0/healthz") == 204
            ),
            timeout=60,
            what=f"daprd {sidecar.app_id} to report healthy",
            on_timeout=sidecar.logs,
        )
        if process.poll() is not None:
            raise RuntimeError(f"daprd {sidecar.app_id} exited early:\n{sidecar.logs()}")

    def _stop_redis(self) -> None:
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
