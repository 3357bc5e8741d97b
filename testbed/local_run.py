"""`make run` and `make consume` as users run them: the real scripts, on free ports.

Each script runs in its own process group (a terminal's foreground job), so `interrupt`
is what Ctrl-C does: SIGINT to the group. The scripts start their processes in sessions
of their own, so the harness finds them as the script's descendants (Linux /proc).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed.net import free_port, wait_until
from testbed.process import REPO_ROOT, daprd_binary

__all__ = ["LocalRun", "start_make_consume", "start_make_run"]

# What each script prints on stderr once everything it started listens.
READY_LINES = {"run-local.sh": "llm-stream-worker is up", "consume-local.sh": "is consuming"}


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@dataclass
class LocalRun:
    script: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ports: Mapping[str, int]
    started: set[int] = field(default_factory=set)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def still_running(self) -> list[int]:
        """The processes the script started (found once it was up) that still run."""
        return sorted(pid for pid in self.started if _running(pid))

    def interrupt(self, timeout: float = 60) -> int:
        """Ctrl-C: SIGINT to the script's process group; the script's exit status."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """Clean-up after a failed test: nothing the script started survives."""
        for pid in [*self.still_running(), self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()


def _start(
    script: str,
    workdir: Path,
    env: Mapping[str, str],
    ports: Mapping[str, int],
    args: Sequence[str] = (),
) -> LocalRun:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{script}.log"
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "DAPR_"))},
        "DAPRD": daprd_binary(),
        **{name: str(port) for name, port in ports.items()},
        **env,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            # Ctrl-C as in a terminal: a test run started in the background (a CI job's
            # `cmd &`) inherits SIGINT ignored, and bash cannot trap a signal ignored
            # on entry, so the script's own Ctrl-C handling would never run.
            ["env", "--default-signal=INT", "bash", str(REPO_ROOT / "scripts" / script), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=workdir,
            start_new_session=True,
        )
    run = LocalRun(script, process, log_path, ports)
    try:
        wait_until(
            lambda: process.poll() is not None or READY_LINES[script] in run.logs(),
            timeout=90,
            what=f"{script} to start everything",
            on_timeout=run.logs,
        )
    except BaseException:
        run.kill()
        raise
    if process.poll() is not None:
        run.kill()
        raise RuntimeError(f"{script} exited early:\n{run.logs()}")
    run.started = _descendants(process.pid)
    return run


def start_make_run(workdir: Path, run_dir: Path, *, broker: str = "redis") -> LocalRun:
    """scripts/run-local.sh with Redis' data and its resources under `run_dir`."""
    ports = {
        name: free_port()
        for name in (
            "APP_PORT",
            "DAPR_GRPC_PORT",
            "DAPR_HTTP_PORT",
            "DAPR_METRICS_PORT",
            "REDIS_PORT",
            "WORKER_METRICS_PORT",
        )
    }
    env = {"LOCAL_RUN_DIR": str(run_dir), "BROKER": broker, "WORKER_METRICS_HOST": "127.0.0.1"}
    return _start("run-local.sh", workdir, env, ports)


def start_make_consume(workdir: Path, run_dir: Path, *args: str) -> LocalRun:
    """scripts/consume-local.sh `args`, attached to the `make run` that uses `run_dir`."""
    ports = {
        name: free_port()
        for name in (
            "CONSUMER_APP_PORT",
            "CONSUMER_GRPC_PORT",
            "CONSUMER_HTTP_PORT",
            "CONSUMER_METRICS_PORT",
        )
    }
    return _start("consume-local.sh", workdir, {"LOCAL_RUN_DIR": str(run_dir)}, ports, args)
