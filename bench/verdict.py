"""What a chaos run found: every request's events, as a consumer received them, judged
against the contract (sections 3.1 to 3.5)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from testbed.stack import TERMINAL, Received, Stack

__all__ = ["Verdict", "collect", "judge", "load", "worker_logs"]


def load(prompts: int, contexts: int, words: int) -> dict[str, tuple[str, dict[str, object]]]:
    """A chaos run's prompts, by request id: its conversation and the prompt to publish
    (`words` words, each naming its request, so a reply shows whose it is)."""
    return {
        f"req-{n}": (
            f"ctx-{n % contexts}",
            {
                "messages": [
                    {"role": "user", "content": " ".join(f"req-{n}-w{i}" for i in range(words))}
                ],
                "context_id": f"ctx-{n % contexts}",
                "request_id": f"req-{n}",
            },
        )
        for n in range(prompts)
    }


@dataclass
class Verdict:
    """What broke the contract, request by request; empty lists: nothing did."""

    lost: list[str] = field(default_factory=list)
    double_generated: list[str] = field(default_factory=list)
    broken_sequences: list[str] = field(default_factory=list)
    interleaved_contexts: list[str] = field(default_factory=list)
    restarted_attempts: int = 0
    llm_failures_reported: int = 0
    # The run's own figures, whatever the fault or broker.
    prompts: int = 0
    deliveries: int = 0
    replayed_endings: int = 0
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.breaches()

    def breaches(self) -> list[str]:
        """One line per kind of breach, naming (at most 20 of) the requests or contexts."""
        return [
            f"{name}: {', '.join(values[:20])}"
            for name in ("lost", "double_generated", "broken_sequences", "interleaved_contexts")
            if (values := getattr(self, name))
        ]


def judge(events: list[Received], request_context: dict[str, str], figures: Verdict) -> None:
    """Lost: no terminal event. Double-generated: two attempts reached a terminal event,
    or one did and a later attempt exists. Broken: gaps in `seq` or two terminals."""
    by_attempt: dict[tuple[str, int], list[Received]] = defaultdict(list)
    for event in events:
        if event.topic != "responses":
            continue
        by_attempt[(event.data["request_id"], int(event.data["attempt"]))].append(event)
    for request_id in request_context:
        attempts = sorted(a for (r, a) in by_attempt if r == request_id)
        ended = [
            a for a in attempts if any(e.kind in TERMINAL for e in by_attempt[(request_id, a)])
        ]
        if not ended:
            figures.lost.append(request_id)
            continue
        if len(ended) > 1 or ended[-1] != attempts[-1]:
            figures.double_generated.append(request_id)
        figures.restarted_attempts += len(attempts) - 1
        for attempt in attempts:
            unique = {e.id: e for e in by_attempt[(request_id, attempt)]}
            figures.llm_failures_reported += sum(e.kind == "failed" for e in unique.values())
            seqs = sorted(e.data["seq"] for e in unique.values())
            if seqs != list(range(1, len(seqs) + 1)):
                figures.broken_sequences.append(f"{request_id}#{attempt}")
            if sum(e.kind in TERMINAL for e in unique.values()) > 1:
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


async def collect(stack: Stack) -> None:
    """Everything the stack's consumer receives, into `stack.received`, until cancelled."""
    while True:
        stack.received.append(Received.of(await stack.consumer.received.get()))


def worker_logs(workdir: Path) -> list[str]:
    return [p.read_text(errors="replace") for p in sorted(workdir.glob("worker*.log"))]
