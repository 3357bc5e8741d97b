"""Meters read from outside the processes: /proc CPU and memory, the worker's metrics."""

from __future__ import annotations

import contextlib
import os
import re
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from testbed.worker import WorkerProcess

__all__ = [
    "CpuMeter",
    "cpu_of",
    "histogram_quantile",
    "per_second",
    "proc_cpu_seconds",
    "proc_rss_mb",
    "publish_histogram",
    "system_busy_seconds",
    "thread_cpu",
]


_CHUNK_BUCKET = re.compile(
    r'llm_stream_publish_latency_seconds_bucket\{event_type="chunk",le="([^"]+)"\} (\S+)'
)


def histogram_quantile(
    before: dict[float, float], after: dict[float, float], q: float
) -> float | None:
    """Upper bound (ms) of the bucket holding quantile q of the observations in between."""
    counts = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    if not counts or counts[-1][1] <= 0:
        return None
    total = counts[-1][1]
    for le, count in counts:
        if count >= q * total:
            return le * 1000
    return None


def publish_histogram(worker: WorkerProcess) -> tuple[dict[float, float], float, float]:
    """Cumulative buckets of the worker's chunk publish latency (publish -> sidecar ack),
    and the sum and count of its events-per-publish-call histogram."""
    url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}, 0.0, 0.0
    buckets: dict[float, float] = {}
    calls = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        match = _CHUNK_BUCKET.match(line)
        if match:
            buckets[float(match[1])] = float(match[2])
        elif line.startswith("llm_stream_publish_batch_size_"):
            name, value = line.split()
            calls[name.rsplit("_", 1)[1]] = float(value)
    return buckets, calls["sum"], calls["count"]


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of a process (threads of one name summed)."""
    result: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            result[name] = result.get(name, 0.0) + seconds
    return result


def system_busy_seconds() -> float:
    """CPU time spent by everything on the machine (all CPUs), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_of(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += proc_cpu_seconds(pid)
    return total


class CpuMeter:
    """CPU seconds each process (by role) has used since the meter was made."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._start = {role: cpu_of([pid]) for role, pid in pids.items()}

    def seconds(self) -> dict[str, float]:
        return {role: cpu_of([pid]) - self._start[role] for role, pid in self._pids.items()}


def per_second(used: dict[str, float], wall: float) -> dict[str, float]:
    """CPUs' worth of work per role: CPU seconds over wall seconds."""
    return {role: round(seconds / wall, 3) for role, seconds in used.items()}


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
