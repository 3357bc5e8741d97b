"""Chaos runs: prompts across conversations while one kind of fault strikes, per row.

Everything is real: Redis, daprd (with an inbound retry policy, as deployed), the worker
processes, an OpenAI-compatible server where the LLM misbehaves. One fresh stack per
fault. Afterwards every request's events, as a downstream consumer received them, are
checked against the contract, and one row per fault is written to RELIABILITY.md.

    make chaos                                        # every fault
    .venv/bin/python -m bench.chaos --faults sigkill,sigstop --prompts 100 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.verdict import Verdict, collect, judge, load, worker_logs
from testbed.apps import RecordingApp
from testbed.components import inbound_retries
from testbed.process import ProcessLauncher, ProcessSidecar
from testbed.stack import Stack, start_stack
from tests.fakes.faulty_sidecar import FaultySidecar
from tests.fakes.openai_server import FakeOpenAIServer, Misbehaviour

TERMINAL = {"completed", "failed", "cancelled"}
REPORT = Path(__file__).resolve().parents[1] / "RELIABILITY.md"
LEASE_SECONDS = 3
# Redis reclaims a message unacknowledged for 5 s (in bare milliseconds: daprd ignores
# "5s"), so a prompt held by a paused or cut-off worker reaches the other replica.
PUBSUB = {"processingTimeout": "5000", "redeliverInterval": "1000"}


@dataclass
class Figures(Verdict):
    fault: str = ""
    faults: int = 0


@dataclass
class Run:
    """One fault's stack and what a fault needs to strike it."""

    stack: Stack
    launcher: ProcessLauncher
    rng: random.Random
    proxy: FaultySidecar | None = None

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(self.rng.uniform(seconds * 0.5, seconds * 1.5))


# A fault strikes `count` times while the prompts are answered.
Strike = Callable[[Run, int], Awaitable[None]]


async def _sigkill_worker(run: Run, count: int) -> None:
    for _ in range(count):
        await run.pause(1.0)
        await run.stack.restart_worker()  # SIGKILL, then a new process on the same ports


async def _sigstop_worker(run: Run, count: int) -> None:
    # Frozen for twice the lease: the other replica gets the prompts Redis reclaims and
    # takes the lapsed leases over; the frozen one must publish nothing when it wakes.
    for n in range(count):
        await run.pause(1.5)
        worker = run.stack.workers[n % len(run.stack.workers)]
        os.kill(worker.process.pid, signal.SIGSTOP)
        await asyncio.sleep(LEASE_SECONDS * 2)
        os.kill(worker.process.pid, signal.SIGCONT)


async def _sigkill_daprd(run: Run, count: int) -> None:
    for _ in range(count):
        await run.pause(1.5)
        sidecar = run.stack.worker_sidecars[0]
        assert isinstance(sidecar, ProcessSidecar)
        run.stack.worker_sidecars[0] = await asyncio.to_thread(run.launcher.restart, sidecar)


async def _restart_redis(run: Run, count: int) -> None:
    for _ in range(count):
        await run.pause(2.0)
        await asyncio.to_thread(run.launcher.restart_redis)


async def _sigstop_redis(run: Run, count: int) -> None:
    for _ in range(count):
        await run.pause(2.0)
        process = run.launcher.redis.process
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)
        await asyncio.sleep(LEASE_SECONDS * 2)
        os.kill(process.pid, signal.SIGCONT)


async def _fail_state_writes(run: Run, count: int) -> None:
    assert run.proxy is not None
    failing = {"now": False}
    run.proxy.fail_state = lambda: failing["now"]
    for _ in range(count):
        await run.pause(1.5)
        failing["now"] = True
        await asyncio.sleep(run.rng.uniform(0.5, LEASE_SECONDS * 1.5))
        failing["now"] = False


async def _llm_only(run: Run, count: int) -> None:
    """The LLM server misbehaves by itself (see `misbehave`); nothing else strikes."""


@dataclass(frozen=True)
class Fault:
    name: str
    label: str
    strike: Strike
    count: int
    replicas: int = 1
    proxy: bool = False
    redis_appendonly: bool = False
    # Every n-th LLM request misbehaves this way (LLM faults).
    misbehaviour: Misbehaviour | None = None


FAULTS = [
    Fault("sigkill", "worker SIGKILLed and restarted", _sigkill_worker, count=8),
    Fault(
        "sigstop",
        f"worker SIGSTOPped for {LEASE_SECONDS * 2} s (twice the lease), second replica on",
        _sigstop_worker,
        count=4,
        replicas=2,
    ),
    Fault("daprd", "worker's daprd SIGKILLed and restarted", _sigkill_daprd, count=4),
    Fault(
        "redis-restart",
        "Redis SIGKILLed and restarted (append-only file, fsync always)",
        _restart_redis,
        count=3,
        redis_appendonly=True,
    ),
    Fault(
        "redis-pause",
        f"Redis SIGSTOPped for {LEASE_SECONDS * 2} s (twice the lease)",
        _sigstop_redis,
        count=3,
    ),
    Fault(
        "state-writes",
        "state-store writes refused (UNAVAILABLE) for 0.5-4.5 s at a time",
        _fail_state_writes,
        count=5,
        proxy=True,
    ),
    Fault("llm-fail", "LLM answers 503 at the start", _llm_only, count=0, misbehaviour="fail"),
    Fault("llm-reset", "LLM drops the connection mid-stream", _llm_only, 0, misbehaviour="drop"),
    Fault(
        "llm-stall",
        "LLM stalls mid-stream past the 1 s read timeout",
        _llm_only,
        0,
        misbehaviour="stall",
    ),
]


async def run_fault(
    fault: Fault, prompts: int, contexts: int, seed: int, words: int, interval: float
) -> Figures:
    rng = random.Random(seed)
    figures = Figures(fault=fault.label, prompts=prompts)
    workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{fault.name}-"))
    launcher = ProcessLauncher(workdir / "dapr", redis_appendonly=fault.redis_appendonly)
    owned: list[Any] = []
    began = time.monotonic()
    async with AsyncExitStack() as exits:
        every = 4  # one LLM request in four misbehaves
        llm = await exits.enter_async_context(
            FakeOpenAIServer(
                lambda body: [f"{w} " for w in str(body["messages"][-1]["content"]).split()],
                token_interval=0.01,
                misbehave=lambda n: fault.misbehaviour if n % every == 0 else None,
            )
        )
        proxy = FaultySidecar(fail=lambda n: False) if fault.proxy else None
        try:
            stack = await start_stack(
                launcher.start,
                workdir,
                worker_env={
                    "WORKER_LEASE_SECONDS": str(LEASE_SECONDS),
                    "WORKER_OPENAI": json.dumps(
                        [
                            {
                                "name": "openai",
                                "base_url": llm.base_url,
                                "model": "m",
                                "read_timeout_seconds": 1,
                            }
                        ]
                    ),
                    "DAPR_LLM_COMPONENT_DEFAULT": "openai",
                },
                # As deployed: without it, deliveries cut short by a kill are dead-lettered.
                extra_components=[inbound_retries()],
                pubsub_metadata={"redis": PUBSUB},
                replicas=fault.replicas,
                # Both of the worker's ports: every sidecar call goes through the proxy,
                # which forwards all but the state writes it is told to fail.
                sidecar_port_for_worker=(lambda _: proxy.grpc_port) if proxy else None,
                sidecar_http_port_for_worker=(lambda _: proxy.http_port) if proxy else None,
                started=owned,
            )
            if proxy is not None:
                sidecar = stack.worker_sidecar
                await proxy.start(sidecar.grpc_port, sidecar.http_port)
            run = Run(stack, launcher, rng, proxy)
            prompts_by_request = load(prompts, contexts, words)
            request_context = {r: context for r, (context, _) in prompts_by_request.items()}
            collector = asyncio.create_task(collect(stack))

            async def publish() -> None:
                # Spread out, so that every fault strikes while turns are streaming.
                for _, prompt in prompts_by_request.values():
                    await stack.publish(prompt)
                    await asyncio.sleep(interval)

            await asyncio.gather(publish(), fault.strike(run, fault.count))
            figures.faults = fault.count or sum(llm.misbehaved.values())
            print(f"chaos: {fault.name}: {figures.faults} faults injected", file=sys.stderr)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                ended = {e.data["request_id"] for e in stack.received if e.kind in TERMINAL}
                if len(ended) >= prompts:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(LEASE_SECONDS * 2)  # late duplicates or stale events, if any
            collector.cancel()
            figures.faults = fault.count or sum(llm.misbehaved.values())
            figures.seconds = time.monotonic() - began
            judge(stack.received, request_context, figures)
            logs = "\n".join(worker_logs(workdir))
            figures.deliveries = logs.count("delivery of ") - logs.count("on cancellations")
            figures.replayed_endings = logs.count("publishing them again")
        finally:
            if proxy is not None:
                await proxy.stop()
            for thing in reversed(owned):
                if isinstance(thing, RecordingApp):
                    await thing.stop()
                else:
                    _resume(thing)
                    thing.kill()
            _resume_redis(launcher)
            launcher.close()
    return figures


def _resume(thing: Any) -> None:
    process = getattr(thing, "process", None)
    if process is not None and process.poll() is None:
        os.kill(process.pid, signal.SIGCONT)


def _resume_redis(launcher: ProcessLauncher) -> None:
    redis = launcher._redis
    if redis is not None and redis.process is not None and redis.process.poll() is None:
        os.kill(redis.process.pid, signal.SIGCONT)


_COLUMNS = (
    "fault",
    "prompts",
    "faults injected",
    "lost",
    "double-generated",
    "interleaved",
    "broken sequences",
    "deliveries",
    "restarted attempts",
    "replayed endings",
    "`failed` events",
    "wall time",
)
_HEADER = "| " + " | ".join(_COLUMNS) + " |\n|" + " --- |" * len(_COLUMNS)


def report(rows: list[Figures], command: str, prompts: int, contexts: int) -> str:
    verdict = "PASS" if all(r.passed for r in rows) else "FAIL"
    table = "\n".join(
        f"| {r.fault} | {r.prompts} | {r.faults} | {len(r.lost)} | {len(r.double_generated)} "
        f"| {len(r.interleaved_contexts)} | {len(r.broken_sequences)} | {r.deliveries} "
        f"| {r.restarted_attempts} | {r.replayed_endings} | {r.llm_failures_reported} "
        f"| {r.seconds:.0f} s |"
        for r in rows
    )
    return f"""# Reliability

Each chaos run publishes {prompts} prompts across {contexts} conversations, spread over
its duration, while one kind of fault strikes, against a real Redis and real daprd
sidecars (with an inbound retry policy, as `k8s/` deploys it), workers with
{LEASE_SECONDS} s leases, and an OpenAI-compatible LLM server. One fresh stack per
row. Every request's events, as a downstream consumer received them, are then checked
against the contract:

- lost: a request without a terminal event;
- double-generated: two attempts of a request reached a terminal event, or a later
  attempt followed one that did;
- interleaved: two turns (or attempts) of one conversation mixed their events;
- broken sequences: an attempt with a gap in `seq` or two terminal events.

An LLM that fails is not a lost reply: the turn ends with a `failed` event (counted in
the last column), as the contract says.

Command: `{command}`

{_HEADER}
{table}

Verdict: **{verdict}**
{_details(rows)}"""


def _details(rows: list[Figures]) -> str:
    lines = [f"- {row.fault}: {breach}" for row in rows for breach in row.breaches()]
    return ("\n" + "\n".join(lines) + "\n") if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--faults", default=",".join(f.name for f in FAULTS))
    parser.add_argument("--prompts", type=int, default=80)
    parser.add_argument("--contexts", type=int, default=10)
    parser.add_argument("--words", type=int, default=40)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between prompts")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-report", action="store_true", help="do not write RELIABILITY.md")
    args = parser.parse_args()
    chosen = [f for f in FAULTS if f.name in args.faults.split(",")]
    rows = []
    for fault in chosen:
        figures = asyncio.run(
            run_fault(fault, args.prompts, args.contexts, args.seed, args.words, args.interval)
        )
        print(json.dumps({"fault": fault.name, "passed": figures.passed}), file=sys.stderr)
        rows.append(figures)
    command = (
        "make chaos" if sys.argv[1:] == [] else "python -m bench.chaos " + " ".join(sys.argv[1:])
    )
    text = report(rows, command, args.prompts, args.contexts)
    print(text)
    if not args.no_report:
        # The Kafka section (`bench.chaos_kafka`) stays as it was.
        old = REPORT.read_text() if REPORT.exists() else ""
        kafka = old[old.index("\n## On Kafka") :] if "\n## On Kafka" in old else ""
        REPORT.write_text(text.rstrip() + "\n" + kafka)
    raise SystemExit(0 if all(r.passed for r in rows) else 1)


if __name__ == "__main__":
    print(json.dumps({"started": time.strftime("%H:%M:%S")}), file=sys.stderr)
    main()
