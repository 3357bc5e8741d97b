"""Stopping the processes the harness starts: gracefully, or as a crash; reaped either way."""

from __future__ import annotations

import subprocess

__all__ = ["kill", "terminate"]


def terminate(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(process)


def kill(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL at once: a crash, with no chance to clean up."""
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()
