"""Sampling the worker with py-spy while a scenario runs: a flame graph and its top entries.

py-spy attaches to the running worker (`--nonblocking`: the worker is never paused, so
the figures of the run stay close to an unprofiled one) and samples it until the scenario
ends, counting only samples that hold the GIL (the worker's Python CPU, not its idle
waits). Two samplers run side by side: one writes the flame graph (SVG), the other the
collapsed stacks, from which `top_entries` ranks functions by the share of samples in
which they are on the stack (inclusive) and on top of it (self).

    BENCH_PYSPY=bench/results/cpu-profile python -m bench.bench --only worker-100x20
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["output_dir", "sampling", "top_entries"]

RATE = 97  # samples a second, off the beat of the 20 tok/s pacer


def output_dir() -> Path | None:
    """Where `$BENCH_PYSPY` asks the profiles to go, if it asks."""
    where = os.environ.get("BENCH_PYSPY", "")
    if not where:
        return None
    Path(where).mkdir(parents=True, exist_ok=True)
    return Path(where)


def _executable() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise RuntimeError("BENCH_PYSPY is set but py-spy is not installed (pip install py-spy)")
    return found


@contextlib.contextmanager
def sampling(pid: int, stem: Path) -> Iterator[None]:
    """Samples `pid` for the body's duration into `<stem>.svg` and `<stem>.collapsed`."""
    spy = _executable()
    # --gil: only samples holding the GIL, so time the loop spends waiting (in epoll,
    # GIL released) is left out and the shares are shares of the worker's Python CPU.
    common = ["record", "--pid", str(pid), "--rate", str(RATE), "--nonblocking", "--gil"]
    samplers = [
        subprocess.Popen(
            [spy, *common, "--format", fmt, "--output", str(stem) + suffix],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fmt, suffix in (("flamegraph", ".svg"), ("raw", ".collapsed"))
    ]
    try:
        yield
    finally:
        for sampler in samplers:  # SIGINT: py-spy writes what it has, then exits
            sampler.send_signal(signal.SIGINT)
        for sampler in samplers:
            sampler.wait(timeout=60)
        collapsed = Path(str(stem) + ".collapsed")
        if collapsed.exists():
            Path(str(stem) + ".top.txt").write_text(top_entries(collapsed.read_text()))


def top_entries(collapsed: str, count: int = 40) -> str:
    """The functions most often on the stack (inclusive) and on top of it (self)."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        n = int(samples)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    lines = [f"{total} samples at {RATE} Hz", "", "inclusive %  function"]
    lines += [f"{100 * n / total:10.1f}  {f}" for f, n in inclusive.most_common(count)]
    lines += ["", "self %       function"]
    lines += [f"{100 * n / total:10.1f}  {f}" for f, n in own.most_common(count)]
    return "\n".join(lines) + "\n"
