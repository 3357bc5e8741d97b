"""The gateway as users run it (`python -m llm_stream_gateway`), each with its own daprd."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.components import redis_pubsub, redis_state, tracing_configuration
from testbed.net import free_port, http_status, wait_until
from testbed.reap import kill, terminate
from testbed.sidecar import DaprLauncher, Sidecar

__all__ = ["GATEWAY_APP_ID", "GatewayProcess", "start_gateway"]

GATEWAY_APP_ID = "llm-stream-gateway"


@dataclass
class GatewayProcess:
    name: str
    port: int
    callback_port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    sidecar: Sidecar | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: a replica that dies, with no chance to close its streams."""
        kill(self.process)

    def stop(self) -> None:
        terminate(self.process, 15)


def start_gateway(
    launcher: DaprLauncher[Any],
    workdir: Path,
    *,
    name: str = "gateway0",
    env: Mapping[str, str] | None = None,
    pubsub_metadata: Mapping[str, str] | None = None,
) -> GatewayProcess:
    """A gateway replica and its sidecar. The sidecar's pub/sub component has a consumer
    group of this replica's own, as `consumerID: "{podName}"` gives each pod in k8s."""
    port, callback_port, dapr_http = free_port(), free_port(), free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "DAPR_"))},
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_CALLBACK_PORT": str(callback_port),
        "DAPR_HTTP_PORT": str(dapr_http),
        **(env or {}),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "llm_stream_gateway"],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    gateway = GatewayProcess(name, port, callback_port, process, log_path)
    try:
        wait_until(
            lambda: process.poll() is not None or http_status(f"{gateway.url}/") == 200,
            timeout=30,
            what=f"{name} to listen on port {port}",
            on_timeout=gateway.logs,
        )
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{gateway.logs()}")
        gateway.sidecar = launcher.start(
            app_id=GATEWAY_APP_ID,
            components=[
                redis_pubsub(
                    # Deliveries in flight: at least the gateway's bulk batch size.
                    **{"concurrency": "256", "queueDepth": "256", **(pubsub_metadata or {})},
                    consumerID=f"{name}-{uuid.uuid4().hex[:8]}",
                ),
                redis_state(),
            ],
            app_port=callback_port,
            app_protocol="http",
            http_port=dapr_http,
            configuration=tracing_configuration(),
        )
    except BaseException:
        gateway.kill()
        raise
    return gateway
