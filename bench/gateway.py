"""What the HTTP gateway adds on top of the bus, and how many SSE clients one replica holds.

One run, on the real daprd and Redis: the worker (echo backend, 20 words per reply at
20 words/s) with its daprd; a bus consumer (a streaming subscription on its own daprd,
as `bench/bench.py` has it); one gateway replica with its own daprd. N SSE clients
(aiohttp, in this process) POST /v1/chat/completions with `stream: true` at once. Every
response event reaches both the bus consumer and, through the gateway, an SSE client;
both stamp it with `time.monotonic()` in this one process, so:

- *added latency* = SSE arrival - bus arrival of the same event (request, attempt, seq):
  what the gateway's sidecar delivery, state store write, fan-out and SSE cost;
- *TTFC* via the gateway and via the bus, from the POST; their ratio;
- gateway CPU (its process and its daprd) per 1000 events, peak RSS, and whether every
  client got its whole text once.

    DAPRD=$(bash scripts/daprd.sh) .venv/bin/python -m bench.gateway
    .venv/bin/python -m bench.gateway --clients 10 100 --results /tmp/out
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.config import PUBSUB
from bench.consumer import Recorder
from bench.load import Bench
from bench.measure import proc_cpu_seconds, proc_rss_mb, system_busy_seconds
from testbed.brokers import RedisBroker
from testbed.components import redis_pubsub, redis_state, tracing_configuration
from testbed.gateway import GatewayProcess, start_gateway
from testbed.net import free_port
from testbed.process import ProcessLauncher
from testbed.worker import start_worker

ROOT = Path(__file__).resolve().parents[1]
CHUNK = "llm.stream.chunk.v1"
WORDS = 20
WORD_DELAY = 0.05
# The gateway as shipped (bulk subscription, one state store write per batch), and with
# one delivery and one write per event.
VARIANTS = {"bulk": 100, "per-event": 1}


@dataclass
class Client:
    index: int
    text: str
    request_id: str = ""
    posted_at: float = 0.0
    # (attempt, seq) -> arrival, for content chunks
    arrivals: dict[tuple[int, int], float] = field(default_factory=dict)
    received: str = ""
    ids: list[str] = field(default_factory=list)
    done: bool = False


async def _run_client(http: aiohttp.ClientSession, url: str, client: Client) -> None:
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": client.text}],
        "stream": True,
        "history": False,
    }
    client.posted_at = time.monotonic()
    async with http.post(f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        client.request_id = response.headers["X-Request-Id"]
        event_id = ""
        async for raw in response.content:
            now = time.monotonic()
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                event_id = line[4:]
            elif line == "data: [DONE]":
                client.done = True
                return
            elif line.startswith("data: "):
                chunk = json.loads(line[6:])
                client.ids.append(event_id)
                for choice in chunk.get("choices", []):
                    content = choice["delta"].get("content")
                    if content:
                        client.received += content
                        _, attempt, seq = event_id.rsplit(":", 2)
                        client.arrivals[(int(attempt), int(seq))] = now


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _scenario(
    n: int, gateway: GatewayProcess, recorder: Recorder, pids: dict[str, int]
) -> dict[str, Any]:
    recorder.reset()
    clients = [Client(i, " ".join(f"c{n}x{i}w{j}" for j in range(WORDS))) for i in range(n)]
    cpu_before = {role: proc_cpu_seconds(pid) for role, pid in pids.items()}
    machine_before = system_busy_seconds()
    peak_rss = proc_rss_mb(gateway.process.pid)
    started = time.monotonic()

    async def sample_rss() -> None:
        nonlocal peak_rss
        while True:
            peak_rss = max(peak_rss, proc_rss_mb(gateway.process.pid))
            await asyncio.sleep(0.05)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        sampler = asyncio.create_task(sample_rss())
        try:
            async with asyncio.timeout(300):
                await asyncio.gather(*(_run_client(http, gateway.url, c) for c in clients))
        finally:
            sampler.cancel()
    wall = time.monotonic() - started
    cpu = {role: proc_cpu_seconds(pid) - cpu_before[role] for role, pid in pids.items()}
    machine = system_busy_seconds() - machine_before
    # The bus consumer's copy of every chunk event: (request, attempt, seq) -> arrival.
    for _ in range(600):  # at most 30 s; it is usually there before the SSE copy
        if recorder.terminal >= n:
            break
        await asyncio.sleep(0.05)
    bus: dict[tuple[str, int, int], float] = {}
    for at, kind, data in recorder.events:
        if kind == CHUNK:
            d = json.loads(data)
            bus.setdefault((d["request_id"], d["attempt"], d["seq"]), at)
    added: list[float] = []
    ttfc_gateway: list[float] = []
    ttfc_bus: list[float] = []
    for c in clients:
        for (attempt, seq), at in c.arrivals.items():
            bus_at = bus.get((c.request_id, attempt, seq))
            if bus_at is not None:
                added.append(at - bus_at)
        if c.arrivals:
            ttfc_gateway.append(min(c.arrivals.values()) - c.posted_at)
            ttfc_bus.append(
                min(t for (r, _, _), t in bus.items() if r == c.request_id) - c.posted_at
            )
    whole = sum(c.done and c.received == c.text for c in clients)
    duplicates = sum(len(c.ids) - len(set(c.ids)) for c in clients)
    events = len(recorder.events)
    ms = 1000.0
    return {
        "clients": n,
        "whole_replies": whole,
        "duplicate_events": duplicates,
        "wall_s": round(wall, 2),
        "response_events": events,
        "added_ms_p50": round(_quantile(added, 0.5) * ms, 2),
        "added_ms_p99": round(_quantile(added, 0.99) * ms, 2),
        "added_ms_max": round(max(added, default=float("nan")) * ms, 2),
        "ttfc_gateway_ms_p50": round(_quantile(ttfc_gateway, 0.5) * ms, 1),
        "ttfc_bus_ms_p50": round(_quantile(ttfc_bus, 0.5) * ms, 1),
        "ttfc_ratio_p50": round(
            statistics.median(g / b for g, b in zip(ttfc_gateway, ttfc_bus, strict=True)), 3
        )
        if ttfc_bus
        else None,
        "gateway_cpu_s": round(cpu["gateway"], 2),
        "gateway_daprd_cpu_s": round(cpu["gateway's daprd"], 2),
        "gateway_cpu_ms_per_1000_events": round(cpu["gateway"] / max(events, 1) * 1e6, 1),
        "gateway_cpus_busy": round(cpu["gateway"] / wall, 3),
        "gateway_peak_rss_mb": round(peak_rss, 1),
        # The SSE clients and the bus consumer share this process: when it is saturated
        # the arrivals it stamps are late too.
        "bench_process_cpus_busy": round(cpu["bench (clients + bus consumer)"] / wall, 3),
        "machine_cpus_busy": round(machine / wall, 3),
    }


async def run(clients: list[int]) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    launcher = ProcessLauncher(workdir / "dapr")
    recorder = Recorder(["responses"])
    gateway: GatewayProcess | None = None
    worker = None
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "words_per_reply": WORDS,
        "word_delay_s": WORD_DELAY,
        "scenarios": [],
    }
    try:
        consumer_sidecar = await asyncio.to_thread(
            launcher.start,
            app_id="consumer",
            components=[redis_pubsub(**PUBSUB)],
            app_port=await recorder.start(),
            configuration=tracing_configuration(),
        )
        bench = Bench(workdir, launcher, recorder, consumer_sidecar, RedisBroker())
        await recorder.subscribe(bench.stub())
        app_port, grpc_port, http_port = free_port(), free_port(), free_port()
        worker = await asyncio.to_thread(
            start_worker,
            workdir,
            {"WORKER_ECHO__DELAY_SECONDS": str(WORD_DELAY), "WORKER_LOG_LEVEL": "INFO"},
            dapr_grpc_port=grpc_port,
            dapr_http_port=http_port,
            app_port=app_port,
        )
        await asyncio.to_thread(
            launcher.start,
            app_id="llm-stream-worker",
            components=[redis_pubsub(**PUBSUB), redis_state()],
            app_port=app_port,
            grpc_port=grpc_port,
            http_port=http_port,
            configuration=tracing_configuration(),
        )
        for variant, bulk in VARIANTS.items():
            gateway = await asyncio.to_thread(
                start_gateway,
                launcher,
                workdir / f"gateway-{variant}",
                name=f"gateway-{variant}",
                env={
                    "GATEWAY_IDLE_TIMEOUT_SECONDS": "300",
                    "GATEWAY_BULK_MAX_MESSAGES": str(bulk),
                },
                pubsub_metadata={"concurrency": "512", "queueDepth": "512"},
            )
            assert gateway.sidecar is not None
            pids = {
                "bench (clients + bus consumer)": os.getpid(),
                "gateway": gateway.process.pid,
                "gateway's daprd": gateway.sidecar.process.pid,  # type: ignore[attr-defined]
            }
            for n in clients:
                # Warm-up: the first reply of a fresh stack pays for connections and imports.
                await _scenario(1, gateway, recorder, pids)
                scenario = {"variant": variant, **await _scenario(n, gateway, recorder, pids)}
                print(json.dumps(scenario), flush=True)
                results["scenarios"].append(scenario)
            gateway.stop()
            gateway.sidecar.stop()
            gateway = None
    finally:
        if gateway is not None:
            gateway.stop()
        if worker is not None:
            worker.kill()
        await recorder.stop()
        launcher.close()
    return results


def markdown(results: dict[str, Any]) -> str:
    rows = [
        "| gateway | SSE clients | whole replies | added p50 / p99 / max (ms) "
        "| TTFC gateway / bus p50 (ms) | TTFC ratio | gateway CPU s (+ its daprd) "
        "| CPU ms / 1000 events | CPUs busy | peak RSS MB | bench / machine CPUs busy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in results["scenarios"]:
        rows.append(
            f"| {s['variant']} | {s['clients']} "
            f"| {s['whole_replies']}/{s['clients']} (dup {s['duplicate_events']}) "
            f"| {s['added_ms_p50']} / {s['added_ms_p99']} / {s['added_ms_max']} "
            f"| {s['ttfc_gateway_ms_p50']} / {s['ttfc_bus_ms_p50']} | {s['ttfc_ratio_p50']} "
            f"| {s['gateway_cpu_s']} (+{s['gateway_daprd_cpu_s']}) "
            f"| {s['gateway_cpu_ms_per_1000_events']} | {s['gateway_cpus_busy']} "
            f"| {s['gateway_peak_rss_mb']} "
            f"| {s['bench_process_cpus_busy']} / {s['machine_cpus_busy']} |"
        )
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 100, 300])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    results = asyncio.run(run(args.clients))
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "gateway.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.results / "gateway.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
