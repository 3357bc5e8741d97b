"""Concurrency on a broker: how many replies stream at once, and who waits behind whom.

Real daprd sidecars, the worker on its echo backend (`WORKER_ECHO__DELAY_SECONDS` a word),
and a consumer app recording when each reply's `started` and terminal event arrive,
on Redis Streams or on Apache Kafka (a fresh KRaft broker per scenario, `prompts` with
the scenario's partition count). Prompts are published at once, each with metadata
`partitionKey=<context_id>` as the client publishes them.

Scenarios:

- `hol`: the head-of-line case of issue 12: 1 partition, 6 prompts of 20 words at
  0.25 s a word (5 s each), 6 contexts, one replica.
- `target-1`, `target-3`: 3 partitions, 100 prompts of 20 words at 0.25 s a word over
  50 conversations (2 turns each, published in order), on 1 and on 3 replicas.
- `target-1-p64` (on request): `target-1` on 64 partitions.

`--consumers N` (Kafka): each replica runs N Kafka consumers, N pub/sub components in
the worker's consumer group (`WORKER_PROMPT_PUBSUBS`), so each holds fewer partitions.

    make bench-concurrency BROKER=kafka       # all scenarios, results in bench/results/
    .venv/bin/python -m bench.concurrency --broker kafka --only hol --label before
    .venv/bin/python -m bench.concurrency --broker kafka --only target-1 --consumers 3 \
        --label n3-bulk      # with BENCH_WORKER_BULK_SUBSCRIBE__ENABLED=true
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testbed.brokers import Broker, KafkaBroker, RedisBroker
from testbed.kafka import KafkaServer, start_kafka
from testbed.process import ProcessLauncher
from testbed.stack import Received, Stack, start_stack

__all__ = ["Scenario", "run_scenario"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TERMINAL = {"completed", "failed", "cancelled"}
WORD_SECONDS = 0.25


@dataclass(frozen=True)
class Scenario:
    name: str
    partitions: int
    prompts: int
    conversations: int
    words: int
    replicas: int = 1

    @property
    def one_prompt_seconds(self) -> float:
        return self.words * WORD_SECONDS

    @property
    def floor_seconds(self) -> float:
        """The least any design can take: a conversation's turns run one after another."""
        turns = -(-self.prompts // self.conversations)
        return turns * self.one_prompt_seconds


SCENARIOS = {
    "hol": Scenario("hol", partitions=1, prompts=6, conversations=6, words=20),
    "target-1": Scenario("target-1", partitions=3, prompts=100, conversations=50, words=20),
    "target-3": Scenario(
        "target-3", partitions=3, prompts=100, conversations=50, words=20, replicas=3
    ),
    # The same load on many partitions: Kafka's own answer to per-partition order.
    "target-1-p64": Scenario(
        "target-1-p64", partitions=64, prompts=100, conversations=50, words=20
    ),
}
DEFAULT = ("hol", "target-1", "target-3")


@dataclass
class Outcome:
    scenario: Scenario
    broker: str
    label: str
    consumers: int = 1
    # Per request id: seconds after the publish began when started / terminal arrived.
    started: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    terminal_kinds: dict[str, str] = field(default_factory=dict)
    all_done_seconds: float | None = None
    published_seconds: float | None = None

    def summary(self) -> dict[str, Any]:
        starts = sorted(self.started.values())
        done = self.all_done_seconds
        one = self.scenario.one_prompt_seconds
        return {
            "scenario": asdict(self.scenario),
            "broker": self.broker,
            "label": self.label,
            "kafka_consumers_per_replica": self.consumers if self.broker == "kafka" else None,
            "worker_tuning": {
                key.removeprefix("BENCH_"): value
                for key, value in os.environ.items()
                if key.startswith("BENCH_WORKER_")
            },
            "one_prompt_seconds": one,
            "floor_seconds": self.scenario.floor_seconds,
            "published_seconds": round(self.published_seconds or 0.0, 2),
            "all_done_seconds": round(done, 2) if done is not None else None,
            "all_done_over_one_prompt": round(done / one, 2) if done is not None else None,
            "all_done_over_floor": (
                round(done / self.scenario.floor_seconds, 2) if done is not None else None
            ),
            "completed": sum(kind == "completed" for kind in self.terminal_kinds.values()),
            "starts_seconds": [round(s, 2) for s in starts],
            "ends_seconds": sorted(round(e, 2) for e in self.ended.values()),
        }


def _words(n: int, tag: str) -> str:
    return " ".join(f"{tag}w{i}" for i in range(n))


async def _start_broker(
    broker: str, partitions: int, consumers: int, workdir: Path
) -> tuple[Broker, Any]:
    if broker == "redis":
        return RedisBroker(), None
    server = await asyncio.to_thread(start_kafka, workdir / "kafka", partitions=partitions)
    return KafkaBroker(server, consumers=consumers), server


async def run_scenario(
    scenario: Scenario, broker_name: str, label: str, consumers: int = 1
) -> Outcome:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{scenario.name}-"))
    launcher = ProcessLauncher(workdir / "dapr")
    started: list[Any] = []
    server: KafkaServer | None = None
    outcome = Outcome(scenario, broker_name, label, consumers)
    try:
        broker, server = await _start_broker(broker_name, scenario.partitions, consumers, workdir)
        stack = await start_stack(
            launcher.start,
            workdir / "stack",
            worker_env={
                "WORKER_ECHO__DELAY_SECONDS": str(WORD_SECONDS),
                # Tuning under test, e.g. BENCH_WORKER_BULK_SUBSCRIBE__MAX_AWAIT_MS=1000.
                **{
                    key.removeprefix("BENCH_"): value
                    for key, value in os.environ.items()
                    if key.startswith("BENCH_WORKER_")
                },
            },
            replicas=scenario.replicas,
            broker=broker,
            # Redis: deliveries the sidecar runs at once (its default 10 would cap it).
            pubsub_metadata={"redis": {"concurrency": "512", "queueDepth": "512"}},
            started=started,
        )
        await _warm_up(stack)
        await _measure(stack, scenario, outcome)
    finally:
        for thing in reversed(started):
            if hasattr(thing, "kill"):
                thing.kill()
            else:
                await thing.stop()
        await asyncio.to_thread(launcher.close)
        if server is not None:
            await asyncio.to_thread(server.stop)
    return outcome


async def _warm_up(stack: Stack) -> None:
    """One turn through the whole path, so the consumer groups have formed."""
    prompt = {"messages": [{"role": "user", "content": "warm"}], "context_id": "warm"}
    await stack.publish({**prompt, "request_id": "warm"}, metadata={"partitionKey": "warm"})
    await stack.turn("warm", timeout=120)
    stack.received.clear()


async def _measure(stack: Stack, scenario: Scenario, outcome: Outcome) -> None:
    # Conversation c's turns are c, c + conversations, ...: published in turn order.
    prompts = []
    for n in range(scenario.prompts):
        context = f"ctx-{n % scenario.conversations}"
        prompts.append(
            (
                {
                    "messages": [{"role": "user", "content": _words(scenario.words, f"p{n}")}],
                    "context_id": context,
                    "request_id": f"req-{n}",
                },
                context,
            )
        )
    began = time.monotonic()
    # "At once", yet each conversation's turn n before its turn n + 1: a round of
    # concurrent publishes per turn.
    rounds = [
        prompts[i : i + scenario.conversations]
        for i in range(0, len(prompts), scenario.conversations)
    ]
    for batch in rounds:
        await asyncio.gather(
            *(
                stack.publish(prompt, metadata={"partitionKey": context})
                for prompt, context in batch
            )
        )
    outcome.published_seconds = time.monotonic() - began
    deadline = began + max(600.0, scenario.prompts * scenario.one_prompt_seconds * 2)
    while len(outcome.ended) < scenario.prompts and time.monotonic() < deadline:
        try:
            request = await asyncio.wait_for(stack.consumer.received.get(), 5)
        except TimeoutError:
            continue
        at = time.monotonic() - began
        event = Received.of(request)
        request_id = event.data.get("request_id", "")
        if event.kind == "started":
            outcome.started.setdefault(request_id, at)
        elif event.kind in TERMINAL:
            outcome.ended.setdefault(request_id, at)
            outcome.terminal_kinds[request_id] = event.kind
    if len(outcome.ended) == scenario.prompts:
        outcome.all_done_seconds = max(outcome.ended.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", choices=("redis", "kafka"), default="redis")
    parser.add_argument("--only", default="", help="comma-separated: hol,target-1,target-3")
    parser.add_argument("--label", default="", help="added to the results file name")
    parser.add_argument(
        "--consumers", type=int, default=1, help="Kafka consumers per replica (components)"
    )
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(DEFAULT)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in names:
        scenario = SCENARIOS[name]
        print(f"bench.concurrency: {name} on {args.broker} ...", file=sys.stderr, flush=True)
        outcome = asyncio.run(run_scenario(scenario, args.broker, args.label, args.consumers))
        summary = outcome.summary()
        suffix = f"-{args.label}" if args.label else ""
        path = RESULTS / f"concurrency-{name}-{args.broker}{suffix}.json"
        path.write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps({k: v for k, v in summary.items() if k != "ends_seconds"}))


if __name__ == "__main__":
    main()
