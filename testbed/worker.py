"""The worker as users run it: `python -m worker`, configured by environment variables."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed.net import free_port, wait_until
from testbed.reap import kill

__all__ = ["WorkerProcess", "start_worker"]


@dataclass
class WorkerProcess:
    app_id: str
    app_port: int
    dapr_grpc_port: int
    dapr_http_port: int
    metrics_port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.app_port), timeout=0.2):
                return True
        except OSError:
            return False

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, as Kubernetes sends it; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        kill(self.process)


def start_worker(
    workdir: Path,
    env: Mapping[str, str],
    *,
    dapr_grpc_port: int,
    dapr_http_port: int,
    name: str = "worker",
    app_port: int | None = None,
    command: Sequence[str] = (sys.executable, "-m", "worker"),
) -> WorkerProcess:
    """Start the worker (or `command`, e.g. under a profiler) and wait until it listens.

    It reaches its sidecar on both ports: events are published over daprd's HTTP API,
    everything else over gRPC.
    """
    app_port = app_port or free_port()
    metrics_port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    if log_path.exists():  # a restart: keep the earlier life's log
        log_path.rename(workdir / f"{name}.{int(time.time() * 1000)}.log")
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "DAPR_"))},
        "APP_PORT": str(app_port),
        "DAPR_GRPC_PORT": str(dapr_grpc_port),
        "DAPR_HTTP_PORT": str(dapr_http_port),
        "WORKER_LOG_LEVEL": "DEBUG",
        "WORKER_METRICS_HOST": "127.0.0.1",
        "WORKER_METRICS_PORT": str(metrics_port),
        **env,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command), env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    worker = WorkerProcess(
        name, app_port, dapr_grpc_port, dapr_http_port, metrics_port, process, log_path
    )
    try:
        wait_until(
            lambda: process.poll() is not None or worker.listening(),
            timeout=30,
            what=f"{name} to listen on port {app_port}",
            on_timeout=worker.logs,
        )
    except BaseException:
        worker.kill()  # never leave a half-started worker behind
        raise
    if process.poll() is not None:
        raise RuntimeError(f"{name} exited early:\n{worker.logs()}")
    return worker
