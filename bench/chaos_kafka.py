"""Chaos on Kafka: prompts across contexts while workers are SIGKILLed, a whole replica is
lost and the broker restarts (`bench.chaos` is the fault matrix on Redis).

Everything is real: a local KRaft broker with 3 partitions, Redis for state, daprd (with
an inbound retry policy, as deployed) and two worker replicas taking prompts as
k8s/overlays/kafka deploys them (three Kafka consumers a replica, prompts in bulk;
`--consumers 1 --one-at-a-time` for Dapr's defaults). Workers are SIGKILLed at random
and restarted; halfway
through one replica dies whole (worker and daprd, not restarted: its partitions move to
the other once Kafka notices, after the component's sessionTimeout), and the Kafka broker
itself is restarted. Afterwards every request's events, as a downstream consumer
received them, are checked against the contract, and the figures are written to the
Kafka section of RELIABILITY.md.

    make chaos BROKER=kafka                       # 200 prompts, 20 kills
    .venv/bin/python -m bench.chaos_kafka --prompts 400 --kills 40 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.verdict import Verdict, collect, judge, load, worker_logs
from testbed.apps import RecordingApp
from testbed.brokers import Broker, KafkaBroker, RedisBroker
from testbed.components import inbound_retries
from testbed.kafka import KafkaServer, start_kafka
from testbed.process import ProcessLauncher
from testbed.stack import start_stack

TERMINAL = {"completed", "failed", "cancelled"}
REPORT = Path(__file__).resolve().parents[1] / "RELIABILITY.md"
KAFKA_PARTITIONS = 3
KAFKA_REPLICAS = 2


@dataclass
class Figures(Verdict):
    contexts: int = 0
    kills: int = 0
    broker: str = "redis"
    # Kafka: consumers per replica and how prompts are handed over.
    subscription: str = ""
    replicas_lost: int = 0
    broker_restarts: int = 0
    duplicates_seen: int = 0
    regenerations_avoided: int = 0


async def run(
    prompts: int,
    contexts: int,
    kills: int,
    seed: int,
    words: int,
    broker_name: str = "redis",
    consumers: int = 3,
    bulk: bool = True,
) -> Figures:
    rng = random.Random(seed)
    figures = Figures(prompts=prompts, contexts=contexts, kills=kills, broker=broker_name)
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    launcher = ProcessLauncher(workdir / "dapr")
    owned: list[Any] = []
    kafka: KafkaServer | None = None
    broker: Broker = RedisBroker()
    replicas = 1
    if broker_name == "kafka":
        kafka = await asyncio.to_thread(start_kafka, workdir / "kafka", partitions=KAFKA_PARTITIONS)
        deployed = KafkaBroker.deployed(kafka)
        broker = replace(deployed, consumers=consumers, bulk=bulk)
        replicas = KAFKA_REPLICAS
        figures.subscription = (
            f"{KAFKA_PARTITIONS} partitions, {replicas} replicas, {consumers} Kafka consumers "
            "a replica, prompts "
            + (f"in bulk ({broker.bulk_await_ms} ms window)" if bulk else "one at a time")
        )
    began = time.monotonic()
    try:
        stack = await start_stack(
            launcher.start,
            workdir,
            worker_env={"WORKER_ECHO__DELAY_SECONDS": "0.01", "WORKER_LEASE_SECONDS": "3"},
            # As deployed: without it, deliveries cut short by a kill are dead-lettered.
            extra_components=[inbound_retries(*broker.prompt_pubsubs)],
            broker=broker,
            replicas=replicas,
            started=owned,
        )
        prompts_by_request = load(prompts, contexts, words)
        request_context = {r: context for r, (context, _) in prompts_by_request.items()}
        for context_id, prompt in prompts_by_request.values():
            await stack.publish(prompt, metadata={"partitionKey": context_id})
        collector = asyncio.create_task(collect(stack))
        survivor = 0
        for kill in range(1, kills + 1):
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            if kafka is not None and kill == kills // 2:
                # A whole replica dies for good: its partitions move to the survivor.
                lost = replicas - 1
                stack.workers[lost].kill()
                stack.worker_sidecars[lost].process.kill()  # type: ignore[attr-defined]
                figures.replicas_lost += 1
                print("chaos: SIGKILLed a whole replica (worker and daprd)", file=sys.stderr)
                continue
            if kafka is not None and kill == kills // 2 + 2:
                await asyncio.to_thread(kafka.restart)
                figures.broker_restarts += 1
                print("chaos: restarted the Kafka broker", file=sys.stderr)
                continue
            # SIGKILL, then a new process on the same ports
            await stack.restart_worker(
                survivor if figures.replicas_lost else rng.randrange(replicas)
            )
            print(f"chaos: killed and restarted a worker ({kill})", file=sys.stderr)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            done = {e.data["request_id"] for e in stack.received if e.kind == "completed"}
            if len(done) >= prompts:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(3)  # let late duplicates, were there any, arrive
        collector.cancel()
        figures.seconds = time.monotonic() - began
        judge(stack.received, request_context, figures)
        logs = "\n".join(worker_logs(workdir))
        figures.deliveries = logs.count("delivery of ") - logs.count("on cancellations")
        figures.duplicates_seen = figures.deliveries - prompts
        figures.regenerations_avoided = logs.count("done already")
        figures.replayed_endings = logs.count("publishing them again")
    finally:
        for thing in reversed(owned):
            if isinstance(thing, RecordingApp):
                await thing.stop()
            else:
                thing.kill()
        launcher.close()
        if kafka is not None:
            kafka.stop()
    return figures


def report(figures: Figures, command: str) -> str:
    verdict = "PASS" if figures.passed else "FAIL"
    counts = Counter(
        lost=len(figures.lost),
        double=len(figures.double_generated),
        broken=len(figures.broken_sequences),
        interleaved=len(figures.interleaved_contexts),
    )
    return f"""## On {figures.broker.capitalize()}

Command: `{command}`

| figure | value |
| --- | --- |
| prompts | {figures.prompts} |
| conversations (context ids) | {figures.contexts} |
| subscription | {figures.subscription or "-"} |
| SIGKILLs of a worker (each followed by a restart) | {
        figures.kills - figures.replicas_lost - figures.broker_restarts
    } |
| whole replicas SIGKILLed for good (worker and daprd) | {figures.replicas_lost} |
| broker restarts | {figures.broker_restarts} |
| deliveries of prompts to the worker | {figures.deliveries} |
| duplicate deliveries seen | {figures.duplicates_seen} |
| regenerations avoided (done already: no LLM call) | {figures.regenerations_avoided} |
| attempts restarted after a kill (`restarted: true`) | {figures.restarted_attempts} |
| last events replayed (killed after recording them, before done) | {figures.replayed_endings} |
| lost replies (no terminal event) | {counts["lost"]} |
| double-generated replies (two attempts reached a terminal event) | {counts["double"]} |
| attempts with gaps in `seq` or two terminal events | {counts["broken"]} |
| conversations whose turns interleaved | {counts["interleaved"]} |
| wall time | {figures.seconds:.0f} s |

Verdict: **{verdict}**
{_details(figures)}"""


KAFKA_SECTION = "\n## On Kafka"


def write_report(section: str) -> None:
    """RELIABILITY.md: `bench.chaos` writes the Redis fault matrix, this run its Kafka
    section at the end (replacing the one before)."""
    kept = REPORT.read_text().split(KAFKA_SECTION)[0].rstrip() if REPORT.exists() else ""
    REPORT.write_text(kept + "\n" + section.rstrip() + "\n")


def _details(figures: Figures) -> str:
    lines = [f"- {breach}" for breach in figures.breaches()]
    return ("\n" + "\n".join(lines) + "\n") if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--contexts", type=int, default=20)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--words", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--broker", choices=("redis", "kafka"), default="kafka")
    parser.add_argument("--no-report", action="store_true", help="do not write RELIABILITY.md")
    parser.add_argument(
        "--consumers", type=int, default=3, help="Kafka consumers per replica (as deployed: 3)"
    )
    parser.add_argument(
        "--one-at-a-time", action="store_true", help="Kafka: no bulk subscribe (Dapr's default)"
    )
    args = parser.parse_args()
    figures = asyncio.run(
        run(
            args.prompts,
            args.contexts,
            args.kills,
            args.seed,
            args.words,
            args.broker,
            consumers=args.consumers,
            bulk=not args.one_at_a_time,
        )
    )
    shown = [a for a in sys.argv[1:] if a not in {"--broker", args.broker}]
    command = (
        f"make chaos BROKER={args.broker}"
        if shown == []
        else "python -m bench.chaos_kafka " + " ".join(sys.argv[1:])
    )
    text = report(figures, command)
    print(text)
    if not args.no_report:
        write_report(text)
    raise SystemExit(0 if figures.passed else 1)


if __name__ == "__main__":
    print(json.dumps({"started": time.strftime("%H:%M:%S")}), file=sys.stderr)
    main()
