"""A scenario's figures, computed from the events the consumer stamped."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.config import CHUNK, STARTED, TERMINAL_TYPES

__all__ = ["Scenario", "analyse", "pct"]


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
