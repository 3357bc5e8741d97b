"""Load generation: prompts published to a worker (or the naive app) and waited out."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from dapr.proto.runtime.v1 import dapr_pb2_grpc, pubsub_pb2

from bench import pyspy
from bench.config import (
    FIRST_TOKEN_DELAY,
    SAMPLING_RATE,
    pubsub_component,
    worker_pubsub_components,
)
from bench.consumer import Recorder
from bench.fakeproc import FakeServerProcess, prompt_text
from bench.figures import Scenario, analyse
from bench.measure import (
    CpuMeter,
    cpu_of,
    histogram_quantile,
    per_second,
    proc_cpu_seconds,
    proc_rss_mb,
    publish_histogram,
    system_busy_seconds,
    thread_cpu,
)
from bench.processes import launch_naive, stop_process, worker_command
from testbed.brokers import Broker, KafkaBroker
from testbed.components import redis_state, tracing_configuration
from testbed.net import free_port
from testbed.process import ProcessLauncher, ProcessSidecar
from testbed.worker import WorkerProcess, start_worker

__all__ = ["Bench"]


@dataclass
class Bench:
    workdir: Path
    launcher: ProcessLauncher
    recorder: Recorder
    consumer_sidecar: ProcessSidecar
    broker: Broker
    worker_sidecar: ProcessSidecar | None = None
    worker: WorkerProcess | None = None
    worker_app_port: int = field(default_factory=free_port)
    worker_grpc_port: int = field(default_factory=free_port)
    worker_http_port: int = field(default_factory=free_port)
    profile_dir: Path | None = None
    channel: grpc.aio.Channel | None = None

    def stub(self) -> dapr_pb2_grpc.DaprStub:
        if self.channel is None:
            self.channel = grpc.aio.insecure_channel(self.consumer_sidecar.grpc_address)
        return dapr_pb2_grpc.DaprStub(self.channel)

    async def publish_prompt(self, request_id: str, text: str, topic: str = "prompts") -> float:
        prompt = {
            "messages": [{"role": "user", "content": text}],
            "context_id": request_id,
            "request_id": request_id,
            "history": False,
        }
        at = time.monotonic()
        await self.stub().PublishEvent(
            pubsub_pb2.PublishEventRequest(
                pubsub_name="pubsub",
                topic=topic,
                data=json.dumps(prompt).encode(),
                data_content_type="application/json",
            )
        )
        return at

    async def start_worker(self, base_url: str, profile_name: str | None) -> WorkerProcess:
        if self.worker is not None:
            await asyncio.to_thread(stop_process, self.worker.process)
        env = {
            "WORKER_OPENAI": json.dumps([{"name": "openai", "base_url": base_url, "model": "m"}]),
            "DAPR_LLM_COMPONENT_DEFAULT": "openai",
            "WORKER_LOG_LEVEL": "INFO",
            **self.broker.worker_env,
            # Tuning under test, e.g. BENCH_WORKER_PUBLISH_MAX_IN_FLIGHT=2 make bench.
            **{
                key.removeprefix("BENCH_"): value
                for key, value in os.environ.items()
                if key.startswith("BENCH_WORKER_")
            },
        }
        profile_to = None
        if self.profile_dir is not None and profile_name is not None:
            profile_to = self.profile_dir / f"profile-{profile_name}.txt"
        self.worker = await asyncio.to_thread(
            functools.partial(
                start_worker,
                self.workdir,
                env,
                name="worker",
                app_port=self.worker_app_port,
                dapr_grpc_port=self.worker_grpc_port,
                dapr_http_port=self.worker_http_port,
                command=worker_command(profile_to),
            )
        )
        if self.worker_sidecar is None:
            self.worker_sidecar = await asyncio.to_thread(
                self.launcher.start,
                app_id="llm-stream-worker",
                components=[*worker_pubsub_components(self.broker), redis_state()],
                app_port=self.worker_app_port,
                grpc_port=self.worker_grpc_port,
                http_port=self.worker_http_port,
                configuration=tracing_configuration(SAMPLING_RATE),
            )
            # Every Kafka consumer of the worker holds its partitions before anything runs.
            members = len(self.broker.prompt_pubsubs)
            await asyncio.to_thread(self.broker.wait_subscribed, "llm-stream-worker", members)
        return self.worker

    def bus_pids(self) -> dict[str, int]:
        """The processes every measurement shares (all but the worker and the LLM), by role."""
        named = {"consumer + publisher (bench)": os.getpid()}
        if self.worker_sidecar is not None:
            named["worker's daprd"] = self.worker_sidecar.process.pid
        named["consumer's daprd"] = self.consumer_sidecar.process.pid
        redis = self.launcher._redis
        if redis is not None and redis.process is not None:
            named["redis"] = redis.process.pid
        if isinstance(self.broker, KafkaBroker) and self.broker.server.process is not None:
            named["kafka"] = self.broker.server.process.pid
        return named

    def bench_pids(self, *extra: int) -> list[int]:
        pids = [os.getpid(), *extra]
        pids += [sidecar.process.pid for sidecar in self.launcher._sidecars]
        redis = self.launcher._redis
        if redis is not None and redis.process is not None:
            pids.append(redis.process.pid)
        if isinstance(self.broker, KafkaBroker) and self.broker.server.process is not None:
            pids.append(self.broker.server.process.pid)
        return pids

    async def wait_terminal(
        self, count: int, seconds: float, sample: list[int] | None = None
    ) -> tuple[bool, float]:
        """Waits for `count` terminal events; samples the worker's RSS meanwhile."""
        peak = 0.0
        deadline = time.monotonic() + seconds
        while self.recorder.terminal < count and time.monotonic() < deadline:
            for pid in sample or []:
                with contextlib.suppress(OSError):
                    peak = max(peak, proc_rss_mb(pid))
            await asyncio.sleep(0.05)
        return self.recorder.terminal >= count, peak

    async def worker_scenario(
        self, name: str, streams: int, tokens: int, interval: float
    ) -> Scenario:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        scenario = Scenario(name, "worker", streams, tokens, interval)
        fake = await asyncio.to_thread(FakeServerProcess.start, FIRST_TOKEN_DELAY, interval)
        try:
            worker = await self.start_worker(fake.base_url, name)
            assert self.worker_sidecar is not None
            self.recorder.reset()
            await self.publish_prompt(f"warm-{name}", prompt_text("warm", 3))
            warmed, _ = await self.wait_terminal(1, 60)
            if not warmed:
                raise RuntimeError(f"warm-up turn of {name} did not complete")
            await asyncio.sleep(0.5)
            self.recorder.reset()
            pid = worker.process.pid
            idle0 = proc_cpu_seconds(pid)
            await asyncio.sleep(2)
            scenario.idle_cpu_percent = (proc_cpu_seconds(pid) - idle0) / 2 * 100
            baseline = proc_rss_mb(pid)
            hist0, batched0, calls0 = await asyncio.to_thread(publish_histogram, worker)
            threads0 = thread_cpu(pid)
            spy = contextlib.ExitStack()
            if (spy_dir := pyspy.output_dir()) is not None:
                spy.enter_context(pyspy.sampling(pid, spy_dir / name))
            meter = CpuMeter({"worker": pid, "fake LLM": fake.pid, **self.bus_pids()})
            busy0, wall0 = system_busy_seconds(), time.monotonic()
            ids = [f"{name}-{n}" for n in range(streams)]
            times = await asyncio.gather(
                *(self.publish_prompt(r, prompt_text(f"{n}", tokens)) for n, r in enumerate(ids))
            )
            published = dict(zip(ids, times, strict=True))
            done, peak = await self.wait_terminal(
                streams, 120 + tokens * max(interval, 0.002) * 3, [pid]
            )
            used, wall = meter.seconds(), time.monotonic() - wall0
            spy.close()
            hist1, batched1, calls1 = await asyncio.to_thread(publish_histogram, worker)
            if calls1 > calls0:
                scenario.events_per_publish_call = (batched1 - batched0) / (calls1 - calls0)
            threads1 = thread_cpu(pid)
            scenario.worker_threads_cpu = {
                name: round(seconds - threads0.get(name, 0.0), 2)
                for name, seconds in threads1.items()
                if seconds - threads0.get(name, 0.0) > 0
            }
            scenario.cpus_by_process = per_second(used, wall)
            mine = sum(used.values())
            scenario.bench_cpus = mine / wall
            scenario.foreign_cpus = max(system_busy_seconds() - busy0 - mine, 0.0) / wall
            scenario.publish_ack_ms_p50 = histogram_quantile(hist0, hist1, 0.5)
            scenario.publish_ack_ms_p99 = histogram_quantile(hist0, hist1, 0.99)
            if not done:
                scenario.notes.append("timed out waiting for terminal events")
            await asyncio.sleep(0.3)
            events = list(self.recorder.events)
            if self.profile_dir is not None:
                await asyncio.to_thread(stop_process, worker.process)
                self.worker = None
        finally:
            result = await asyncio.to_thread(fake.stop)
        emitted = [(t, at) for t, at in result.get("emitted", []) if not t.startswith("twarm")]
        analyse(scenario, events, emitted, published, FIRST_TOKEN_DELAY)
        thousands = max(scenario.tokens_received, 1) / 1000
        scenario.cpu_s_per_1000_tokens = used["worker"] / thousands
        scenario.sidecar_cpu_s_per_1000_tokens = used["worker's daprd"] / thousands
        scenario.rss_mb_baseline = baseline
        scenario.rss_mb_peak = max(peak, baseline)
        scenario.rss_kb_per_stream = (scenario.rss_mb_peak - baseline) * 1024 / streams
        return scenario

    async def naive_scenario(self, streams: int, tokens: int, interval: float) -> Scenario:
        name = f"naive-{streams}x20"
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        scenario = Scenario(name, "naive", streams, tokens, interval)
        fake = await asyncio.to_thread(FakeServerProcess.start, FIRST_TOKEN_DELAY, interval)
        app_port, grpc_port, http_port = free_port(), free_port(), free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DAPR_",))},
            "APP_PORT": str(app_port),
            "DAPR_GRPC_PORT": str(grpc_port),
            "DAPR_HTTP_PORT": str(http_port),
            "NAIVE_BASE_URL": fake.base_url,
        }
        process = await asyncio.to_thread(launch_naive, self.workdir / "naive.log", env)
        try:
            await asyncio.to_thread(
                self.launcher.start,
                app_id="naive",
                components=[pubsub_component(self.broker)],
                app_port=app_port,
                grpc_port=grpc_port,
                http_port=http_port,
                configuration=tracing_configuration(SAMPLING_RATE),
            )
            self.recorder.reset()
            await self.publish_prompt(f"warm-{name}", prompt_text("warm", 3), topic="naive-prompts")
            warmed, _ = await self.wait_terminal(1, 60)
            if not warmed:
                raise RuntimeError("warm-up turn of the naive app did not complete")
            await asyncio.sleep(0.5)
            self.recorder.reset()
            cpu0 = proc_cpu_seconds(process.pid)
            baseline = proc_rss_mb(process.pid)
            pids = self.bench_pids(process.pid, fake.pid)
            busy0, mine0, wall0 = system_busy_seconds(), cpu_of(pids), time.monotonic()
            ids = [f"{name}-{n}" for n in range(streams)]
            times = await asyncio.gather(
                *(
                    self.publish_prompt(r, prompt_text(f"n{n}", tokens), topic="naive-prompts")
                    for n, r in enumerate(ids)
                )
            )
            published = dict(zip(ids, times, strict=True))
            done, peak = await self.wait_terminal(
                streams, 60 + streams * tokens * interval, [process.pid]
            )
            cpu1 = proc_cpu_seconds(process.pid)
            wall = time.monotonic() - wall0
            mine = cpu_of(pids) - mine0
            scenario.bench_cpus = mine / wall
            scenario.foreign_cpus = max(system_busy_seconds() - busy0 - mine, 0.0) / wall
            if not done:
                scenario.notes.append("timed out waiting for the naive app")
            await asyncio.sleep(0.3)
            events = list(self.recorder.events)
        finally:
            await asyncio.to_thread(stop_process, process, 5)
            result = await asyncio.to_thread(fake.stop)
        emitted = [(t, at) for t, at in result.get("emitted", []) if not t.startswith("twarm")]
        analyse(scenario, events, emitted, published, FIRST_TOKEN_DELAY)
        thousands = max(scenario.tokens_received, 1) / 1000
        scenario.cpu_s_per_1000_tokens = (cpu1 - cpu0) / thousands
        scenario.rss_mb_baseline = baseline
        scenario.rss_mb_peak = max(peak, baseline)
        scenario.rss_kb_per_stream = (scenario.rss_mb_peak - baseline) * 1024 / streams
        return scenario
