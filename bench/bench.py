"""Throughput and latency of the worker, against a real daprd and Redis.

Redis, the worker's daprd, the worker (`python -m worker`, OpenAI backend pointed at a
local fake SSE server in its own process) and a consumer app with its own daprd, as
deployed. The fake server stamps each token when it writes it; the consumer stamps each
event when the sidecar hands it over; both with `time.monotonic()` (one system clock).

Per scenario: added latency per token (chunk arrival minus emission of the last token
that chunk carries), time-to-first-chunk overhead, events/s, tokens/s, tokens per
chunk, worker CPU per 1000 tokens and resident memory. Two references in the same run:
the sidecar's limit (structured CloudEvents published as fast as daprd accepts them)
and a naive handler (`bench/naive_app.py`: threaded SDK App, a publish per token).

    make bench          # quick profile: 1, 10, 100 streams at 20 tok/s, one fast stream
    make bench-full     # adds 500 streams, longer streams
    DAPRD=$(bash scripts/daprd.sh) .venv/bin/python -m bench.bench --profile quick
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from dapr.proto.runtime.v1 import appcallback_pb2, dapr_pb2_grpc, pubsub_pb2

from bench.fakeproc import FakeServerProcess, prompt_text
from testbed.brokers import Broker, KafkaBroker, RedisBroker
from testbed.components import ComponentSpec, redis_state, tracing_configuration
from testbed.kafka import KafkaServer, start_kafka
from testbed.net import free_port
from testbed.process import ProcessLauncher, ProcessSidecar
from testbed.worker import WorkerProcess, start_worker
from worker.pipeline.inbound import InboundMessage
from worker.pipeline.outcome import Outcome
from worker.transport.dapr import AppServer, Subscription

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
REPORT = ROOT / "BENCHMARKS.md"
CHUNK = "llm.stream.chunk.v1"
STARTED = "llm.stream.started.v1"
TERMINAL_TYPES = {f"llm.stream.{k}.v1" for k in ("completed", "failed", "cancelled")}
LIMIT_TYPE = "bench.limit.v1"
FIRST_TOKEN_DELAY = 0.1
# Deliveries the sidecar runs at once (Dapr's Redis default is 10, which would cap the
# worker at 10 streams), and no reclaiming of long streams while they run.
# Same as components/redis/pubsub.yaml.
PUBSUB = {
    "concurrency": "512",
    "queueDepth": "512",
    # Bare milliseconds: the component ignores "300s" (and keeps its 60 s default).
    "processingTimeout": "300000",
    "redeliverInterval": "60000",
}
# Kafka: partitions of every topic (the worker takes prompts in bulk, as deployed).
KAFKA_PARTITIONS = 3
Status = appcallback_pb2.TopicEventResponse.TopicEventResponseStatus
# The sidecars' tracing, as shipped (components/config/sidecar.yaml): every request traced.
# BENCH_SAMPLING_RATE=0 measures the sidecars without tracing.
SAMPLING_RATE = os.environ.get("BENCH_SAMPLING_RATE", "1")


@dataclass(frozen=True)
class Profile:
    concurrency: tuple[int, ...]
    tokens: int  # per stream at 20 tok/s
    fast_tokens: int  # the one stream as fast as possible
    fast_streams: int  # and many streams as fast as possible, to load the sidecar
    fast_streams_tokens: int
    paced_tokens: int  # one stream at 1000 tokens/s: faster than one publish per token
    naive_streams: int
    naive_tokens: int
    limit_seconds: float
    limit_publishers: tuple[int, ...]
    # (publishers, events per call): the limit with bulk publishes, as the worker makes
    # under load; what a publisher of single events cannot reach.
    limit_bulk: tuple[tuple[int, int], ...] = ((4, 50),)


PROFILES = {
    "quick": Profile((1, 10, 100), 60, 2000, 100, 300, 3000, 100, 60, 4.0, (1, 8, 100)),
    "full": Profile((1, 10, 100, 500), 200, 10000, 100, 1000, 10000, 100, 100, 8.0, (1, 8, 100)),
    "smoke": Profile((1, 10), 20, 200, 10, 50, 500, 10, 20, 1.0, (1, 10)),  # checks the bench
}


# --------------------------------------------------------------------------- consumer


class Recorder:
    """The consumer app: stamps and keeps every event; counts terminal ones.

    Two ways to receive, as a downstream service would: `streaming` (the default) holds
    one streaming subscription per topic on its sidecar (what `worker.client` uses), and
    `callback` is an app-callback gRPC server that the sidecar calls once per event.
    The consumer shares the machine with what it measures, so the lighter one is the
    default: a unary call per event costs this Python process about twice the CPU.
    """

    def __init__(self, topics: Sequence[str], mode: str = "streaming") -> None:
        self.topics = topics
        self.mode = mode
        self.events: list[tuple[float, str, bytes]] = []
        self.terminal = 0
        self.limit_events = 0
        self.last_limit_at = 0.0
        self.limit_samples: list[tuple[float, bytes]] = []
        self._server: AppServer | None = None
        self._calls: list[Any] = []
        self._readers: list[asyncio.Task[None]] = []

    def record(self, now: float, kind: str, data: bytes) -> None:
        if kind == LIMIT_TYPE:  # the limit reference: only counted
            self.limit_events += 1
            self.last_limit_at = now
            if self.limit_events % 10 == 1:  # every tenth, for the latency floor
                self.limit_samples.append((now, data))
        else:
            self.events.append((now, kind, data))
            # The naive app's last event: {"kind": "completed", ...}, reserialized by daprd.
            if kind in TERMINAL_TYPES or b'"completed"' in data[:24]:
                self.terminal += 1

    async def _delivered(self, message: InboundMessage) -> Outcome:
        self.record(time.monotonic(), message.type, message.data)
        return Outcome.SUCCESS

    async def subscribe(self, stub: dapr_pb2_grpc.DaprStub) -> None:
        """In `streaming` mode: one subscription per topic, live once this returns."""
        if self.mode != "streaming":
            return
        for topic in self.topics:
            call = stub.SubscribeTopicEventsAlpha1()
            await call.write(
                pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
                    initial_request=pubsub_pb2.SubscribeTopicEventsRequestInitialAlpha1(
                        pubsub_name="pubsub", topic=topic
                    )
                )
            )
            first = await call.read()
            if first is grpc.aio.EOF or not first.HasField("initial_response"):
                raise RuntimeError(f"streaming subscription to {topic} not confirmed")
            self._calls.append(call)
            self._readers.append(asyncio.create_task(self._read(call)))

    async def _read(self, call: Any) -> None:
        success = appcallback_pb2.TopicEventResponse(status=Status.SUCCESS)
        while (response := await call.read()) is not grpc.aio.EOF:
            event = response.event_message
            self.record(time.monotonic(), event.type, event.data)
            await call.write(
                pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
                    event_processed=pubsub_pb2.SubscribeTopicEventsRequestProcessedAlpha1(
                        id=event.id, status=success
                    )
                )
            )

    async def start(self) -> int:
        """The worker's own app-callback server, on a free port (its sidecar waits for
        one); it subscribes to the topics in `callback` mode only."""
        port = free_port()
        callback = self.mode == "callback"
        self._server = AppServer(
            host="127.0.0.1",
            port=port,
            subscriptions=[Subscription("pubsub", topic) for topic in self.topics if callback],
            handler=self._delivered,
        )
        await self._server.start()
        return port

    async def stop(self) -> None:
        for call in self._calls:
            call.cancel()
        for reader in self._readers:
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader
        if self._server is not None:
            await self._server.stop(grace=None)

    def reset(self) -> None:
        self.events = []
        self.terminal = 0


# --------------------------------------------------------------------------- processes

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
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------- figures


def pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Scenario:
    name: str
    app: str  # worker | naive
    streams: int
    tokens_per_stream: int
    token_interval: float
    tokens_emitted: int = 0
    tokens_received: int = 0
    events: int = 0
    chunks: int = 0
    completed: int = 0
    seconds: float = 0.0
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    latency_ms_max: float | None = None
    ttfc_overhead_ms_p50: float | None = None
    ttfc_overhead_ms_p99: float | None = None
    events_per_s: float = 0.0
    # Chunks per second between a stream's first and last chunk, summed over streams
    # running at once: the publish rate while tokens are waiting.
    streaming_chunks_per_s: float = 0.0
    tokens_per_s: float = 0.0
    tokens_per_chunk_mean: float = 0.0
    tokens_per_chunk_max: int = 0
    cpu_s_per_1000_tokens: float | None = None
    sidecar_cpu_s_per_1000_tokens: float | None = None
    rss_mb_baseline: float | None = None
    rss_mb_peak: float | None = None
    rss_kb_per_stream: float | None = None
    idle_cpu_percent: float | None = None  # the worker with nothing in flight, over 2 s
    # CPUs' worth of work by processes outside this benchmark during the scenario (other
    # jobs on a shared machine), and the benchmark's own processes, averaged.
    foreign_cpus: float | None = None
    # The worker's CPU seconds over the scenario by thread name (asyncio loop: "python").
    worker_threads_cpu: dict[str, float] = field(default_factory=dict)
    bench_cpus: float | None = None
    # First to last token written by the fake LLM: longer than tokens x interval when
    # the machine cannot keep up with the offered load.
    source_seconds: float = 0.0
    # Prompt published -> the worker's `started` event at the consumer: how long a
    # delivery took to be accepted and admitted (the last one: all of them in flight).
    started_ms_p50: float | None = None
    started_ms_max: float | None = None
    # From the worker's own metrics: a chunk's publish until its daprd acknowledged it
    # (bucket upper bounds), i.e. the worker's side of the bus only.
    publish_ack_ms_p50: float | None = None
    publish_ack_ms_p99: float | None = None
    # Events per publish call to the sidecar (above 1: bulk publishes merged them).
    events_per_publish_call: float | None = None
    # CPUs' worth of work per process of the benchmark over the scenario (CPU seconds /
    # wall seconds): where the machine's two CPUs went.
    cpus_by_process: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def analyse(
    scenario: Scenario,
    events: list[tuple[float, str, bytes]],
    emitted: list[tuple[str, float]],
    published: dict[str, float],
    first_token_delay: float,
) -> None:
    emitted_at = {token.strip(): at for token, at in emitted}
    latencies: list[float] = []
    first_chunk: dict[str, float] = {}
    last_chunk: dict[str, float] = {}
    started: dict[str, float] = {}
    per_chunk: list[int] = []
    received_tokens: set[str] = set()
    last_arrival = 0.0
    for arrival, kind, raw in events:
        data = json.loads(raw)
        request_id = data.get("request_id")
        if request_id not in published:
            continue
        scenario.events += 1
        last_arrival = max(last_arrival, arrival)
        is_chunk = kind == CHUNK or data.get("kind") == "chunk"
        if kind == STARTED:
            started[request_id] = arrival
        if kind in TERMINAL_TYPES or data.get("kind") == "completed":
            scenario.completed += 1
        if not is_chunk:
            continue
        tokens = str(data.get("text", "")).split()
        if not tokens:
            continue
        scenario.chunks += 1
        per_chunk.append(len(tokens))
        received_tokens.update(tokens)
        first_chunk.setdefault(request_id, arrival)
        last_chunk[request_id] = arrival
        emitted_last = emitted_at.get(tokens[-1])
        if emitted_last is not None:
            latencies.append((arrival - emitted_last) * 1000)
    scenario.tokens_emitted = sum(1 for token, _ in emitted if not token.startswith("twarm"))
    scenario.tokens_received = len(received_tokens)
    if emitted:
        scenario.source_seconds = max(at for _, at in emitted) - min(at for _, at in emitted)
    start = min(published.values())
    scenario.seconds = max(last_arrival - start, 1e-9)
    scenario.events_per_s = scenario.events / scenario.seconds
    scenario.tokens_per_s = scenario.tokens_received / scenario.seconds
    scenario.latency_ms_p50 = pct(latencies, 0.50)
    scenario.latency_ms_p99 = pct(latencies, 0.99)
    scenario.latency_ms_max = max(latencies) if latencies else None
    overheads = [(first_chunk[r] - published[r] - first_token_delay) * 1000 for r in first_chunk]
    scenario.ttfc_overhead_ms_p50 = pct(overheads, 0.50)
    scenario.ttfc_overhead_ms_p99 = pct(overheads, 0.99)
    lags = [(started[r] - published[r]) * 1000 for r in started]
    scenario.started_ms_p50 = pct(lags, 0.5)
    scenario.started_ms_max = max(lags) if lags else None
    if first_chunk:
        window = max(last_chunk.values()) - min(first_chunk.values())
        scenario.streaming_chunks_per_s = (scenario.chunks - len(first_chunk)) / max(window, 1e-9)
    if per_chunk:
        scenario.tokens_per_chunk_mean = sum(per_chunk) / len(per_chunk)
        scenario.tokens_per_chunk_max = max(per_chunk)
    if scenario.tokens_received < scenario.tokens_emitted:
        scenario.notes.append(
            f"{scenario.tokens_emitted - scenario.tokens_received} emitted tokens never arrived"
        )
    if scenario.completed < scenario.streams:
        scenario.notes.append(f"only {scenario.completed} of {scenario.streams} completed")


# --------------------------------------------------------------------------- the run


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
                command=worker_command(profile_to),
            )
        )
        if self.worker_sidecar is None:
            self.worker_sidecar = await asyncio.to_thread(
                self.launcher.start,
                app_id="llm-stream-worker",
                components=[pubsub_component(self.broker), redis_state()],
                app_port=self.worker_app_port,
                grpc_port=self.worker_grpc_port,
                configuration=tracing_configuration(SAMPLING_RATE),
            )
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

    async def limit_reference(
        self, publishers: int, seconds: float, batch: int = 1, interval: float = 0.0
    ) -> dict[str, Any]:
        """Structured CloudEvents pushed through the worker's daprd as fast as it takes them,
        one per call (`batch` 1) or `batch` per bulk publish; or, with `interval`, each
        publisher paced to one event per interval (the bus alone at a worker's load)."""
        print(
            f"bench: limit x{publishers} (batch {batch}, interval {interval}) ...",
            file=sys.stderr,
            flush=True,
        )
        assert self.worker_sidecar is not None
        self.recorder.limit_events = 0
        self.recorder.limit_samples = []
        address = self.worker_sidecar.grpc_address
        meter = CpuMeter(self.bus_pids())
        began = start = time.monotonic()
        pacer_cpu: float | None = None
        if interval:
            paced = await self._paced(address, publishers, interval, seconds)
            accepted, start, elapsed, pacer_cpu = paced
        else:
            accepted = await self._flat_out(address, publishers, seconds, batch)
            elapsed = time.monotonic() - start
        wait_deadline = time.monotonic() + 60
        while self.recorder.limit_events < accepted and time.monotonic() < wait_deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        delivered_seconds = max(self.recorder.last_limit_at - start, 1e-9)
        busy_seconds = max(time.monotonic() - began, 1e-9)
        floor = [(at - json.loads(raw)["t"]) * 1000 for at, raw in self.recorder.limit_samples]
        used = meter.seconds()
        if pacer_cpu is not None:
            used["pacer"] = pacer_cpu
        cpus = per_second(used, busy_seconds)
        return {
            "latency_ms_p50": pct(floor, 0.5),
            "latency_ms_p99": pct(floor, 0.99),
            "publishers": publishers,
            "batch": batch,
            "interval": interval,
            "seconds": round(elapsed, 2),
            "published": accepted,
            "accepted_per_s": accepted / elapsed,
            "delivered": self.recorder.limit_events,
            "delivered_per_s": self.recorder.limit_events / delivered_seconds,
            "cpus_by_process": cpus,
        }

    async def _flat_out(self, address: str, publishers: int, seconds: float, batch: int) -> int:
        """Publishers on this event loop, each as fast as the sidecar acknowledges."""
        accepted = 0
        payload = {"context_id": "ctx", "request_id": "r", "seq": 1, "text": "t0-0 t0-1 "}
        body: dict[str, Any] = {
            "specversion": "1.0",
            "type": LIMIT_TYPE,
            "source": "/bench",
            "subject": "ctx",
            "datacontenttype": "application/json",
            "data": payload,
        }
        deadline = time.monotonic() + seconds

        async def publisher(stub: dapr_pb2_grpc.DaprStub, index: int) -> None:
            nonlocal accepted
            n = 0
            metadata = {"partitionKey": f"ctx-{index}"}
            while time.monotonic() < deadline:
                events: list[bytes] = []
                for _ in range(batch):
                    n += 1
                    event: dict[str, Any] = {**body, "id": f"limit-{index}-{n}"}
                    event["data"] = {**payload, "t": time.monotonic()}
                    events.append(json.dumps(event).encode())
                if batch == 1:
                    await stub.PublishEvent(
                        pubsub_pb2.PublishEventRequest(
                            pubsub_name="pubsub",
                            topic="responses",
                            data=events[0],
                            data_content_type="application/cloudevents+json",
                            metadata=metadata,
                        )
                    )
                else:
                    response = await stub.BulkPublishEvent(
                        pubsub_pb2.BulkPublishRequest(
                            pubsub_name="pubsub",
                            topic="responses",
                            entries=[
                                pubsub_pb2.BulkPublishRequestEntry(
                                    entry_id=str(k),
                                    event=data,
                                    content_type="application/cloudevents+json",
                                    metadata=metadata,
                                )
                                for k, data in enumerate(events)
                            ],
                        )
                    )
                    if response.failedEntries:
                        raise RuntimeError(f"limit: {len(response.failedEntries)} refused")
                accepted += batch

        async with grpc.aio.insecure_channel(address) as channel:
            stub = dapr_pb2_grpc.DaprStub(channel)
            await asyncio.gather(*(publisher(stub, i) for i in range(publishers)))
        return accepted

    async def _paced(
        self, address: str, publishers: int, interval: float, seconds: float
    ) -> tuple[int, float, float, float]:
        """`bench/pacer.py` in its own process: events published, when it began, over
        how many seconds, and its CPU seconds."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bench.pacer", address),
            *(str(publishers), str(interval), str(seconds)),
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        out, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"bench.pacer failed with exit code {process.returncode}")
        # Children reaped meanwhile: only the pacer (the worker runs on).
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        report = json.loads(out)
        return int(report["published"]), report["start"], report["seconds"], cpu

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


def pubsub_component(broker: Broker) -> ComponentSpec:
    """The pub/sub every sidecar of the bench uses, tuned as deployed."""
    return broker.pubsub(**(PUBSUB if broker.name == "redis" else {}))


async def run(
    profile_name: str,
    profile: Profile,
    profile_dir: Path | None,
    only: frozenset[str],
    consumer: str = "streaming",
    broker_name: str = "redis",
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    launcher = ProcessLauncher(workdir / "dapr")
    kafka: KafkaServer | None = None
    broker: Broker = RedisBroker()
    if broker_name == "kafka":
        kafka = await asyncio.to_thread(start_kafka, workdir / "kafka", partitions=KAFKA_PARTITIONS)
        broker = KafkaBroker(kafka)
    recorder = Recorder(["responses"], consumer)
    bench: Bench | None = None
    results: dict[str, Any] = {
        "profile": profile_name,
        "consumer": consumer,
        "broker": broker_name,
        "scenarios": [],
        "limit": [],
    }
    started = time.monotonic()
    try:
        consumer_port = await recorder.start()
        consumer_sidecar = await asyncio.to_thread(
            launcher.start,
            app_id="consumer",
            components=[pubsub_component(broker)],
            app_port=consumer_port,
            configuration=tracing_configuration(SAMPLING_RATE),
        )
        bench = Bench(
            workdir, launcher, recorder, consumer_sidecar, broker, profile_dir=profile_dir
        )
        await recorder.subscribe(bench.stub())
        scenarios = results["scenarios"]
        plan: list[tuple[str, int, int, float]] = [
            (f"worker-{n}x20", n, profile.tokens, 0.05) for n in profile.concurrency
        ]
        plan += [
            ("worker-1xfast", 1, profile.fast_tokens, 0.0),
            ("worker-1x1000", 1, profile.paced_tokens, 0.001),
            (
                f"worker-{profile.fast_streams}xfast",
                profile.fast_streams,
                profile.fast_streams_tokens,
                0.0,
            ),
        ]
        # Ad-hoc scenarios by name, e.g. --only worker-500x1t5: 500 streams, 1 tok/s, 5 tokens.
        for name in sorted(only):
            match = re.fullmatch(r"worker-(\d+)x(\d+)t(\d+)", name)
            if match:
                plan.append((name, int(match[1]), int(match[3]), 1 / int(match[2])))
        for name, streams, tokens, interval in plan:
            if only and name not in only:
                continue
            scenario = await bench.worker_scenario(name, streams, tokens, interval)
            scenarios.append(asdict(scenario))
            print(json.dumps(asdict(scenario)), file=sys.stderr, flush=True)
        if not only or "limit" in only:
            for publishers in profile.limit_publishers:
                limit = await bench.limit_reference(publishers, profile.limit_seconds)
                results["limit"].append(limit)
                print(json.dumps(limit), file=sys.stderr, flush=True)
            for publishers, batch in profile.limit_bulk:
                limit = await bench.limit_reference(publishers, profile.limit_seconds, batch)
                results["limit"].append(limit)
                print(json.dumps(limit), file=sys.stderr, flush=True)
            # The bus alone carrying the 100-stream load: 100 publishers at 20 events/s,
            # batched as the worker batches: what is left of added latency without the
            # LLM stream, its reading and the worker's per-turn work.
            limit = await bench.limit_reference(100, profile.limit_seconds, 1, 0.05)
            results["limit"].append(limit)
            print(json.dumps(limit), file=sys.stderr, flush=True)
        if bench.worker is not None:
            await asyncio.to_thread(stop_process, bench.worker.process)
            bench.worker = None
        if not only or "naive" in only:
            naive = await bench.naive_scenario(profile.naive_streams, profile.naive_tokens, 0.05)
            scenarios.append(asdict(naive))
            print(json.dumps(asdict(naive)), file=sys.stderr, flush=True)
    finally:
        if bench is not None:
            if bench.worker is not None:
                await asyncio.to_thread(stop_process, bench.worker.process)
            if bench.channel is not None:
                await bench.channel.close()
        await recorder.stop()
        await asyncio.to_thread(launcher.close)
        if kafka is not None:
            await asyncio.to_thread(kafka.stop)
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    results["workdir"] = str(workdir)
    return results


# --------------------------------------------------------------------------- report


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    free = subprocess.run(["free", "-h"], capture_output=True, text=True, check=False).stdout
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "free_h": free.rstrip(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "daprd": os.environ.get("DAPRD", ""),
    }


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def scenario_table(scenarios: list[dict[str, Any]]) -> str:
    latency = [
        "| scenario | streams | tokens received / emitted (source span) "
        "| added latency p50 / p99 / max (ms) "
        "| worker publish -> ack p50 / p99 (ms, bucket bound) "
        "| TTFC overhead p50 / p99 (ms) | publish -> started p50 / max (ms) |",
        "| --- | ---: | --- | --- | --- | --- | --- |",
    ]
    load = [
        "| scenario | events/s | chunks/s streaming | tokens/s | tokens/chunk mean / max "
        "| events per publish call "
        "| CPU s / 1000 tok: app / its daprd (app idle) "
        "| RSS base / peak (MB) | RSS / stream (KB) | CPUs busy: bench / other jobs |",
        "| --- | ---: | ---: | ---: | --- | ---: | --- | --- | ---: | --- |",
    ]
    for s in scenarios:
        latency.append(
            f"| {s['name']} | {s['streams']} | {s['tokens_received']}/{s['tokens_emitted']} "
            f"({s.get('source_seconds', 0):.1f} s) "
            f"| {fmt(s['latency_ms_p50'], 2)} / {fmt(s['latency_ms_p99'], 2)} / "
            f"{fmt(s['latency_ms_max'], 1)} "
            f"| {fmt(s.get('publish_ack_ms_p50'))} / {fmt(s.get('publish_ack_ms_p99'))} "
            f"| {fmt(s['ttfc_overhead_ms_p50'])} / {fmt(s['ttfc_overhead_ms_p99'])} "
            f"| {fmt(s.get('started_ms_p50'))} / {fmt(s.get('started_ms_max'))} |"
        )
        load.append(
            f"| {s['name']} | {s['events_per_s']:.0f} | {s['streaming_chunks_per_s']:.0f} "
            f"| {s['tokens_per_s']:.0f} "
            f"| {s['tokens_per_chunk_mean']:.2f} / {s['tokens_per_chunk_max']} "
            f"| {fmt(s.get('events_per_publish_call'), 2)} "
            f"| {fmt(s['cpu_s_per_1000_tokens'], 3)} / "
            f"{fmt(s['sidecar_cpu_s_per_1000_tokens'], 3)} "
            f"({fmt(s.get('idle_cpu_percent'))} %) "
            f"| {fmt(s['rss_mb_baseline'])} / {fmt(s['rss_mb_peak'])} "
            f"| {fmt(s['rss_kb_per_stream'])} "
            f"| {fmt(s.get('bench_cpus'), 2)} / {fmt(s.get('foreign_cpus'), 2)} |"
        )
    roles = list(dict.fromkeys(r for s in scenarios for r in s.get("cpus_by_process", {})))
    cpu = [
        "| scenario | " + " | ".join(roles) + " |",
        "| --- |" + " ---: |" * len(roles),
    ]
    for s in scenarios:
        by = s.get("cpus_by_process", {})
        if by:
            cpu.append(f"| {s['name']} | " + " | ".join(fmt(by.get(r), 2) for r in roles) + " |")
    notes = [f"- {s['name']}: {'; '.join(s['notes'])}" for s in scenarios if s["notes"]]
    text = "\n".join(latency) + "\n\n" + "\n".join(load) + "\n"
    if len(cpu) > 2:
        text += "\nCPUs busy by process (CPU seconds per second of the scenario):\n\n"
        text += "\n".join(cpu) + "\n"
    if notes:
        text += "\nNotes:\n\n" + "\n".join(notes) + "\n"
    return text


def limit_table(limits: list[dict[str, Any]]) -> str:
    rows = [
        "| concurrent publishers | events per call (pace) | published | accepted/s "
        "| delivered to consumer/s | publish -> consumer latency p50 / p99 (ms) "
        "| CPUs busy: bench (consumer, and flat-out publishers) / worker's daprd "
        "/ consumer's daprd / redis / pacer |",
        "| ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    roles = (
        "consumer + publisher (bench)",
        "worker's daprd",
        "consumer's daprd",
        "redis",
        "pacer",
    )
    for limit in limits:
        by = limit.get("cpus_by_process", {})
        cpus = " / ".join(fmt(by.get(role), 2) for role in roles) if by else "-"
        paced = bool(limit.get("interval"))
        rows.append(
            f"| {limit['publishers']} | {limit.get('batch', 1)}"
            + (" (20/s each, own process, batched as the worker does)" if paced else "")
            + f" | {limit['published']} "
            f"| {limit['accepted_per_s']:.0f} "
            f"| {limit['delivered_per_s']:.0f} "
            f"| {fmt(limit['latency_ms_p50'], 2)} / {fmt(limit['latency_ms_p99'], 2)} "
            f"| {cpus} |"
        )
    return "\n".join(rows)


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    by_name = {s["name"]: s for s in results["scenarios"]}
    verdicts: list[tuple[str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "MISSED")

    w100 = by_name.get("worker-100x20")
    paced = next((limit for limit in results["limit"] if limit.get("interval")), None)
    if w100:
        p50, p99 = w100["latency_ms_p50"], w100["latency_ms_p99"]
        bus50 = bus99 = ""
        if paced:
            bus50 = f" (the bus alone at this load: {fmt(paced['latency_ms_p50'], 2)} ms)"
            bus99 = f" (the bus alone at this load: {fmt(paced['latency_ms_p99'], 2)} ms)"
        verdicts.append(
            (
                "added latency p50 <= 2 ms at 100 streams",
                f"{fmt(p50, 2)} ms{bus50}",
                verdict(p50 <= 2),
            )
        )
        verdicts.append(
            (
                "added latency p99 <= 10 ms at 100 streams",
                f"{fmt(p99, 2)} ms{bus99}",
                verdict(p99 <= 10),
            )
        )
    paced = by_name.get("worker-1x1000")
    flat_out = [limit for limit in results["limit"] if not limit.get("interval")]
    limits = {limit["publishers"]: limit for limit in flat_out if limit.get("batch", 1) == 1}
    if paced and 1 in limits:
        rate = paced["streaming_chunks_per_s"]
        ratio = rate / limits[1]["accepted_per_s"]
        verdicts.append(
            (
                "events/s >= 80% of the limit, one stream: chunks/s of one stream fed "
                "1000 tok/s vs one serial publisher",
                f"{rate:.0f} vs {limits[1]['accepted_per_s']:.0f} = {ratio:.0%}",
                verdict(ratio >= 0.8),
            )
        )
    workers = [s for s in results["scenarios"] if s["app"] == "worker" and s["streams"] > 1]
    if workers and flat_out:
        # Both counted where they arrive, at the consumer: what the bus sustains. (An
        # accepted rate above it only fills the Redis stream.)
        best = max(workers, key=lambda s: s["events_per_s"])
        top = max(flat_out, key=lambda limit: limit["delivered_per_s"])
        ratio = best["events_per_s"] / top["delivered_per_s"]
        verdicts.append(
            (
                "events/s >= 80% of the limit, many streams: best worker scenario vs the "
                "best limit, both delivered to the consumer (the limit's accepted rate in "
                "brackets)",
                f"{best['events_per_s']:.0f} ({best['name']}) vs {top['delivered_per_s']:.0f} "
                f"({top['accepted_per_s']:.0f}) with {top['publishers']} publishers x "
                f"{top.get('batch', 1)} events per call = {ratio:.0%}",
                verdict(ratio >= 0.8),
            )
        )
    naive = next((s for s in results["scenarios"] if s["app"] == "naive"), None)
    if w100 and naive:
        ratio = w100["tokens_per_s"] / max(naive["tokens_per_s"], 1e-9)
        verdicts.append(
            (
                ">= 5x naive tokens/s at 100 streams",
                f"{w100['tokens_per_s']:.0f} vs {naive['tokens_per_s']:.0f} = {ratio:.1f}x",
                verdict(ratio >= 5),
            )
        )
    w500 = by_name.get("worker-500x20")
    if w500:
        ok = w500["latency_ms_p99"] is not None and w500["latency_ms_p99"] < 100
        complete = w500["tokens_received"] == w500["tokens_emitted"] and w500["completed"] == 500
        verdicts.append(
            (
                "500 streams at 20 tok/s, p99 < 100 ms",
                f"p99 {fmt(w500['latency_ms_p99'], 1)} ms, "
                f"{w500['tokens_per_s']:.0f} tok/s (offered {500 * 20}), "
                f"{w500['completed']}/500 completed",
                verdict(ok and complete),
            )
        )
        verdicts.append(
            (
                "RSS < 150 MB at 500 streams",
                f"peak {fmt(w500['rss_mb_peak'])} MB",
                verdict(w500["rss_mb_peak"] < 150),
            )
        )
    else:
        verdicts.append(("500 streams at 20 tok/s, p99 < 100 ms", "full profile only", "-"))
        verdicts.append(("RSS < 150 MB at 500 streams", "full profile only", "-"))
    return verdicts


def render(results: dict[str, Any], command: str) -> str:
    m = results["machine"]
    shown = f"`{command}`"
    if command.endswith(("--profile quick", "--profile full")):
        target = "bench" if command.endswith("quick") else "bench-full"
        shown = f"`make {target}` (`{command}`)"
    rows = ["| target | measured | verdict |", "| --- | --- | --- |"]
    rows += [f"| {a} | {b} | {c} |" for a, b, c in targets(results)]
    return f"""### Profile `{results["profile"]}`

Command: {shown}, wall time {results["wall_seconds"]:.0f} s.

Machine: {m["nproc"]} CPUs ({m["cpu"]}), Python {m["python"]}, kernel {m["kernel"]}.
Everything (Redis, two daprd, the worker, the fake LLM, the consumer) shares these CPUs.

```
{m["free_h"]}
```

Streams (worker rows: `python -m worker`; naive row: `bench/naive_app.py`):

{scenario_table(results["scenarios"])}

The limit (structured CloudEvents published to the worker's daprd as fast as it
accepts them, same Redis, delivered to the same consumer):

{limit_table(results["limit"])}

Targets:

{chr(10).join(rows)}
"""


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [
        s
        for s in results["scenarios"]
        if s["app"] == "worker" and s["token_interval"] == 0.05 and s["latency_ms_p50"] is not None
    ]
    if not rows:
        return False
    xs = [s["streams"] for s in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [s["latency_ms_p50"] for s in rows], "o-", label="p50")
    ax.plot(xs, [s["latency_ms_p99"] for s in rows], "s-", label="p99")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent streams (20 tokens/s each)")
    ax.set_ylabel("added latency per token (ms)")
    ax.set_title(f"worker added latency ({results['profile']} profile)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument(
        "--pyinstrument",
        action="store_true",
        help="run the worker under pyinstrument; text profiles go to bench/results/ "
        "(more pyinstrument flags in $BENCH_PYINSTRUMENT_ARGS, e.g. --show-all)",
    )
    parser.add_argument(
        "--consumer",
        choices=("streaming", "callback"),
        default="streaming",
        help="how the consumer receives: a streaming subscription (default) or an "
        "app-callback server called once per event",
    )
    parser.add_argument(
        "--broker",
        choices=("redis", "kafka"),
        default="redis",
        help="the pub/sub under every sidecar: Redis Streams, or a local Kafka broker "
        f"(KRaft, {KAFKA_PARTITIONS} partitions a topic; the worker takes prompts in bulk)",
    )
    parser.add_argument("--no-report", action="store_true", help="do not write BENCHMARKS.md")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only rebuild BENCHMARKS.md from bench/results/*.json",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated scenario names (e.g. worker-100x20,limit,naive, or ad hoc "
        "worker-<streams>x<tok/s>t<tokens>); default all",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="where the JSON results go (default bench/results/; BENCHMARKS.md is only "
        "rewritten from there)",
    )
    args = parser.parse_args()
    if args.report_only:
        write_report()
        return
    out: Path = args.results
    out.mkdir(parents=True, exist_ok=True)
    profile_dir = out if args.pyinstrument else None
    only = frozenset(filter(None, args.only.split(",")))
    results = asyncio.run(
        run(args.profile, PROFILES[args.profile], profile_dir, only, args.consumer, args.broker)
    )
    results["machine"] = machine()
    command = "python -m bench.bench " + " ".join(sys.argv[1:])
    results["command"] = command
    suffix = (
        ("-pyinstrument" if args.pyinstrument else "")
        + ("" if args.consumer == "streaming" else f"-{args.consumer}")
        + ("" if args.broker == "redis" else f"-{args.broker}")
        + ("-partial" if only else "")
    )
    (out / f"{args.profile}{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")
    main_run = not args.pyinstrument and not only and not suffix and out == RESULTS
    if main_run and plot(results, RESULTS / f"latency-{args.profile}.png"):
        results["plot"] = f"bench/results/latency-{args.profile}.png"
    text = render(results, command)
    print(text)
    if not args.no_report and main_run and args.profile != "smoke":
        (RESULTS / f"{args.profile}.md").write_text(text)
        write_report()


MARKER = "<!-- Written by hand below this line; bench/bench.py keeps it. -->"

PREAMBLE = """# Benchmarks

How fast the worker streams, measured end to end against a real daprd (1.18.3, built by
`scripts/daprd.sh`) and a real Redis, by `bench/bench.py`:

    make bench        # quick profile (about 2 minutes)
    make bench-full   # adds 500 streams and longer streams (about 5 minutes)

Set-up per run: Redis; the worker's daprd (Redis pub/sub with `concurrency`/`queueDepth`
512 and `processingTimeout` 300000 ms as in `components/redis/pubsub.yaml`, Redis state store,
tracing sampled as in `components/config/sidecar.yaml`); `python -m worker` with its
OpenAI-compatible backend pointed at `tests/fakes/openai_server.py` (own process,
first token after 100 ms); a consumer (Python grpc.aio, in the bench process) with its
own daprd, holding a streaming subscription to the response topic (`--consumer callback`:
an app-callback server instead, called once per event, as before). Each
scenario restarts the worker against a fresh fake server, warms it with one prompt,
then publishes all its prompts at once (`history: false`, one context each).

Definitions:

- *added latency per token*: arrival of a chunk at the consumer minus the moment the
  fake LLM wrote the last token that chunk carries (`time.monotonic()`, one clock).
  It includes the whole bus: worker, its daprd, Redis, the consumer's daprd and the
  consumer; the limit table's *publish -> consumer latency* is that bus alone.
- *TTFC overhead*: first chunk at the consumer minus the prompt's publish, minus the
  fake LLM's 100 ms first-token delay.
- *events/s*, *tokens/s*: all events (started, chunks, usage, completed) and distinct
  tokens received, over publish of the first prompt to arrival of the last event.
  *chunks/s streaming*: chunks over first to last chunk.
- *CPU s / 1000 tok*: utime+stime of the worker process (and of its daprd) over the
  scenario, per 1000 tokens. *RSS*: VmRSS of the worker, sampled every 50 ms; per
  stream = (peak - baseline) / streams.
- *worker publish -> ack*: the worker's own `llm_stream_publish_latency_seconds` histogram
  for chunk events (scraped from its metrics endpoint before and after), as the upper
  bound of the bucket holding p50 / p99: its side of the bus only.
- *publish -> started*: prompt published until the worker's `started` event reached the
  consumer (delivery taken up and admitted); the max is when the last stream got going.
- *source span*: first to last token written by the fake LLM.
- *CPUs busy*: CPU seconds per second of this benchmark's processes, and of everything
  else on the machine (other jobs), over the scenario.
- *the limit*: structured CloudEvents published to the worker's daprd by N concurrent
  grpc.aio publishers (no worker involved), as fast as it acknowledges them: one event
  per call, or 50 per bulk publish (what the worker does under load).
- *CPUs busy by process*: CPU seconds of each process over the scenario's wall time.
- *naive*: `bench/naive_app.py`, the obvious handler: SDK `App` (10 threads),
  `requests` to the SSE endpoint, one `DaprClient.publish_event` per token.
"""


def comparison(name: str) -> str:
    """Before the bulk-publish change (bench/results/before/) against now, per scenario."""
    runs: list[tuple[str, dict[str, dict[str, Any]]]] = []
    for label, path in (
        ("before, callback consumer", RESULTS / "before" / f"{name}.json"),
        ("now, callback consumer", RESULTS / f"{name}-callback.json"),
        ("now, streaming consumer", RESULTS / f"{name}.json"),
    ):
        if path.exists():
            scenarios = json.loads(path.read_text())["scenarios"]
            runs.append((label, {s["name"]: s for s in scenarios}))
    if len(runs) < 2:
        return ""
    names = list(dict.fromkeys(n for _, by in runs for n in by))
    header = "| scenario | figure | " + " | ".join(label for label, _ in runs) + " |"
    rows = [header, "| --- | --- |" + " ---: |" * len(runs)]
    figures: list[tuple[str, Any]] = [
        (
            "added latency p50 / p99 (ms)",
            lambda s: f"{fmt(s['latency_ms_p50'], 1)} / {fmt(s['latency_ms_p99'], 1)}",
        ),
        ("events/s", lambda s: f"{s['events_per_s']:.0f}"),
        ("tokens/s", lambda s: f"{s['tokens_per_s']:.0f}"),
        ("TTFC overhead p50 (ms)", lambda s: fmt(s["ttfc_overhead_ms_p50"], 0)),
        ("worker CPU s / 1000 tok", lambda s: fmt(s["cpu_s_per_1000_tokens"], 3)),
        ("worker RSS peak (MB)", lambda s: fmt(s["rss_mb_peak"], 1)),
    ]
    for scenario in names:
        for figure, show in figures:
            cells = [show(by[scenario]) if scenario in by else "-" for _, by in runs]
            rows.append(f"| {scenario} | {figure} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def write_report() -> None:
    """BENCHMARKS.md from bench/results/{quick,full}.json, then the hand-written part."""
    sections = []
    for name in ("quick", "full"):
        path = RESULTS / f"{name}.json"
        if path.exists():
            results = json.loads(path.read_text())
            section = render(results, results["command"])
            (RESULTS / f"{name}.md").write_text(section)
            if plot(results, RESULTS / f"latency-{name}.png"):
                section += f"\n![added latency vs streams](bench/results/latency-{name}.png)\n"
            table = comparison(name)
            if table:
                section += (
                    f"\nBefore and after (profile `{name}`): the worker before bulk publishing "
                    "and its own event encoder (`bench/results/before/`), and now, with the "
                    "old app-callback consumer and with the streaming-subscription one:\n\n" + table
                )
            sections.append(section)
    kept = ""
    if REPORT.exists() and MARKER in REPORT.read_text():
        kept = REPORT.read_text().split(MARKER, 1)[1]
    REPORT.write_text(PREAMBLE + "\n## Results\n\n" + "\n".join(sections) + "\n" + MARKER + kept)


if __name__ == "__main__":
    main()
