"""A real Redis server (Debian's redis-server) on a free port, in a temporary folder."""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from testbed.net import free_port, wait_until
from testbed.reap import kill, terminate

__all__ = ["RedisServer", "start_redis"]


@dataclass
class RedisServer:
    host: str
    port: int
    process: subprocess.Popen[bytes] | None
    log_path: Path | None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        terminate(self.process, 10)

    def kill(self) -> None:
        """SIGKILL: Redis crashes, keeping only what it had written to disk."""
        kill(self.process)


def start_redis(workdir: Path, *, appendonly: bool = False, port: int | None = None) -> RedisServer:
    """Redis in `workdir`; with `appendonly`, every write is fsynced to the append-only
    file first, so a restart (even after SIGKILL) loses nothing."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed: run `bash scripts/ensure-redis.sh` "
            "(Debian's redis-server package)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = workdir / "redis.log"
    durability = (
        ["--appendonly", "yes", "--appendfsync", "always"]
        if appendonly
        else [
            "--appendonly",
            "no",
        ]
    )
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(workdir),
                "--save",
                "",
                *durability,
                "--protected-mode",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = RedisServer(host="127.0.0.1", port=port, process=process, log_path=log_path)
    try:
        wait_until(
            lambda: process.poll() is not None or server.ping(),
            timeout=15,
            what=f"redis-server on port {port}",
        )
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited early:\n{log_path.read_text()}")
    except BaseException:
        server.stop()
        raise
    return server
