"""Chaos on Kafka: prompts across contexts while workers are SIGKILLed, a whole replica is
lost and the broker restarts (`bench.chaos` is the fault matrix on Redis).

Everything is real: a local KRaft broker with 3 partitions, Redis for state, daprd (with
an inbound retry policy, as deployed) and two worker replicas taking prompts as
k8s/overlays/kafka deploys them. Workers are SIGKILLed at random and restarted; halfway
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
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.apps import RecordingApp
from tests.harness.brokers import Broker, KafkaBroker, RedisBroker
from tests.harness.components import inbound_retries
from tests.harness.kafka import KafkaServer, start_kafka
from tests.harness.process import ProcessLauncher
from tests.harness.stack import Received, Stack, start_stack

TERMINAL = {"completed", "failed", "cancelled"}
REPORT = Path(__file__).resolve().parents[1] / "RELIABILITY.md"
KAFKA_PARTITIONS = 3
KAFKA_REPLICAS = 2


@dataclass
class Figures:
    prompts: int = 0
    contexts: int = 0
    kills: int = 0
    broker: str = "redis"
    replicas_lost: int = 0
    broker_restarts: int = 0
    deliveries: int = 0
    duplicates_seen: int = 0
    regenerations_avoided: int = 0
    restarted_attempts: int = 0
    replayed_endings: int = 0
    lost: list[str] = field(default_factory=list)
    double_generated: list[str] = field(default_factory=list)
    broken_sequences: list[str] = field(default_factory=list)
    interleaved_contexts: list[str] = field(default_factory=list)
    seconds: float = 0.0


def check(events: list[Received], request_context: dict[str, str], figures: Figures) -> None:
    by_attempt: dict[tuple[str, int], list[Received]] = defaultdict(list)
    for event in events:
        if event.topic != "responses":
            continue
        key = (event.data["request_id"], int(event.data["attempt"]))
        by_attempt[key].append(event)
    for request_id in request_context:
        attempts = sorted(a for (r, a) in by_attempt if r == request_id)
        completed = [
            a for a in attempts if any(e.kind == "completed" for e in by_attempt[(request_id, a)])
        ]
        if not completed:
            figures.lost.append(request_id)
            continue
        if len(completed) > 1 or completed[-1] != attempts[-1]:
            figures.double_generated.append(request_id)
        figures.restarted_attempts += len(attempts) - 1
        for attempt in attempts:
            unique = {e.id: e for e in by_attempt[(request_id, attempt)]}
            seqs = sorted(e.data["seq"] for e in unique.values())
            if seqs != list(range(1, len(seqs) + 1)):
                figures.broken_sequences.append(f"{request_id}#{attempt}")
            terminals = [e for e in unique.values() if e.kind in TERMINAL]
            if len(terminals) > 1:
                figures.broken_sequences.append(f"{request_id}#{attempt} (terminals)")
    # One turn at a time per context: each (request, attempt) is one block in arrival order.
    per_context: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for event in events:
        if event.topic == "responses":
            per_context[event.data["context_id"]].append(
                (event.data["request_id"], int(event.data["attempt"]))
            )
    for context_id, order in per_context.items():
        blocks = [k for i, k in enumerate(order) if i == 0 or order[i - 1] != k]
        if len(blocks) != len(set(blocks)):
            figures.interleaved_contexts.append(context_id)


async def run(
    prompts: int, contexts: int, kills: int, seed: int, words: int, broker_name: str = "redis"
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
        broker, replicas = KafkaBroker(kafka), KAFKA_REPLICAS
    began = time.monotonic()
    try:
        stack = await start_stack(
            launcher.start,
            workdir,
            worker_env={"WORKER_ECHO__DELAY_SECONDS": "0.01", "WORKER_LEASE_SECONDS": "3"},
            # As deployed: without it, deliveries cut short by a kill are dead-lettered.
            extra_components=[inbound_retries()],
            broker=broker,
            replicas=replicas,
            started=owned,
        )
        request_context = {f"req-{n}": f"ctx-{n % contexts}" for n in range(prompts)}
        for request_id, context_id in request_context.items():
            text = " ".join(f"{request_id}-w{i}" for i in range(words))
            await stack.publish(
                {
                    "messages": [{"role": "user", "content": text}],
                    "context_id": context_id,
                    "request_id": request_id,
                },
                metadata={"partitionKey": context_id},
            )
        collector = asyncio.create_task(_collect(stack))
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
        check(stack.received, request_context, figures)
        logs = "\n".join(_logs(workdir))
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


async def _collect(stack: Stack) -> None:
    while True:
        stack.received.append(Received.of(await stack.consumer.received.get()))


def _logs(workdir: Path) -> list[str]:
    return [p.read_text(errors="replace") for p in sorted(workdir.glob("worker*.log"))]


def report(figures: Figures, command: str) -> str:
    verdict = (
        "PASS"
        if not (
            figures.lost
            or figures.double_generated
            or figures.broken_sequences
            or figures.interleaved_contexts
        )
        else "FAIL"
    )
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
| lost replies (no completed attempt) | {counts["lost"]} |
| double-generated replies (two completed attempts) | {counts["double"]} |
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
    lines = []
    for name in ("lost", "double_generated", "broken_sequences", "interleaved_contexts"):
        values = getattr(figures, name)
        if values:
            lines.append(f"- {name}: {', '.join(values[:20])}")
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
    args = parser.parse_args()
    figures = asyncio.run(
        run(args.prompts, args.contexts, args.kills, args.seed, args.words, args.broker)
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
    failed = figures.lost or figures.double_generated or figures.broken_sequences
    raise SystemExit(1 if failed or figures.interleaved_contexts else 0)


if __name__ == "__main__":
    print(json.dumps({"started": time.strftime("%H:%M:%S")}), file=sys.stderr)
    main()
