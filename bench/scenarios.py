"""A whole run: the stack started once, then every scenario of a profile in turn."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.config import KAFKA_PARTITIONS, SAMPLING_RATE, Profile, pubsub_component
from bench.consumer import Recorder
from bench.limit import limit_reference
from bench.load import Bench
from bench.processes import stop_process
from testbed.brokers import Broker, KafkaBroker, RedisBroker
from testbed.components import tracing_configuration
from testbed.kafka import KafkaServer, start_kafka
from testbed.process import ProcessLauncher

__all__ = ["run"]


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
        # As k8s/overlays/kafka deploys it: three consumers a replica, prompts in bulk.
        broker = KafkaBroker.deployed(kafka)
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
                limit = await limit_reference(bench, publishers, profile.limit_seconds)
                results["limit"].append(limit)
                print(json.dumps(limit), file=sys.stderr, flush=True)
            for publishers, batch in profile.limit_bulk:
                limit = await limit_reference(bench, publishers, profile.limit_seconds, batch)
                results["limit"].append(limit)
                print(json.dumps(limit), file=sys.stderr, flush=True)
            # The bus alone carrying the 100-stream load: 100 publishers at 20 events/s,
            # batched as the worker batches: what is left of added latency without the
            # LLM stream, its reading and the worker's per-turn work.
            limit = await limit_reference(bench, 100, profile.limit_seconds, 1, 0.05)
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
