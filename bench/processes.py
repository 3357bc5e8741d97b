"""The processes a run starts and stops: the worker (maybe under pyinstrument), the naive app."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.config import ROOT
from testbed.reap import terminate

__all__ = ["launch_naive", "stop_process", "worker_command"]


def worker_command(profile_to: Path | None) -> list[str]:
    """`python -m worker`, under pyinstrument when `profile_to` is given."""
    if profile_to is None:
        return [sys.executable, "-m", "worker"]
    return [
        sys.executable,
        *("-m", "pyinstrument", "-r", "text", "-o", str(profile_to)),
        *os.environ.get("BENCH_PYINSTRUMENT_ARGS", "").split(),
        *("-m", "worker"),
    ]


def launch_naive(log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.naive_app"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    terminate(process, timeout)
